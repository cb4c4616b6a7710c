"""The incident an alert belongs to is computed before the alert is redacted (a repeat is never
redacted at all): it must be exactly the fingerprint of the alert as the ledger holds it."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from alertengine.incidents.detection import alert_fingerprint, incident_fingerprint
from alertengine.ledger.entry import redact
from alertengine.signals import AlertSignal

# pieces that look like credentials, so redaction changes them
SECRETISH = st.sampled_from(["", "x", "checkout", "sk-ant-api03-" + "a" * 40, "ghp_" + "b" * 36,
                             "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl", "AKIAABCDEFGHIJKLMNOP"])
TEXT = st.one_of(SECRETISH, st.text(max_size=20), st.builds(lambda a, b: a + " " + b, SECRETISH, SECRETISH))


@given(source=st.sampled_from(["alertmanager", "grafana", "events", "smart", "pagerduty", "heartbeat"]),
       title=TEXT, service=st.one_of(st.none(), TEXT),
       labels=st.dictionaries(st.sampled_from(["alertname", "rule_id", "instance", "token", "severity"]), TEXT),
       fp=TEXT)
def test_it_is_the_fingerprint_of_the_redacted_alert(source, title, service, labels, fp) -> None:  # type: ignore[no-untyped-def]
    signal = AlertSignal(source, fp or "f", "firing", "high", title or "t", service, labels)
    redacted = dataclasses.replace(signal, title=redact(signal.title), labels=redact(dict(signal.labels)))
    assert incident_fingerprint(signal) == alert_fingerprint(redacted)


def test_a_secret_in_the_rule_name_never_reaches_the_fingerprint() -> None:
    key = "sk-ant-api03-" + "a" * 40
    fp = incident_fingerprint(AlertSignal("alertmanager", "f", "firing", "high", "t", "svc", {"alertname": key}))
    assert key not in fp and fp.startswith("alertmanager:svc:")
