"""Evidence of an open incident is summarised per minute; every change of state keeps its own
entry, in order; the summary says what the polls showed; the ledger still verifies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alertengine.incidents.detection import Detector, ServiceRef
from alertengine.incidents.dryrun import dry_run
from alertengine.incidents.policy import load_policy, parse_policy
from alertengine.store import verify_store
from alertengine.notify.gateway import Gateway, JsonLinesChannel
from alertengine.signals import HealthReading
from alertengine.store import Database
from alertengine.tenancy.tenants import create_tenant

HEALTHY = HealthReading("answered", "sdk", 200, 12.0, "ok", p95_ms=180.0, error_rate=0.001, health_score=97.0,
                        sample_size=500)


def slow(p95: float) -> HealthReading:
    return HealthReading("answered", "sdk", 200, 12.0, "warning", p95_ms=p95, error_rate=0.0, health_score=70.0,
                         sample_size=500)


ERRORS = HealthReading("answered", "hosted", 200, 12.0, "critical", p95_ms=300.0, error_rate=0.19, health_score=60.0,
                       sample_size=200)
T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60   # the start of a minute


class Rig:
    def __init__(self, db: Database, tmp: Path) -> None:
        self.db, self.now = db, T0
        self.detector = Detector(db, Gateway(db, [JsonLinesChannel(tmp / "n.jsonl")]), clock=lambda: self.now)
        self.tenant = db.write_sync(create_tenant("acme", "test")).id
        self.service = ServiceRef(self.tenant, "svc_0000000000000001", "checkout")

    async def poll(self, reading: HealthReading, every: float = 5.0, times: int = 1) -> None:
        for _ in range(times):
            await self.detector.on_reading(self.service, reading)
            self.now += every

    def entries(self, *kinds: str) -> list[dict]:
        rows = self.db.read_conn().execute("SELECT body FROM ledger WHERE tenant = ? ORDER BY seq", (self.tenant,))
        return [e for e in (json.loads(r[0]) for r in rows) if not kinds or e["kind"] in kinds]


@pytest.fixture
def rig(db: Database, tmp_path: Path) -> Rig:
    return Rig(db, tmp_path)


async def test_an_hour_of_breaching_polls_is_sixty_summaries_not_720_entries(rig: Rig) -> None:
    await rig.poll(slow(9000), times=3)                    # opens on the third breaching poll
    [opened] = rig.entries("incident.detected")
    await rig.poll(slow(9000), times=720 - 3)              # an hour at 5 s
    await rig.detector.flush_evidence()
    breaches, summaries = rig.entries("signal.breach"), rig.entries("signal.evidence")
    # written down: three breaches before it opened, then one per minute; 720 polls counted in all
    assert len(breaches) == 3
    assert 60 <= len(summaries) <= 61
    assert len(breaches) + sum(s["data"]["count"] for s in summaries) == 720
    assert all(s["incident"] == opened["incident"] for s in summaries)
    windows = [s["data"]["window"]["from"] for s in summaries]
    assert windows == sorted(set(windows))                 # one per minute, in order
    rig.db.checkpoint_sync()
    assert verify_store(rig.db.path, rig.db.signer.verifier).status == "ok"


async def test_a_summary_says_how_many_when_and_the_worst(rig: Rig) -> None:
    await rig.poll(slow(9000), times=3)
    rig.now = T0 + 120                                     # a fresh minute
    for p95 in (8000, 12000, 9500):
        await rig.poll(slow(p95), every=10)
    rig.now = T0 + 185                                     # the next minute closes it
    await rig.poll(slow(8000))
    [summary] = rig.entries("signal.evidence")
    data = summary["data"]
    assert data["count"] == 3
    assert data["window"] == {"from": "2027-01-15T08:02:00.000000Z", "to": "2027-01-15T08:03:00.000000Z"}
    assert (data["first_at"], data["last_at"]) == ("2027-01-15T08:02:00.000000Z", "2027-01-15T08:02:20.000000Z")
    assert data["worst"]["latency"]["value"] == 12000 and data["worst"]["latency"]["reading"]["p95_ms"] == 12000
    assert data["worst"]["latency"]["at"] == "2027-01-15T08:02:10.000000Z"
    assert data["last_reading"]["p95_ms"] == 9500
    assert summary["actor"] == "policy" and summary["policy_version"].startswith("sha256:")


async def test_changes_of_state_keep_their_own_entries_after_the_summary_so_far(rig: Rig) -> None:
    await rig.poll(slow(9000), times=3)
    await rig.poll(slow(9000), times=4)                    # evidence, held
    assert rig.entries("signal.evidence") == []
    await rig.poll(ERRORS)                                 # worse: a new kind and a higher priority
    await rig.poll(slow(9000), times=2)                    # held again
    await rig.poll(HEALTHY)                                # a healthy poll: its own entry
    kinds = [e["kind"] for e in rig.entries() if e["kind"].startswith(("signal.", "incident.escalated"))]
    assert kinds == ["signal.breach"] * 3 + ["signal.evidence", "signal.breach", "incident.escalated",
                                              "signal.evidence", "signal.healthy"]
    first, second = rig.entries("signal.evidence")
    assert (first["data"]["count"], second["data"]["count"]) == (4, 2)


async def test_no_write_for_a_breach_that_changes_nothing(rig: Rig) -> None:
    await rig.poll(slow(9000), times=3)
    writes = rig.db._stats["writes"]
    await rig.poll(slow(9000), every=1, times=30)          # within one minute
    assert rig.db._stats["writes"] == writes                # not one write: no entry, no escalate check


async def test_dry_run_replays_a_summary_as_its_polls(rig: Rig) -> None:
    await rig.poll(slow(9000), times=3)
    await rig.poll(slow(9000), times=30)
    await rig.detector.flush_evidence()
    conn = rig.db.read_conn()
    lenient = parse_policy("[thresholds]\np95_ms = 20000\n")
    report = dry_run(conn, rig.tenant, lenient)
    assert report["would_open"] == []                      # never breached under a lenient policy
    same = dry_run(conn, rig.tenant, load_policy(conn, rig.tenant))
    assert len(same["would_open"]) == 1
    assert report["signals_replayed"] == len(rig.entries("signal.breach", "signal.evidence"))
