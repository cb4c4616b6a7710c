"""The fast reading of well-formed Alertmanager alerts agrees with the full reading on every input.

Whatever ``_plain_alert`` accepts, the full reader (``_alert``, which names the wrong field on
error) must accept and read to the very same signal; whatever it declines, the full reader decides.
Inputs are drawn around the edges the two check: types, empty and non-ASCII keys, sizes, odd
timestamps, the zero end time, missing and empty fingerprints, link fields.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertengine.signals.ingest.alertmanager import _alert, _plain_alert
from alertengine.signals.ingest.common import PayloadError

URL_KEYS = ("generatorURL",)
KEYS = st.one_of(st.sampled_from(["alertname", "service", "job", "app", "severity", "summary", "", "sévérité"]),
                 st.text(max_size=8), st.text(min_size=120, max_size=300, alphabet="k"))
VALUES = st.one_of(st.text(max_size=12), st.sampled_from(["critical", "warn", "P1", ""]), st.integers(), st.none(),
                   st.integers(4095, 4098).map(lambda n: "v" * n))
MAPS = st.one_of(st.dictionaries(KEYS, VALUES, max_size=6), st.none(), st.lists(st.text(), max_size=2),
                 st.text(max_size=4))
TIMES = st.one_of(st.sampled_from(["2026-11-30T03:14:07Z", "2026-11-30T03:14:07.123456789Z",
                                   "2026-11-30T04:14:07+01:00", "0001-01-01T00:00:00Z", "2026-13-30T03:14:07Z",
                                   "2026-11-30 03:14:07", "", "2026-02-30T00:00:00Z"]),
                  st.text(max_size=30), st.none(), st.integers())
LINKS = st.one_of(st.sampled_from(["http://prometheus:9090/graph?g0.expr=up", "https://x.example/a b",
                                   "javascript:alert(1)", "ftp://x", ""]), st.none(), st.integers(),
                  st.text(max_size=20))


GOOD_TIMES = st.sampled_from(["2026-11-30T03:14:07Z", "2026-11-30T03:14:07.123456789Z", "2026-11-30T04:14:07+01:00",
                              "0001-01-01T00:00:00Z"])
GOOD_MAPS = st.dictionaries(st.sampled_from(["alertname", "service", "job", "severity", "summary"]),
                            st.text(max_size=12), max_size=4)
STRING_MAPS = st.dictionaries(KEYS, st.one_of(st.text(max_size=12), st.integers(4095, 4098).map(lambda n: "v" * n)), max_size=4)


def mostly(good: st.SearchStrategy, odd: st.SearchStrategy) -> st.SearchStrategy:
    """Usually a well-formed value (so that most alerts reach the fast path), sometimes an odd one."""
    return st.integers(0, 9).flatmap(lambda n: good if n < 8 else odd)


@st.composite
def alerts(draw: st.DrawFn) -> dict:
    alert: dict = {
        "status": draw(mostly(st.sampled_from(["firing", "resolved"]),
                              st.one_of(st.sampled_from(["pending", ""]), st.none(), st.integers()))),
        "labels": draw(mostly(st.one_of(GOOD_MAPS, STRING_MAPS), MAPS)),
        "startsAt": draw(mostly(GOOD_TIMES, TIMES)),
        "endsAt": draw(mostly(GOOD_TIMES, TIMES)),
    }
    for key, strategy in (("annotations", mostly(st.one_of(GOOD_MAPS, STRING_MAPS), MAPS)),
                          ("fingerprint", mostly(st.one_of(st.text(max_size=20), st.none()),
                                                 st.one_of(st.integers(), st.integers(250, 260).map(
                                                     lambda n: "f" * n)))),
                          ("generatorURL", mostly(st.sampled_from(["http://prometheus:9090/graph?g0.expr=up",
                                                                   "https://x.example/a b", "javascript:alert(1)",
                                                                   "ftp://x", ""]), LINKS))):
        if draw(st.booleans()):
            alert[key] = draw(strategy)
    for key in ("startsAt", "endsAt"):
        if draw(st.integers(0, 9)) == 0:
            del alert[key]
    if draw(st.booleans()):
        alert[draw(st.sampled_from(["extra", "silenceURL"]))] = draw(VALUES)
    return alert


def _full(alert: object) -> object:
    try:
        return _alert(alert, "alerts[0]", "alertmanager", URL_KEYS)
    except PayloadError as exc:
        return ("refused", exc.field)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alerts())
def test_what_the_fast_path_reads_the_full_reader_reads_the_same(alert: dict) -> None:
    fast = _plain_alert(alert, "alertmanager", URL_KEYS)
    if fast is not None:
        assert _full(alert) == fast


def test_a_plain_alert_takes_the_fast_path_and_agrees() -> None:
    alert = {"status": "firing", "labels": {"alertname": "HighLatency", "service": "checkout", "severity": "critical"},
             "annotations": {"summary": "p95 above 2 s"}, "startsAt": "2026-11-30T03:14:07.123Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus:9090/graph", "fingerprint": "abc123"}
    fast = _plain_alert(alert, "alertmanager", URL_KEYS)
    assert fast is not None
    assert (fast.service, fast.severity, fast.title, fast.ends_at, fast.fingerprint) == \
        ("checkout", "critical", "p95 above 2 s", None, "abc123")
    assert _full(alert) == fast


def test_odd_alerts_are_left_to_the_full_reader() -> None:
    base = {"status": "firing", "labels": {"alertname": "X"}, "startsAt": "2026-11-30T03:14:07Z",
            "endsAt": "0001-01-01T00:00:00Z"}
    for odd in ({"labels": {"": "x"}}, {"labels": {"é": "x"}}, {"labels": {"a": 1}}, {"status": "pending"},
                {"startsAt": "yesterday"}, {"fingerprint": 7}, {"annotations": []}):
        assert _plain_alert({**base, **odd}, "alertmanager", URL_KEYS) is None


def test_the_limits_are_the_full_readers_limits() -> None:
    """At each limit and one past it, the fast path either declines or reads what the full reader reads."""
    base = {"status": "firing", "labels": {"alertname": "X"}, "startsAt": "2026-11-30T03:14:07Z",
            "endsAt": "0001-01-01T00:00:00Z"}
    cases = [{"labels": {"alertname": "v" * n}} for n in (4096, 4097)] + \
        [{"annotations": {"summary": "v" * n}} for n in (4096, 4097)] + \
        [{"fingerprint": "f" * n} for n in (255, 256)] + \
        [{"generatorURL": "http://x/" + "u" * n} for n in (4087, 4088)] + \
        [{"labels": {"k" * n: "x"}} for n in (127, 128, 129, 256, 257)] + \
        [{"labels": {f"k{i}": "x" for i in range(n)}} for n in (63, 64, 65, 100, 101, 128, 129)]
    fast_taken = 0
    for odd in cases:
        alert = {**base, **odd}
        fast = _plain_alert(alert, "alertmanager", URL_KEYS)
        if fast is not None:
            fast_taken += 1
            assert _full(alert) == fast, odd.keys()
    assert fast_taken >= len(cases) // 2   # the common sizes do take the fast path
