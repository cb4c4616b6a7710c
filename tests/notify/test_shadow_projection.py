"""The shadow report's projection: folded a chunk at a time, it equals the report folded from the
whole ledger, and the figures a reader sees are the ones written down here by hand."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertengine.ledger.entry import LedgerEvent
from alertengine.notify.shadow_report import apply_delta, fold_step, projected_report, shadow_report
from alertengine.store import Database
from alertengine.tenancy.tenants import create_tenant, set_shadow


def ev(kind: str, tenant: str, incident: str | None = None, stage: str | None = None, **data: Any) -> LedgerEvent:
    return LedgerEvent(kind=kind, tenant=tenant, actor="policy", reason=kind, incident=incident, stage=stage,
                       data=data)


def routed(incident: str, tenant: str, event: str, who: str) -> LedgerEvent:
    return ev("notification.suppressed", tenant, incident, would_have={
        "event": event, "priority": "P1", "text": f"{event} text", "recipient": "hidden",
        "decisions": [{"recipient": who, "channels": ["telegram"], "outcome": "send"}]})


def fold_all(db: Database, chunk: int) -> int:
    steps = 0
    while (delta := fold_step(db.read_conn(), chunk)) is not None:
        assert db.write_sync(apply_delta(delta))
        steps += 1
    return steps


def all_pages(db: Database, tenant: str, limit: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    first = projected_report(db.read_conn(), tenant, limit=limit)
    incidents, page = list(first["incidents"]), first
    while page["next_cursor"] is not None:
        page = projected_report(db.read_conn(), tenant, limit=limit, after=page["next_cursor"])
        assert len(page["incidents"]) <= limit
        incidents += page["incidents"]
    return first, incidents


def scenario(db: Database) -> tuple[str, str]:
    a = db.write_sync(create_tenant("Acme", "admin")).id
    b = db.write_sync(create_tenant("Other", "admin")).id
    db.append_sync(
        ev("signal.breach", a, service="svc1", consecutive=1),
        ev("signal.breach", b, service="svc1", consecutive=1),       # another tenant's streak
        ev("signal.breach", a, service="svc1", consecutive=2),
        ev("incident.detected", a, "INC-1", "DETECTED", fingerprint="health:svc1", title="svc1 down",
           priority="P1", service_name="svc1"),
        routed("INC-1", a, "opened", "alice"),
        ev("escalation.step", a, "INC-1", shadow=True, step=1, chain="default",
           told=[{"recipient": "bob", "channels": [], "outcome": "quiet"}]),
        ev("incident.detected", b, "INC-9", "DETECTED", fingerprint="x", title="other", priority="P2"),
        ev("token.suppressed", a, "INC-1", would_have={"expires": "later"}),
        ev("incident.acknowledged", a, "INC-1", "ACKNOWLEDGED"),
        ev("signal.breach", a, "INC-1", service="svc1", consecutive=3),   # evidence of an open incident
        ev("incident.detected", a, "INC-2", "DETECTED", fingerprint="am:x", title="disk", priority="P3",
           starts_at="2020-01-01T00:00:00Z"),
        ev("incident.recovered", a, "INC-1", "RECOVERED"),
        ev("webhook.suppressed", a, None, would_have={"url": "https://x"}),
    )
    db.write_sync(set_shadow(a, False, "carol"))
    return a, b


def test_the_projection_reports_what_the_ledger_says(db: Database) -> None:
    a, b = scenario(db)
    assert fold_all(db, chunk=3) > 3                  # many small steps
    report, incidents = all_pages(db, a, limit=1)
    # written by hand from the scenario above
    assert [i["incident"] for i in incidents] == ["INC-1", "INC-2"]
    assert report["incidents_observed"] == 2
    assert report["suppressed"] == {"notification": 1, "token": 1, "webhook": 1, "call": 0, "escalation": 1}
    inc1, inc2 = incidents
    assert inc1["stage"] == "RECOVERED" and inc1["closed_at"] is not None
    assert [w["what"] for w in inc1["would_have"]] == ["notification", "escalation", "token"]
    assert inc1["would_have"][0]["told"] == ["alice (telegram)"]
    assert inc1["would_have"][1]["told"] == ["bob (fallback) — quiet"]
    assert "recipient" not in inc1["would_have"][0]
    assert inc2["stage"] == "DETECTED" and inc2["first_signal_at"] == "2020-01-01T00:00:00Z"
    assert inc2["detection_latency_s"] > 100_000_000        # since 2020
    first_breach = json.loads(db.read_conn().execute(
        "SELECT body FROM ledger WHERE tenant = ? AND kind = 'signal.breach' ORDER BY seq", (a,)).fetchone()[0])
    assert inc1["first_signal_at"] == first_breach["ts"]    # from the first breach of the streak
    assert report["detection_latency_s"]["max"] == inc2["detection_latency_s"]
    assert report["shadow_periods"][0]["to"] is not None and report["shadow_periods"][0]["live_by"] == "carol"
    assert report["as_of"]["behind"] == 0
    other = all_pages(db, b, limit=10)[1]
    assert [i["incident"] for i in other] == ["INC-9"]
    # and it is exactly the fold of the whole ledger
    full = shadow_report(db.read_conn(), a)
    assert incidents == full["incidents"]
    assert {k: v for k, v in report.items() if k not in ("incidents", "next_cursor", "as_of")} == \
        {k: v for k, v in full.items() if k != "incidents"}


def test_a_step_applies_once_even_when_two_race(db: Database) -> None:
    a, _ = scenario(db)
    first, second = fold_step(db.read_conn(), 100), fold_step(db.read_conn(), 100)
    assert first is not None and second is not None and first.start == second.start
    assert db.write_sync(apply_delta(first)) is True
    assert db.write_sync(apply_delta(second)) is False          # would have counted everything twice
    assert fold_step(db.read_conn(), 100) is None
    assert projected_report(db.read_conn(), a)["suppressed"]["notification"] == 1


def test_paging_walks_every_incident_once_in_order(db: Database) -> None:
    a = db.write_sync(create_tenant("Acme", "admin")).id
    db.append_sync(*[ev("incident.detected", a, f"I-{n:02d}", "DETECTED", fingerprint=f"f{n}", title=str(n),
                        priority="P3") for n in range(7)])
    fold_all(db, chunk=1000)
    report, incidents = all_pages(db, a, limit=3)
    assert [i["incident"] for i in incidents] == [f"I-{n:02d}" for n in range(7)]
    assert len(report["incidents"]) == 3 and report["next_cursor"] is not None
    last = projected_report(db.read_conn(), a, limit=7)
    assert last["next_cursor"] is None and len(last["incidents"]) == 7


KINDS = st.sampled_from(["breach", "breach-open", "detect", "note", "escalate", "stage", "close", "live", "shadow"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(st.tuples(KINDS, st.integers(0, 3), st.sampled_from([0, 1])), max_size=40),
       chunk=st.integers(1, 9))
def test_folded_in_any_chunks_it_equals_the_whole_fold(tmp_path_factory, script, chunk) -> None:  # type: ignore[no-untyped-def]
    from alertengine.appliance import init_data_dir
    from alertengine.config import Config
    data = init_data_dir(tmp_path_factory.mktemp("d") / "data")
    db = data.open_database(Config(data_dir=data.path))
    try:
        tenants = [db.write_sync(create_tenant(f"T{i}", "admin")).id for i in range(2)]
        events = []
        for what, n, t in script:
            tenant, inc = tenants[t], f"INC-{t}-{n}"
            events.append({
                "breach": ev("signal.breach", tenant, service=f"s{n}", consecutive=1 + n % 2),
                "breach-open": ev("signal.breach", tenant, inc, service=f"s{n}", consecutive=4),
                "detect": ev("incident.detected", tenant, inc, "DETECTED", fingerprint=f"health:s{n}", title="t",
                             priority="P2", service_name=f"s{n}"),
                "note": routed(inc, tenant, "opened", f"p{n}"),
                "escalate": ev("escalation.step", tenant, inc, shadow=bool(n % 2), step=n, chain="c", told=[]),
                "stage": ev("incident.acknowledged", tenant, inc, "ACKNOWLEDGED"),
                "close": ev("incident.resolved", tenant, inc, "RESOLVED"),
                "live": ev("tenant.shadow_disabled", tenant),
                "shadow": ev("tenant.shadow_enabled", tenant),
            }[what])
        if events:
            db.append_sync(*events)
        fold_all(db, chunk)
        for tenant in tenants:
            full = shadow_report(db.read_conn(), tenant)
            report, incidents = all_pages(db, tenant, limit=2)
            assert json.dumps(incidents, sort_keys=True) == json.dumps(full["incidents"], sort_keys=True)
            assert report["suppressed"] == full["suppressed"]
            assert report["shadow_periods"] == full["shadow_periods"]
            assert report["detection_latency_s"] == full["detection_latency_s"]
            assert report["incidents_observed"] == full["incidents_observed"]
    finally:
        db.close()
