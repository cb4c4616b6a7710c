"""Timers fire at least once: a timer claimed but never settled (the process died while acting on
it, or the leader changed) is claimed again when the timer loop starts; a settled one never is."""

from __future__ import annotations

from alertengine.incidents import timers
from alertengine.store import Database

PAST = "2000-01-01T00:00:00.000000Z"
NOW = "2026-12-02T12:00:00.000000Z"


def schedule(db: Database, incident: str, kind: str = "auto_resolve") -> None:
    db.write_sync(lambda tx: timers.schedule(tx, "acme", incident, kind, PAST, {"n": incident}))


def claimed(db: Database) -> list[str]:
    return sorted(t.incident or "" for t in db.write_sync(timers.claim_due(NOW)))


def test_a_claimed_timer_is_not_claimed_twice_while_the_process_runs(db: Database) -> None:
    schedule(db, "INC-1")
    assert claimed(db) == ["INC-1"]
    assert claimed(db) == []


def test_an_unsettled_timer_fires_again_after_a_restart_a_settled_one_does_not(db: Database) -> None:
    for inc in ("INC-1", "INC-2", "INC-3"):
        schedule(db, inc)
    first = db.write_sync(timers.claim_due(NOW))
    assert sorted(t.incident for t in first) == ["INC-1", "INC-2", "INC-3"]
    db.write_sync(timers.settle([t.id for t in first if t.incident == "INC-2"]))   # the others: died midway
    assert db.write_sync(timers.requeue_unsettled) == 2
    again = db.write_sync(timers.claim_due(NOW))
    assert sorted(t.incident for t in again) == ["INC-1", "INC-3"]
    assert {t.id: t.data for t in again} == {t.id: t.data for t in first if t.incident != "INC-2"}
    db.write_sync(timers.settle([t.id for t in again]))
    assert db.write_sync(timers.requeue_unsettled) == 0
    assert claimed(db) == []


def test_superseded_and_cancelled_timers_are_never_requeued(db: Database) -> None:
    schedule(db, "INC-1")
    schedule(db, "INC-1")            # supersedes the first
    db.write_sync(lambda tx: timers.schedule(tx, "acme", "INC-2", "auto_resolve", PAST))
    db.write_sync(lambda tx: timers.cancel(tx, "acme", "INC-2"))
    assert db.write_sync(timers.requeue_unsettled) == 0
    assert claimed(db) == ["INC-1"]
    rows = db.read_conn().execute("SELECT incident, done, settled FROM timers ORDER BY id").fetchall()
    assert [(r[0], r[1] if r[1] in ("superseded", "cancelled") else "claimed", r[2]) for r in rows] == [
        ("INC-1", "superseded", 1), ("INC-1", "claimed", 0), ("INC-2", "cancelled", 1)]


async def test_a_timer_claimed_by_a_process_that_died_fires_on_the_next_start_once(data_dir, config,   # type: ignore[no-untyped-def]
                                                                                  tmp_path, monkeypatch) -> None:
    import asyncio
    import contextlib

    from alertengine.incidents import engine
    from alertengine.incidents.policy import put_policy
    from alertengine.runtime import Runtime
    from alertengine.signals import AlertSignal
    from tests.incidents.test_engine import Harness

    db = data_dir.open_database(config)
    try:
        h = Harness(db, tmp_path)
        db.write_sync(put_policy(h.tenant, "[detection]\nauto_resolve_after = 60.0\n", "test"))
        alert = AlertSignal("events", "f1", "firing", "medium", "queue backlog", "billing", {}, {},
                            "2026-11-22T13:00:00Z")
        inc = await h.detector.on_alert(h.tenant, alert, None)
        assert inc is not None and inc.is_open
        # the process that claimed the due timer died before acting on it
        claimed = db.write_sync(timers.claim_due("2999-01-01T00:00:00.000000Z"))
        assert [t.kind for t in claimed] == ["auto_resolve"]
        assert engine.get_incident(db.read_conn(), h.tenant, inc.id).is_open

        runtime = Runtime(config, db, data_dir)   # the next start (or the next leader), its clock past the deadline
        runtime.timer_interval = 0.05
        monkeypatch.setattr("alertengine.runtime.utc_timestamp", lambda: "2999-01-01T00:00:00.000000Z")
        loop = asyncio.get_running_loop().create_task(runtime._timers())
        try:
            wait_until = asyncio.get_running_loop().time() + 30
            while engine.get_incident(db.read_conn(), h.tenant, inc.id).is_open:
                assert asyncio.get_running_loop().time() < wait_until, "the requeued timer never fired"
                await asyncio.sleep(0.05)
            # and it does not fire again
            await runtime.timer_round("2999-01-01T00:00:00.000000Z")
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        rows = db.read_conn().execute("SELECT settled FROM timers WHERE kind = 'auto_resolve'").fetchall()
        assert rows == [(1,)]
        assert db.read_conn().execute("SELECT count(*) FROM ledger WHERE kind = 'incident.resolved'").fetchone()[0] == 1
    finally:
        db.close()
