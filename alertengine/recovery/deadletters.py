"""The per-tenant dead-letter queue: recovery calls that failed for good, and re-proposing one
(which needs a fresh human approval: a dead letter is never replayed on its own)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConflictError, NotFoundError
from ..incidents import engine
from ..ledger.entry import utc_timestamp
from ..store import WriteTx


@dataclass(frozen=True)
class DeadLetter:
    id: str
    tenant: str
    incident: str
    url: str
    payload: dict[str, Any]
    attempts: list[Any]
    final_status: int | None
    detail: str
    created: str
    retried_at: str | None

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


_COLUMNS = "id, tenant, incident, url, payload, attempts, final_status, detail, created, retried_at"


def _row(r: tuple) -> DeadLetter:
    return DeadLetter(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), r[6], r[7], r[8], r[9])


def list_dead_letters(conn: sqlite3.Connection, tenant: str, limit: int = 100) -> list[DeadLetter]:
    return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM dead_letters WHERE tenant = ? "
                                          "ORDER BY created DESC, id LIMIT ?", (tenant, limit))]


def get_dead_letter(conn: sqlite3.Connection, tenant: str, letter_id: str) -> DeadLetter:
    r = conn.execute(f"SELECT {_COLUMNS} FROM dead_letters WHERE tenant = ? AND id = ?", (tenant, letter_id)).fetchone()
    if r is None:
        raise NotFoundError("dead letter")
    return _row(r)


def repropose(tenant: str, letter_id: str, requested_by: str, policy_version: str) -> Callable[[WriteTx], Any]:
    """Policy proposes the failed action again (FAILED -> PROPOSED); a human must approve anew."""

    def write(tx: WriteTx) -> engine.Incident | engine.IllegalTransitionError:
        letter = get_dead_letter(tx.conn, tenant, letter_id)
        if letter.retried_at is not None:
            raise ConflictError("id", f"dead letter {letter_id} was already re-proposed at {letter.retried_at}")
        inc = engine.get_incident(tx.conn, tenant, letter.incident)
        tx.execute("UPDATE dead_letters SET retried_at = ? WHERE id = ?", (utc_timestamp(), letter_id))
        return engine.apply_transition(tx, inc, engine.PROPOSED, "policy", decision="propose",
                                       policy_version=policy_version,
                                       reason=f"re-proposed from dead letter {letter_id} at the request of {requested_by}",
                                       data={"action": inc.action, "dead_letter": letter_id,
                                             "requested_by": requested_by})
    return write
