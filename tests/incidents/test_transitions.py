"""The incident transition table, checked cell by cell against a table written out here.

The expected table below is written literally from the design (the transitions and their allowed
actors, as the README and the engine's docstring state them) and the pipeline DETECTED -> DIAGNOSED -> PROPOSED -> AUTHORIZED -> EXECUTING -> EXECUTED ->
RECOVERED with the side exits EXPIRED, REJECTED, FAILED and RESOLVED. It is deliberately NOT built from
``engine.TRANSITIONS``: a change to the product's table must show up here as a failing cell.

Every actor below is tried on every (from-stage, to-stage) pair through the product's public path
(``engine.transition`` run by ``engine.run``) against a real SQLite database. An allowed move must
change the stage and write its ``incident.<stage>`` ledger entry; a refused one must raise
``IllegalTransitionError``, leave the incident row byte for byte as it was, and write no transition
entry (the engine does ledger the refusal itself, as ``incident.transition_refused``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from alertengine.appliance import init_data_dir
from alertengine.config import Config
from alertengine.errors import AlertEngineError, LedgerInputError, NotFoundError
from alertengine.incidents import engine, timers
from alertengine.incidents.replay import replay_database
from alertengine.store import Database, WriteTx, connect

# --- the expected table, written out ---------------------------------------------------------------

STAGES = ("DETECTED", "DIAGNOSED", "PROPOSED", "AUTHORIZED", "EXECUTING", "EXECUTED", "RECOVERED",
          "EXPIRED", "REJECTED", "FAILED", "RESOLVED")
CLOSED_STAGES = ("RECOVERED", "RESOLVED")

AI_OR_SYSTEM = frozenset({"ai", "system"})
POLICY = frozenset({"policy"})
ENGINEER = frozenset({"engineer"})
SYSTEM = frozenset({"system"})
ORCHESTRATOR = frozenset({"orchestrator"})
RESOLVERS = frozenset({"engineer", "policy", "ingest"})

# (from, to) -> actor kinds allowed. Every pair not listed is illegal for every actor.
ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    # diagnosis: the AI council, or the heuristic fallback as ``system``; a diagnosis may be redone
    ("DETECTED", "DIAGNOSED"): AI_OR_SYSTEM,
    ("DIAGNOSED", "DIAGNOSED"): AI_OR_SYSTEM,
    # policy proposes (also straight from DETECTED when there is nothing to diagnose), and proposes
    # again after the approval window closed (EXPIRED), a rejection (REJECTED) or a failed run (FAILED)
    ("DETECTED", "PROPOSED"): POLICY,
    ("DIAGNOSED", "PROPOSED"): POLICY,
    ("EXPIRED", "PROPOSED"): POLICY,
    ("REJECTED", "PROPOSED"): POLICY,
    ("FAILED", "PROPOSED"): POLICY,
    # only a human decides
    ("PROPOSED", "AUTHORIZED"): ENGINEER,
    ("PROPOSED", "REJECTED"): ENGINEER,
    # the approval window timer
    ("PROPOSED", "EXPIRED"): SYSTEM,
    # the orchestrator runs what a human authorized
    ("AUTHORIZED", "EXECUTING"): ORCHESTRATOR,
    ("EXECUTING", "EXECUTED"): ORCHESTRATOR,
    ("EXECUTING", "FAILED"): ORCHESTRATOR,
    # policy: the recovery ran, but the service did not recover within the verification window
    ("EXECUTED", "FAILED"): POLICY,
    # policy sees the service healthy again: from every open stage except while an authorized action
    # is pending or running
    ("DETECTED", "RECOVERED"): POLICY,
    ("DIAGNOSED", "RECOVERED"): POLICY,
    ("PROPOSED", "RECOVERED"): POLICY,
    ("EXECUTED", "RECOVERED"): POLICY,
    ("EXPIRED", "RECOVERED"): POLICY,
    ("REJECTED", "RECOVERED"): POLICY,
    ("FAILED", "RECOVERED"): POLICY,
    # resolved by hand, by auto-resolve, or by the alert source: from every open stage
    ("DETECTED", "RESOLVED"): RESOLVERS,
    ("DIAGNOSED", "RESOLVED"): RESOLVERS,
    ("PROPOSED", "RESOLVED"): RESOLVERS,
    ("AUTHORIZED", "RESOLVED"): RESOLVERS,
    ("EXECUTING", "RESOLVED"): RESOLVERS,
    ("EXECUTED", "RESOLVED"): RESOLVERS,
    ("EXPIRED", "RESOLVED"): RESOLVERS,
    ("REJECTED", "RESOLVED"): RESOLVERS,
    ("FAILED", "RESOLVED"): RESOLVERS,
}

# actor -> the design's actor kind, or None for an actor no transition may ever accept.
ACTORS: dict[str, str | None] = {
    "policy": "policy",
    "system": "system",
    "orchestrator": "orchestrator",
    "ingest:alertmanager": "ingest",
    "engineer:alice": "engineer",
    "engineer:telegram:42": "engineer",
    "ai:some-model": "ai",
    "shadow_mode": None,
    "cli:root": None,
    "": None,
    "engineer:": None,        # engineer:<identity> with no identity
    "engineer": None,         # no identity at all
    "ai:": None,              # ai:<model> with no model
    "Engineer:x": None,
    "ENGINEER:x": None,
    "engineer :x": None,
    "policy ": None,
    " policy": None,
    "Policy": None,
    "SYSTEM": None,
    "orchestrator\n": None,
    "operator:bob": None,
    "engineer: ": None,       # an identity of whitespace is no identity
    "ingest:": None,          # ingest:<source> with no source
    "ingest": None,
    "ai": None,
    "policy:x": None,         # the unnamed kinds take no name: nothing may pass for policy, system or the
    "system:timer": None,     # orchestrator by adding one
    "orchestrator:run-1": None,
}

# These actor spellings carry no identity (or no model): they must be refused wherever the kind before
# the colon would be allowed (the design requires engineer:<identity> / ai:<model>).

# The stages passed through to reach each stage (actor per step), via legal moves only.
PATH_TO: dict[str, list[tuple[str, str]]] = {
    "DETECTED": [],
    "DIAGNOSED": [("DIAGNOSED", "ai:setup")],
    "PROPOSED": [("DIAGNOSED", "system"), ("PROPOSED", "policy")],
    "AUTHORIZED": [("PROPOSED", "policy"), ("AUTHORIZED", "engineer:setup")],
    "EXECUTING": [("PROPOSED", "policy"), ("AUTHORIZED", "engineer:setup"), ("EXECUTING", "orchestrator")],
    "EXECUTED": [("PROPOSED", "policy"), ("AUTHORIZED", "engineer:setup"), ("EXECUTING", "orchestrator"),
                 ("EXECUTED", "orchestrator")],
    "RECOVERED": [("PROPOSED", "policy"), ("AUTHORIZED", "engineer:setup"), ("EXECUTING", "orchestrator"),
                  ("EXECUTED", "orchestrator"), ("RECOVERED", "policy")],
    "EXPIRED": [("PROPOSED", "policy"), ("EXPIRED", "system")],
    "REJECTED": [("PROPOSED", "policy"), ("REJECTED", "engineer:setup")],
    "FAILED": [("PROPOSED", "policy"), ("AUTHORIZED", "engineer:setup"), ("EXECUTING", "orchestrator"),
               ("FAILED", "orchestrator")],
    "RESOLVED": [("RESOLVED", "ingest:setup")],
}

TENANT = "acme"
COLUMNS = ("tenant, id, service_id, service_name, fingerprint, source, title, stage, priority, action, is_open, "
           "acknowledged_by, opened_at, updated_at, closed_at")


SETUP_ACTORS = {"ai:setup": "ai", "engineer:setup": "engineer", "ingest:setup": "ingest", "system": "system",
                "policy": "policy", "orchestrator": "orchestrator"}


def expected_allowed(src: str, dst: str, actor: str) -> bool:
    kind = ACTORS[actor] if actor in ACTORS else SETUP_ACTORS[actor]
    return kind is not None and kind in ALLOWED.get((src, dst), frozenset())


def test_the_expected_table_is_complete_and_consistent() -> None:
    """Guards the table above: every stage reachable, nothing leaves a closed stage, nothing enters DETECTED."""
    assert len(ALLOWED) == 30
    assert all(src in STAGES and dst in STAGES for src, dst in ALLOWED)
    assert not [pair for pair in ALLOWED if pair[0] in CLOSED_STAGES or pair[1] == "DETECTED"]
    assert {dst for _, dst in ALLOWED} == set(STAGES) - {"DETECTED"}
    assert set(PATH_TO) == set(STAGES)
    for stage, path in PATH_TO.items():
        at = "DETECTED"
        for step, actor in path:
            assert expected_allowed(at, step, actor), (stage, at, step, actor)
            at = step
        assert at == stage


def test_the_product_names_the_same_stages() -> None:
    assert engine.STAGES == STAGES
    assert engine.CLOSED == frozenset(CLOSED_STAGES)
    assert engine.OPEN == frozenset(STAGES) - frozenset(CLOSED_STAGES)


def test_the_products_declared_table_states_the_same_rule() -> None:
    """The declared table is documentation too: opening and escalation are written with a fixed actor
    ("policy") and never consult it, so only this comparison notices when those rows drift."""
    assert dict(engine.TRANSITIONS) == {(None, "DETECTED"): frozenset({"policy"}), **ALLOWED}
    assert dict(engine.ACTIONS) == {"escalate": frozenset({"policy"}), "acknowledge": frozenset({"engineer", "ingest"})}
    assert engine.PRIORITIES == ("P0", "P1", "P2", "P3")


# --- helpers ---------------------------------------------------------------------------------------

def opening(fingerprint: str, tenant: str = TENANT, *, priority: str = "P2", action: str | None = "restart service",
            data: dict[str, Any] | None = None) -> engine.Opening:
    return engine.Opening(tenant, fingerprint, "poller", f"{fingerprint} is down", priority, "svc_0000000000000001",
                          "checkout", action, "sha256:policy-v1", f"opened {fingerprint}", data or {})


def walk(tx: WriteTx, inc: engine.Incident, stage: str) -> engine.Incident:
    """Move a fresh (DETECTED) incident to ``stage`` along PATH_TO."""
    for step, actor in PATH_TO[stage]:
        moved = engine.apply_transition(tx, inc, step, actor, reason=f"setup to {step}")
        assert isinstance(moved, engine.Incident), moved
        inc = moved
    return inc


def create_at(db: Database, stage: str, fingerprint: str, tenant: str = TENANT, **kw: Any) -> engine.Incident:
    def write(tx: WriteTx) -> engine.Incident:
        inc, new = engine.open_incident(opening(fingerprint, tenant, **kw))(tx)
        assert new
        return walk(tx, inc, stage)
    return db.write_sync(write)


def row(conn: sqlite3.Connection, tenant: str, incident: str) -> tuple:
    return conn.execute(f"SELECT {COLUMNS} FROM incidents WHERE tenant = ? AND id = ?", (tenant, incident)).fetchone()


def entries(conn: sqlite3.Connection, tenant: str, incident: str, after: int = -1) -> list[dict]:
    return [json.loads(r[0]) for r in conn.execute(
        "SELECT body FROM ledger WHERE tenant = ? AND incident = ? AND seq > ? ORDER BY seq", (tenant, incident, after))]


def ledger_size(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(seq), -1) FROM ledger").fetchone()[0]


def pending_timers(conn: sqlite3.Connection, tenant: str, incident: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT kind FROM timers WHERE tenant = ? AND incident = ? AND done IS NULL",
                                       (tenant, incident))]


# --- the matrix: every actor on every stage pair, in one real database ------------------------------

@dataclass
class Cell:
    incident: str
    before: tuple
    result: Any


@dataclass
class Matrix:
    db: Database
    mark: int
    cells: dict[tuple[str, str, str], Cell]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    data = init_data_dir(tmp_path_factory.mktemp("transitions") / "data")
    db = data.open_database(Config(data_dir=data.path, checkpoint_interval=3600))
    keys = [(src, dst, actor) for src in STAGES for dst in STAGES for actor in ACTORS]

    def setup(tx: WriteTx) -> dict[tuple[str, str, str], str]:
        ids = {}
        for n, key in enumerate(keys):
            inc, new = engine.open_incident(opening(f"cell-{n}"))(tx)
            assert new
            inc = walk(tx, inc, key[0])
            # a pending deadline, to see that closing an incident (and only that) cancels it
            timers.schedule(tx, TENANT, inc.id, "auto_resolve", "2999-01-01T00:00:00.000000Z")
            ids[key] = inc.id
        return ids

    ids = db.write_sync(setup)
    conn = db.read_conn()
    mark = ledger_size(conn)
    before = {key: row(conn, TENANT, ids[key]) for key in keys}

    async def attempt(src: str, dst: str, actor: str) -> Any:
        try:
            return await engine.run(db, engine.transition(
                TENANT, ids[(src, dst, actor)], dst, actor, reason=f"matrix {src}->{dst}", decision="matrix",
                confidence=42, policy_version="sha256:matrix", data={"cell": f"{src}->{dst}"}))
        except Exception as exc:  # noqa: BLE001 - each cell's outcome is asserted by its own test
            return exc

    async def attempt_all() -> list[Any]:
        return await asyncio.gather(*(attempt(*key) for key in keys))

    results = asyncio.run(attempt_all())
    cells = {key: Cell(ids[key], before[key], result) for key, result in zip(keys, results)}
    try:
        yield Matrix(db, mark, cells)
    finally:
        db.close()


def _cell_params() -> list[Any]:
    params = []
    for src in STAGES:
        for dst in STAGES:
            for actor in ACTORS:
                params.append(pytest.param(src, dst, actor, id=f"{src}->{dst}-by-{actor!r}"))
    return params


@pytest.mark.parametrize(("src", "dst", "actor"), _cell_params())
def test_every_actor_on_every_stage_pair(matrix: Matrix, src: str, dst: str, actor: str) -> None:
    cell = matrix.cells[(src, dst, actor)]
    conn = matrix.db.read_conn()
    after = row(conn, TENANT, cell.incident)
    new_entries = entries(conn, TENANT, cell.incident, matrix.mark)
    assert cell.before[7] == src

    if expected_allowed(src, dst, actor):
        assert isinstance(cell.result, engine.Incident), f"{actor!r} was refused {src} -> {dst}: {cell.result!r}"
        closes = dst in CLOSED_STAGES
        assert (cell.result.stage, cell.result.is_open) == (dst, not closes)
        assert (after[7], bool(after[10])) == (dst, not closes)
        assert after[13] == cell.result.updated_at and after[13] >= cell.before[13]
        assert after[14] == (after[13] if closes else None) == cell.result.closed_at
        assert after[:7] + after[8:10] + after[11:13] == cell.before[:7] + cell.before[8:10] + cell.before[11:13]
        [entry] = new_entries
        assert (entry["kind"], entry["actor"], entry["stage"]) == (f"incident.{dst.lower()}", actor, dst)
        assert (entry["tenant"], entry["incident"]) == (TENANT, cell.incident)
        assert (entry["reason"], entry["decision"], entry["confidence"], entry["policy_version"], entry["data"]) == (
            f"matrix {src}->{dst}", "matrix", 42, "sha256:matrix", {"cell": f"{src}->{dst}"})
        assert pending_timers(conn, TENANT, cell.incident) == ([] if closes else ["auto_resolve"])
        return

    # refused: nothing about the incident changed, and no transition entry was written
    assert after == cell.before
    assert pending_timers(conn, TENANT, cell.incident) == ["auto_resolve"]
    assert not [e for e in new_entries if e["kind"] != "incident.transition_refused"]
    if actor == "":
        # an empty actor cannot even be ledgered: the write is refused as input, nothing is written
        assert isinstance(cell.result, LedgerInputError) and cell.result.field == "actor"
        assert new_entries == []
        return
    assert isinstance(cell.result, engine.IllegalTransitionError), f"{actor!r} made {src} -> {dst}: {cell.result!r}"
    assert (cell.result.incident, cell.result.src, cell.result.dst, cell.result.actor) == (
        cell.incident, src, dst, actor)
    [refusal] = new_entries
    assert (refusal["kind"], refusal["actor"], refusal["stage"], refusal["decision"]) == (
        "incident.transition_refused", actor, src, "refused")
    assert refusal["data"] == {"from": src, "to": dst}
    assert refusal["policy_version"] == "sha256:matrix"
    assert refusal["confidence"] is None


def test_the_matrix_database_replays_to_its_tables(matrix: Matrix) -> None:
    with matrix.db.reader() as conn:
        report = replay_database(conn)
    assert report.differences == []
    refused = sum(1 for cell in matrix.cells.values() if isinstance(cell.result, engine.IllegalTransitionError))
    assert sum(s.facts.get("refusals", 0) for s in report.incidents.values()) == refused


# --- opening -----------------------------------------------------------------------------------------

def test_opening_is_policy_at_detected_and_ledgered(db: Database) -> None:
    inc, new = db.write_sync(engine.open_incident(opening("fp-1", priority="P1", data={"extra": 1})))
    assert new and (inc.id, inc.stage, inc.priority, inc.is_open, inc.closed_at) == ("INC-1", "DETECTED", "P1", True, None)
    assert inc.acknowledged_by is None and inc.opened_at == inc.updated_at
    conn = db.read_conn()
    assert engine.get_incident(conn, TENANT, "INC-1") == inc
    [detected] = entries(conn, TENANT, "INC-1")
    assert (detected["kind"], detected["actor"], detected["stage"], detected["decision"]) == (
        "incident.detected", "policy", "DETECTED", "P1")
    assert (detected["policy_version"], detected["reason"]) == ("sha256:policy-v1", "opened fp-1")
    assert detected["data"] == {"service": "svc_0000000000000001", "service_name": "checkout", "title": "fp-1 is down",
                                "fingerprint": "fp-1", "source": "poller", "priority": "P1", "extra": 1}


def test_a_second_opening_for_an_open_fingerprint_returns_the_open_incident(db: Database) -> None:
    first, _ = db.write_sync(engine.open_incident(opening("fp-1")))
    size = ledger_size(db.read_conn())
    again, new = db.write_sync(engine.open_incident(opening("fp-1")))
    assert (again, new) == (first, False)
    assert ledger_size(db.read_conn()) == size
    other, new = db.write_sync(engine.open_incident(opening("fp-2")))
    assert new and other.id == "INC-2"
    elsewhere, new = db.write_sync(engine.open_incident(opening("fp-1", "globex")))
    assert new and (elsewhere.tenant, elsewhere.id) == ("globex", "INC-1")  # numbered per tenant
    engine.run_sync(db, engine.transition(TENANT, "INC-1", "RESOLVED", "engineer:alice", reason="done"))
    reopened, new = db.write_sync(engine.open_incident(opening("fp-1")))
    assert new and reopened.id == "INC-3"
    assert engine.open_incident_for(db.read_conn(), TENANT, "fp-1") == reopened
    assert engine.open_incident_for(db.read_conn(), TENANT, "fp-9") is None


def test_list_incidents_newest_first_open_only_and_limited(db: Database) -> None:
    for n in range(4):
        create_at(db, "DETECTED", f"fp-{n}")
    engine.run_sync(db, engine.transition(TENANT, "INC-2", "RESOLVED", "policy", reason="auto"))
    conn = db.read_conn()
    assert [i.id for i in engine.list_incidents(conn, TENANT)] == ["INC-4", "INC-3", "INC-2", "INC-1"]
    assert [i.id for i in engine.list_incidents(conn, TENANT, open_only=True)] == ["INC-4", "INC-3", "INC-1"]
    assert [i.id for i in engine.list_incidents(conn, TENANT, limit=2)] == ["INC-4", "INC-3"]
    assert engine.list_incidents(conn, "globex") == []
    assert engine.get_incident(conn, TENANT, "INC-2").public()["is_open"] is False
    public = engine.get_incident(conn, TENANT, "INC-1").public()
    assert public["id"] == "INC-1" and public["stage"] == "DETECTED" and set(public) == set(COLUMNS.split(", "))


def test_the_row_keeps_opening_and_update_times_apart(db: Database) -> None:
    opened = create_at(db, "DETECTED", "fp-1")
    time.sleep(0.002)
    moved = engine.run_sync(db, engine.transition(TENANT, "INC-1", "DIAGNOSED", "ai:m", reason="x"))
    read = engine.get_incident(db.read_conn(), TENANT, "INC-1")
    assert read == moved
    assert read.opened_at == opened.opened_at < read.updated_at == moved.updated_at
    assert [i.opened_at for i in engine.list_incidents(db.read_conn(), TENANT)] == [opened.opened_at]
    assert engine.open_incident_for(db.read_conn(), TENANT, "fp-1") == read
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.stage = "AUTHORIZED"  # type: ignore[misc]
    assert hash(read) == hash(engine.get_incident(db.read_conn(), TENANT, "INC-1"))
    what = opening("fp-2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        what.priority = "P0"  # type: ignore[misc]


def test_list_incidents_returns_a_hundred_by_default(db: Database) -> None:
    def many(tx: WriteTx) -> None:
        for n in range(101):
            engine.open_incident(opening(f"fp-{n}"))(tx)
    db.write_sync(many)
    listed = engine.list_incidents(db.read_conn(), TENANT)
    assert len(listed) == 100 and listed[0].id == "INC-101" and listed[-1].id == "INC-2"
    assert len(engine.list_incidents(db.read_conn(), TENANT, open_only=True)) == 100


# --- transitions: details the matrix does not show ------------------------------------------------------

def test_an_allowed_transition_ledgers_its_own_kind_and_defaults(db: Database) -> None:
    create_at(db, "DETECTED", "fp-1")
    moved = engine.run_sync(db, engine.transition(TENANT, "INC-1", "DIAGNOSED", "system", reason="heuristic",
                                                  kind="incident.diagnosed_heuristically"))
    assert moved.stage == "DIAGNOSED"
    last = entries(db.read_conn(), TENANT, "INC-1")[-1]
    assert (last["kind"], last["actor"], last["data"], last["decision"], last["confidence"]) == (
        "incident.diagnosed_heuristically", "system", {}, None, None)


async def test_the_async_path_returns_the_moved_incident(db: Database) -> None:
    create_at(db, "PROPOSED", "fp-1")
    moved = await engine.run(db, engine.transition(TENANT, "INC-1", "AUTHORIZED", "engineer:alice", reason="ok"))
    assert isinstance(moved, engine.Incident) and moved.stage == "AUTHORIZED"
    with pytest.raises(engine.IllegalTransitionError) as caught:
        await engine.run(db, engine.transition(TENANT, "INC-1", "AUTHORIZED", "engineer:alice", reason="twice"))
    assert (caught.value.src, caught.value.dst) == ("AUTHORIZED", "AUTHORIZED")


def test_a_refusal_is_an_alertengine_error_naming_the_move(db: Database) -> None:
    create_at(db, "PROPOSED", "fp-1")
    with pytest.raises(engine.IllegalTransitionError) as caught:
        engine.run_sync(db, engine.transition(TENANT, "INC-1", "AUTHORIZED", "policy", reason="self-approve",
                                              policy_version="sha256:p"))
    err = caught.value
    assert isinstance(err, AlertEngineError)
    assert str(err) == "INC-1: PROPOSED -> AUTHORIZED is not allowed for actor 'policy'"
    refusal = entries(db.read_conn(), TENANT, "INC-1")[-1]
    assert refusal["reason"] == "PROPOSED -> AUTHORIZED is not allowed for 'policy'"
    assert (refusal["tenant"], refusal["incident"], refusal["policy_version"]) == (TENANT, "INC-1", "sha256:p")


@pytest.mark.parametrize(("actor", "kind"), [
    ("engineer:", "''"), ("engineer: ", "''"), ("ai:", "''"), ("engineer", "''"), ("policy:x", "''"),
    ("Engineer:x", "''"), ("shadow_mode", "'shadow_mode'"), ("policy ", "'policy '"), ("system", "'system'"),
    ("engineer:telegram:42", "'engineer'"), ("ingest:alertmanager", "'ingest'"),
])
def test_a_refusal_names_the_actor_kind_it_read(db: Database, actor: str, kind: str) -> None:
    create_at(db, "PROPOSED", "fp-1")
    with pytest.raises(engine.IllegalTransitionError):
        engine.run_sync(db, engine.transition(TENANT, "INC-1", "EXECUTED", actor, reason="x"))
    refusal = entries(db.read_conn(), TENANT, "INC-1")[-1]
    assert refusal["reason"] == f"PROPOSED -> EXECUTED is not allowed for {kind}"


@pytest.mark.parametrize("dst", ["ACKNOWLEDGED", "detected", "Resolved", "RESOLVED ", "", "ESCALATED"])
def test_unknown_stages_are_refused(db: Database, dst: str) -> None:
    create_at(db, "PROPOSED", "fp-1")
    before = row(db.read_conn(), TENANT, "INC-1")
    for actor in ("policy", "engineer:alice", "system", "orchestrator", "ingest:x", "ai:m"):
        with pytest.raises(engine.IllegalTransitionError):
            engine.run_sync(db, engine.transition(TENANT, "INC-1", dst, actor, reason="odd"))
    assert row(db.read_conn(), TENANT, "INC-1") == before
    assert {e["kind"] for e in entries(db.read_conn(), TENANT, "INC-1")[3:]} == {"incident.transition_refused"}


def test_another_tenants_incident_is_not_found_and_untouched(db: Database) -> None:
    create_at(db, "PROPOSED", "fp-1", "globex")
    size = ledger_size(db.read_conn())
    with pytest.raises(NotFoundError) as caught:
        engine.run_sync(db, engine.transition(TENANT, "INC-1", "AUTHORIZED", "engineer:alice", reason="x"))
    assert (caught.value.what, str(caught.value)) == ("incident", "incident not found")
    with pytest.raises(NotFoundError):
        engine.run_sync(db, engine.acknowledge(TENANT, "INC-1", "engineer:alice"))
    assert ledger_size(db.read_conn()) == size
    assert engine.get_incident(db.read_conn(), "globex", "INC-1").stage == "PROPOSED"


def test_closing_cancels_only_that_incidents_timers(db: Database) -> None:
    create_at(db, "PROPOSED", "fp-1")
    create_at(db, "PROPOSED", "fp-2")

    def schedule(tx: WriteTx) -> None:
        for inc in ("INC-1", "INC-2"):
            timers.schedule(tx, TENANT, inc, "approval_window", "2999-01-01T00:00:00.000000Z")
            timers.schedule(tx, TENANT, inc, "auto_resolve", "2999-01-01T00:00:00.000000Z")
    db.write_sync(schedule)
    engine.run_sync(db, engine.transition(TENANT, "INC-1", "AUTHORIZED", "engineer:alice", reason="ok"))
    conn = db.read_conn()
    assert sorted(pending_timers(conn, TENANT, "INC-1")) == ["approval_window", "auto_resolve"]
    engine.run_sync(db, engine.transition(TENANT, "INC-1", "RESOLVED", "engineer:alice", reason="fixed by hand"))
    assert pending_timers(conn, TENANT, "INC-1") == []
    assert sorted(pending_timers(conn, TENANT, "INC-2")) == ["approval_window", "auto_resolve"]


# --- acknowledgement and escalation ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def acks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    """Every actor acknowledging an incident at every stage, in one real database."""
    data = init_data_dir(tmp_path_factory.mktemp("acks") / "data")
    db = data.open_database(Config(data_dir=data.path, checkpoint_interval=3600))
    keys = [(stage, "ACKNOWLEDGED", actor) for actor in ACTORS for stage in STAGES]

    def setup(tx: WriteTx) -> dict[tuple[str, str, str], str]:
        ids = {}
        for n, key in enumerate(keys):
            inc, _ = engine.open_incident(opening(f"ack-{n}"))(tx)
            ids[key] = walk(tx, inc, key[0]).id
        return ids

    ids = db.write_sync(setup)
    conn = db.read_conn()
    mark = ledger_size(conn)
    before = {key: row(conn, TENANT, ids[key]) for key in keys}

    async def attempt(key: tuple[str, str, str]) -> Any:
        try:
            return await engine.run(db, engine.acknowledge(TENANT, ids[key], key[2]))
        except Exception as exc:  # noqa: BLE001 - asserted per cell
            return exc

    async def attempt_all() -> list[Any]:
        return await asyncio.gather(*(attempt(key) for key in keys))

    results = asyncio.run(attempt_all())
    try:
        yield Matrix(db, mark, {key: Cell(ids[key], before[key], r) for key, r in zip(keys, results)})
    finally:
        db.close()


@pytest.mark.parametrize(("actor", "stage"), [pytest.param(a, s, id=f"{a!r}-{s}") for a in ACTORS for s in STAGES])
def test_only_an_engineer_or_their_alerting_tool_acknowledges_and_only_an_open_incident(
        acks: Matrix, actor: str, stage: str) -> None:
    """An engineer acknowledges; so does an ingest source relaying an engineer's acknowledgement
    (PagerDuty's ``acknowledge`` event). Nobody else, and never a closed incident."""
    cell = acks.cells[(stage, "ACKNOWLEDGED", actor)]
    conn = acks.db.read_conn()
    after = row(conn, TENANT, cell.incident)
    new = entries(conn, TENANT, cell.incident, acks.mark)
    assert cell.before[7] == stage and cell.before[11] is None
    if ACTORS[actor] in ("engineer", "ingest") and stage not in CLOSED_STAGES:
        assert isinstance(cell.result, engine.Incident), cell.result
        assert cell.result.acknowledged_by == after[11] == actor
        assert after[:11] == cell.before[:11]  # acknowledging moves no stage
        assert after[13] >= cell.before[13] and after[14] is None
        [entry] = new
        assert (entry["kind"], entry["actor"], entry["stage"]) == ("incident.acknowledged", actor, stage)
        assert (entry["tenant"], entry["incident"], entry["reason"]) == (TENANT, cell.incident, f"acknowledged by {actor}")
        return
    expected = LedgerInputError if actor == "" else engine.IllegalTransitionError
    assert isinstance(cell.result, expected), cell.result
    assert after == cell.before
    assert [(e["kind"], e["actor"], e["stage"], e["data"]) for e in new] == (
        [] if actor == "" else [("incident.transition_refused", actor, stage, {"from": stage, "to": "ACKNOWLEDGED"})])


def test_a_second_engineer_takes_over_the_acknowledgement(db: Database) -> None:
    create_at(db, "PROPOSED", "fp-1")
    engine.run_sync(db, engine.acknowledge(TENANT, "INC-1", "engineer:alice"))
    inc = engine.run_sync(db, engine.acknowledge(TENANT, "INC-1", "engineer:bob"))
    assert inc.acknowledged_by == "engineer:bob" == engine.get_incident(db.read_conn(), TENANT, "INC-1").acknowledged_by
    with db.reader() as conn:
        report = replay_database(conn)
    assert report.differences == []
    assert report.incidents[(TENANT, "INC-1")].facts["acknowledged_by"] == "engineer:bob"


@pytest.mark.parametrize(("start", "to", "changes"), [
    ("P2", "P1", True), ("P3", "P0", True), ("P1", "P0", True),
    ("P2", "P2", False), ("P1", "P2", False), ("P0", "P3", False),
])
def test_escalation_only_raises_priority_and_is_policys(db: Database, start: str, to: str, changes: bool) -> None:
    create_at(db, "PROPOSED", "fp-1", priority=start)
    conn = db.read_conn()
    before, mark = row(conn, TENANT, "INC-1"), ledger_size(conn)
    result = db.write_sync(engine.escalate(TENANT, "INC-1", to, reason="worse", policy_version="sha256:p",
                                           data={"signal": "errors"}))
    if not changes:
        assert result is None
        assert row(conn, TENANT, "INC-1") == before and entries(conn, TENANT, "INC-1", mark) == []
        return
    assert result.priority == to == row(conn, TENANT, "INC-1")[8]
    assert result.stage == "PROPOSED"
    [entry] = entries(conn, TENANT, "INC-1", mark)
    assert (entry["kind"], entry["actor"], entry["decision"], entry["stage"], entry["policy_version"]) == (
        "incident.escalated", "policy", to, "PROPOSED", "sha256:p")
    assert (entry["reason"], entry["data"]) == ("worse", {"from": start, "to": to, "signal": "errors"})
    with db.reader() as rc:
        report = replay_database(rc)
    assert report.differences == [] and report.incidents[(TENANT, "INC-1")].facts["priority"] == to


@pytest.mark.parametrize("stage", CLOSED_STAGES)
def test_a_closed_incident_is_not_escalated(db: Database, stage: str) -> None:
    create_at(db, stage, "fp-1", priority="P3")
    mark = ledger_size(db.read_conn())
    assert db.write_sync(engine.escalate(TENANT, "INC-1", "P0", reason="x", policy_version="v", data={})) is None
    assert engine.get_incident(db.read_conn(), TENANT, "INC-1").priority == "P3"
    assert ledger_size(db.read_conn()) == mark


# --- replay and the timeline ----------------------------------------------------------------------------

def test_replay_follows_every_move_and_catches_an_edited_table(db: Database) -> None:
    for stage, fp in (("RECOVERED", "fp-1"), ("FAILED", "fp-2"), ("RESOLVED", "fp-3"), ("REJECTED", "fp-4")):
        create_at(db, stage, fp)
    for dst in ("EXECUTED", "DETECTED"):
        with pytest.raises(engine.IllegalTransitionError):
            engine.run_sync(db, engine.transition(TENANT, "INC-2", dst, "policy", reason="x"))
    engine.run_sync(db, engine.acknowledge(TENANT, "INC-2", "engineer:alice"))
    with db.reader() as conn:
        report = replay_database(conn)
    assert report.differences == []
    states = {key[1]: state for key, state in report.incidents.items()}
    assert {i: (s.stage, s.facts["is_open"]) for i, s in states.items()} == {
        "INC-1": ("RECOVERED", False), "INC-2": ("FAILED", True), "INC-3": ("RESOLVED", False),
        "INC-4": ("REJECTED", True)}
    assert states["INC-2"].facts["refusals"] == 2 and "refusals" not in states["INC-1"].facts
    assert states["INC-2"].facts["acknowledged_by"] == "engineer:alice"
    assert states["INC-1"].facts["fingerprint"] == "fp-1" and states["INC-1"].facts["priority"] == "P2"
    assert report.unfolded_kinds == {}

    tampered = connect(db.path)   # the store's own connection: an SQLite file or PostgreSQL
    try:
        tampered.execute("UPDATE incidents SET stage = 'AUTHORIZED', is_open = 0, priority = 'P0', "
                         "acknowledged_by = 'engineer:mallory' WHERE id = 'INC-2'")
        tampered.execute("INSERT INTO incidents (" + COLUMNS + ") SELECT tenant, 'INC-99', service_id, service_name, "
                         "'fp-99', source, title, stage, priority, action, is_open, acknowledged_by, opened_at, "
                         "updated_at, closed_at FROM incidents WHERE id = 'INC-1'")
        tampered.execute("DELETE FROM incidents WHERE id = 'INC-3'")
        tampered.commit()
    finally:
        tampered.close()
    with db.reader() as conn:
        diffs = replay_database(conn).differences
        scoped = replay_database(conn, tenant=TENANT, incident="INC-2").differences
        other = replay_database(conn, tenant="globex").differences
        tenant_only = replay_database(conn, tenant=TENANT).differences
    assert sorted(diffs) == sorted([
        "acme/INC-2: stage is 'AUTHORIZED' in the table, 'FAILED' in the ledger",
        "acme/INC-2: priority is 'P0' in the table, 'P2' in the ledger",
        "acme/INC-2: is_open is False in the table, True in the ledger",
        "acme/INC-2: acknowledged_by is 'engineer:mallory' in the table, 'engineer:alice' in the ledger",
        "acme/INC-99: in the incidents table but not in the ledger",
        "acme/INC-3: in the ledger but not in the incidents table",
    ])
    assert len(scoped) == 4 and all(d.startswith("acme/INC-2: ") for d in scoped)
    assert other == []
    assert sorted(tenant_only) == sorted(diffs)


def test_the_timeline_is_the_incidents_entries_oldest_first(db: Database) -> None:
    create_at(db, "EXECUTED", "fp-1")
    create_at(db, "PROPOSED", "fp-2")
    with pytest.raises(engine.IllegalTransitionError):
        engine.run_sync(db, engine.transition(TENANT, "INC-1", "DETECTED", "policy", reason="reopen"))
    line = engine.timeline(db.read_conn(), TENANT, "INC-1")
    assert [(e["kind"], e["actor"]) for e in line] == [
        ("incident.detected", "policy"), ("incident.proposed", "policy"), ("incident.authorized", "engineer:setup"),
        ("incident.executing", "orchestrator"), ("incident.executed", "orchestrator"),
        ("incident.transition_refused", "policy")]
    assert [e["seq"] for e in line] == sorted(e["seq"] for e in line)
    with pytest.raises(NotFoundError):
        engine.timeline(db.read_conn(), "globex", "INC-1")


def test_the_refusal_path_does_not_depend_on_the_writer_batch(data_dir: Any, config: Config, tmp_path: Path) -> None:
    """A refusal in the middle of a group commit does not undo its neighbours."""
    db = data_dir.open_database(config)
    try:
        for n in range(3):
            create_at(db, "PROPOSED", f"fp-{n}")

        async def three() -> list[Any]:
            return await asyncio.gather(
                engine.run(db, engine.transition(TENANT, "INC-1", "AUTHORIZED", "engineer:alice", reason="ok")),
                engine.run(db, engine.transition(TENANT, "INC-2", "AUTHORIZED", "system", reason="no")),
                engine.run(db, engine.transition(TENANT, "INC-3", "REJECTED", "engineer:bob", reason="no")),
                return_exceptions=True)
        first, second, third = asyncio.run(three())
        assert first.stage == "AUTHORIZED" and third.stage == "REJECTED"
        assert isinstance(second, engine.IllegalTransitionError)
        conn = db.read_conn()
        assert [engine.get_incident(conn, TENANT, i).stage for i in ("INC-1", "INC-2", "INC-3")] == [
            "AUTHORIZED", "PROPOSED", "REJECTED"]
    finally:
        db.close()
