"""Answers typed into a chat (a WhatsApp reply): the incident's short reply code and the commands.

Every incident that is told to someone gets a reply code of four characters from an alphabet
without look-alikes (no 0/O, 1/I/L), unique among the tenant's incidents, e.g. ``K7QM``. A
message on a channel without buttons says "reply ACK K7QM". The code, not the incident number,
names the incident in a reply, so a slip of one digit cannot acknowledge or approve a neighbouring
incident: a mistyped code almost always names no incident (with 30 incidents on record, about one
chance in 30,000 of naming another, where a mistyped number always names one), and the answer
says so.

Commands (case does not matter, extra spaces neither)::

    ACK <code>              acknowledge: the escalation stops
    RESOLVE <code>          resolve the incident
    APPROVE <code>-<n> [A|B]  approve proposal n (with a dissent: trust theory A or B)
    REJECT <code>-<n>         reject it

An approval names the proposal it answers (``K7QM-2``): an answer to an earlier proposal of the
incident is refused, never applied to the current one. A reply that quotes one of our messages
(WhatsApp's reply-to) may leave the code out: the quoted message says which incident and which
proposal.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from dataclasses import dataclass

from ..store import WriteTx

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 4
_CODE = f"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}"
_COMMAND = re.compile(rf"^\s*(ACK|ACKNOWLEDGE|RESOLVE|APPROVE|REJECT)(?:\s+({_CODE})(?:-([0-9]{{1,4}}))?)?"
                      rf"(?:\s+([A-Z]))?\s*[.!]?\s*$")
VERBS = {"ACK": "acknowledge", "ACKNOWLEDGE": "acknowledge", "RESOLVE": "resolve", "APPROVE": "approve",
         "REJECT": "reject"}
HELP = ("Reply ACK <code> or RESOLVE <code>, or APPROVE <code>-<n> or REJECT <code>-<n> for a proposal, "
        "with the code from our message.")


@dataclass(frozen=True)
class Command:
    verb: str              # acknowledge | resolve | approve | reject
    code: str | None       # None: the reply quoted our message instead
    choice: str | None     # APPROVE <code>-<n> A: the theory trusted
    proposal: int | None = None   # APPROVE <code>-<n>: the proposal answered


def parse(text: str) -> Command | None:
    """The command in a reply, or None when it is not one."""
    if not isinstance(text, str) or len(text) > 200:
        return None
    match = _COMMAND.match(text.upper())
    if match is None:
        return None
    verb, code, proposal, choice = match.groups()
    if choice is not None and VERBS[verb] != "approve":
        return None
    if proposal is not None and VERBS[verb] not in ("approve", "reject"):
        return None
    return Command(VERBS[verb], code, choice, int(proposal) if proposal is not None else None)


def reply_code(tx: WriteTx, tenant: str, incident: str) -> str:
    """The incident's reply code, made on first use (inside the caller's transaction)."""
    row = tx.execute("SELECT code FROM reply_codes WHERE tenant = ? AND incident = ?", (tenant, incident)).fetchone()
    if row is not None:
        return str(row[0])
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if tx.execute("SELECT 1 FROM reply_codes WHERE tenant = ? AND code = ?", (tenant, code)).fetchone() is None:
            tx.execute("INSERT INTO reply_codes (tenant, incident, code) VALUES (?, ?, ?)", (tenant, incident, code))
            return code


def incident_of(conn: sqlite3.Connection, tenant: str, code: str) -> str | None:
    row = conn.execute("SELECT incident FROM reply_codes WHERE tenant = ? AND code = ?", (tenant, code.upper())).fetchone()
    return None if row is None else str(row[0])
