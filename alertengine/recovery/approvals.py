"""Approvals: single-use signed tokens for one proposed action, and their consumption.

A token (JWT, HS256 pinned, per-install secret) names the tenant, the incident, the action, the
choice (for a dissent: which theory), the recipient it was sent to, a ``jti``, and expires
(5 minutes by default). Chat buttons carry only a short reference to the approval, never the
token. Consuming an approval and writing the AUTHORIZED (or REJECTED) entry happen in one
transaction, so any number of concurrent confirms yields exactly one authorization."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import jwt

from ..errors import AlertEngineError, NotFoundError
from ..incidents import engine, timers
from ..ledger.entry import LedgerEvent, identity_fingerprint, utc_timestamp
from ..store import WriteTx

AUDIENCE = "alertengine-approval"
ALGORITHM = "HS256"
REF_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


class TokenError(AlertEngineError):
    """A token that cannot be used: ``code`` is expired, invalid, wrong_audience or wrong_issuer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ApprovalClaims:
    jti: str
    tenant: str
    incident: str
    action: str
    choice: str | None
    recipient: str
    issued_at: int
    expires_at: int


class ApprovalTokens:
    def __init__(self, secret: bytes, issuer: str, ttl: float = 300.0) -> None:
        if len(secret) < 32:
            raise ValueError("the approval-token secret must be at least 32 bytes")
        self._secret = secret
        self.issuer = issuer
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"ApprovalTokens(issuer={self.issuer!r}, secret=<hidden>)"

    def mint(self, tenant: str, incident: str, action: str, choice: str | None, recipient: str,
             ttl: float | None = None, now: float | None = None) -> tuple[str, ApprovalClaims]:
        issued = int(now if now is not None else time.time())
        claims = ApprovalClaims(uuid.uuid4().hex, tenant, incident, action, choice, recipient, issued,
                                issued + int(ttl or self.ttl))
        token = jwt.encode({"iss": self.issuer, "aud": AUDIENCE, "sub": incident, "tenant": tenant, "action": action,
                            "choice": choice, "recipient": recipient, "jti": claims.jti, "iat": issued,
                            "exp": claims.expires_at}, self._secret, algorithm=ALGORITHM)
        return token, claims

    def read(self, token: str) -> ApprovalClaims:
        """Verify signature (HS256 only), audience, issuer, expiry and the claims' shapes."""
        if not isinstance(token, str) or len(token) > 4096:
            raise TokenError("invalid", "not an approval token")
        try:
            c = jwt.decode(token, self._secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=self.issuer,
                           options={"require": ["iss", "aud", "sub", "jti", "iat", "exp"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("expired", "this approval link has expired") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong_audience", "this token is not an approval token") from None
        except jwt.InvalidIssuerError:
            raise TokenError("wrong_issuer", "this token was issued by another appliance") from None
        except jwt.PyJWTError:
            raise TokenError("invalid", "this approval link is not valid") from None
        fields = ("tenant", "action", "recipient")
        if not all(isinstance(c.get(f), str) for f in fields) or not isinstance(c.get("sub"), str) \
                or (c.get("choice") is not None and not isinstance(c.get("choice"), str)):
            raise TokenError("invalid", "this approval link is not valid")
        return ApprovalClaims(c["jti"], c["tenant"], c["sub"], c["action"], c.get("choice"), c["recipient"],
                              int(c["iat"]), int(c["exp"]))


def new_ref() -> str:
    """A short approval reference for chat buttons (fits Telegram's 64-byte callback_data)."""
    return "".join(secrets.choice(REF_ALPHABET) for _ in range(12))


def _iso(epoch: int) -> str:
    return utc_timestamp(dt.datetime.fromtimestamp(epoch, dt.timezone.utc))


def proposal_number(conn: sqlite3.Connection, tenant: str, incident: str) -> int:
    """How many times policy has proposed for this incident (approvals belong to one proposal)."""
    return conn.execute("SELECT count(*) FROM ledger WHERE tenant = ? AND incident = ? AND kind = 'incident.proposed'",
                        (tenant, incident)).fetchone()[0]


def record_request(claims: ApprovalClaims, ref: str, channel: str, policy_version: str | None,
                   actor: str = "policy") -> Callable[[WriteTx], None]:
    """Store the approval and its expiry timer; ledger the request (never the token), by ``actor``."""

    def write(tx: WriteTx) -> None:
        proposal = proposal_number(tx.conn, claims.tenant, claims.incident)
        tx.execute("INSERT INTO approvals (jti, ref, tenant, incident, proposal, action, choice, recipient, created, "
                   "expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (claims.jti, ref, claims.tenant, claims.incident, proposal, claims.action, claims.choice,
                    claims.recipient, _iso(claims.issued_at), _iso(claims.expires_at)))
        inc = engine.get_incident(tx.conn, claims.tenant, claims.incident)
        tx.append(LedgerEvent(kind="approval.requested", tenant=claims.tenant, incident=claims.incident,
                              stage=inc.stage, actor=actor, policy_version=policy_version, decision="requested",
                              reason=f"approval of {claims.action!r} requested via {channel}",
                              data={"jti": claims.jti, "action": claims.action, "choice": claims.choice,
                                    "recipient": identity_fingerprint(claims.recipient), "channel": channel,
                                    "expires": _iso(claims.expires_at)}))
        timers.schedule(tx, claims.tenant, claims.incident, "approval_expiry", _iso(claims.expires_at),
                        {"proposal": proposal})
    return write


@dataclass(frozen=True)
class Approval:
    jti: str
    ref: str
    tenant: str
    incident: str
    proposal: int
    action: str
    choice: str | None
    recipient: str
    created: str
    expires: str
    used_at: str | None
    used_by: str | None
    outcome: str | None


_COLUMNS = "jti, ref, tenant, incident, proposal, action, choice, recipient, created, expires, used_at, used_by, outcome"


def check_claims(approval: Approval, claims: ApprovalClaims) -> None:
    """A link's signed claims must be the stored approval's own (defence in depth: forging one needs
    the token secret, but a link then acts only on what it names)."""
    if (claims.tenant, claims.incident, claims.action, claims.choice, claims.recipient) != \
            (approval.tenant, approval.incident, approval.action, approval.choice, approval.recipient):
        raise TokenError("invalid", "this link does not match the approval it names")


def find_approval(conn: sqlite3.Connection, *, jti: str | None = None, ref: str | None = None,
                  tenant: str | None = None) -> Approval:
    if jti is not None:
        row = conn.execute(f"SELECT {_COLUMNS} FROM approvals WHERE jti = ?", (jti,)).fetchone()
    else:
        row = conn.execute(f"SELECT {_COLUMNS} FROM approvals WHERE ref = ?", (ref,)).fetchone()
    if row is None or (tenant is not None and row[2] != tenant):
        raise NotFoundError("approval")
    return Approval(*row)


@dataclass(frozen=True)
class Verdict:
    """What a confirm did: ``outcome`` is authorized, rejected, waiting (two-person rule),
    already_used, expired, or not_proposed."""

    outcome: str
    incident: engine.Incident
    approval: Approval
    approvers: tuple[str, ...] = ()
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome in ("authorized", "rejected", "waiting")


def consume(jti_or_ref: tuple[str | None, str | None], tenant: str, approver: str, decision: str, via: str,
            required: int, policy_version: str | None, *, now: str | None = None,
            vouched: str | None = None) -> Callable[[WriteTx], Verdict]:
    """Use an approval once. ``approver`` is who acted (``telegram:<user id>`` or the bound
    recipient, ``person:<id>``); ``vouched`` is the identity the chat channel vouched for, when the
    approval came from a chat; ``decision`` is approve or reject."""
    if decision not in ("approve", "reject"):
        raise ValueError("decision must be approve or reject")

    def write(tx: WriteTx) -> Verdict:
        jti, ref = jti_or_ref
        approval = find_approval(tx.conn, jti=jti, ref=ref, tenant=tenant)
        inc = engine.get_incident(tx.conn, tenant, approval.incident)
        at = now or utc_timestamp()
        if approval.used_at is not None:
            return Verdict("already_used", inc, approval,
                           detail=f"already used by {approval.used_by} at {approval.used_at}")
        refusal = None
        if at > approval.expires:
            refusal = "expired"
        elif inc.stage != engine.PROPOSED or approval.proposal != proposal_number(tx.conn, tenant, inc.id):
            refusal = "not_proposed"
        if refusal is not None:
            tx.append(LedgerEvent(kind="approval.refused", tenant=tenant, incident=inc.id, stage=inc.stage,
                                  actor=f"engineer:{approver}", decision=refusal, policy_version=policy_version,
                                  reason=f"approval refused: {refusal}", data={"jti": approval.jti, "via": via}))
            return Verdict(refusal, inc, approval, detail=f"the approval is {refusal.replace('_', ' ')}")
        outcome = "approved" if decision == "approve" else "rejected"
        done = tx.execute("UPDATE approvals SET used_at = ?, used_by = ?, outcome = ? WHERE jti = ? AND used_at IS NULL",
                          (at, approver, outcome, approval.jti)).rowcount
        if done != 1:  # unreachable under the single writer; kept as the schema-level guarantee
            return Verdict("already_used", inc, approval, detail="already used")
        used = Approval(**{**approval.__dict__, "used_at": at, "used_by": approver, "outcome": outcome})
        actor = f"engineer:{approver}"
        common = {"jti": approval.jti, "action": approval.action, "choice": approval.choice, "via": via,
                  "approver": approver, **({"vouched_by": vouched} if vouched else {})}
        if decision == "reject":
            moved = engine.apply_transition(tx, inc, engine.REJECTED, actor, reason=f"{approver} rejected the action",
                                            decision="rejected", policy_version=policy_version, data=common)
            return _verdict(moved, "rejected", used)
        approvers = tuple(r[0] for r in tx.execute(   # who approved the same choice
            "SELECT DISTINCT used_by FROM approvals WHERE tenant = ? AND incident = ? AND proposal = ? "
            "AND outcome = 'approved' AND choice IS ? ORDER BY used_by",
            (tenant, inc.id, approval.proposal, approval.choice)))
        # distinct people: a person's link ("link:person:ada") and their chat button ("person:ada") are one
        people = {person_of(a) for a in approvers}
        if len(people) < required:
            tx.append(LedgerEvent(kind="approval.granted", tenant=tenant, incident=inc.id, stage=inc.stage,
                                  actor=actor, decision="waiting", policy_version=policy_version,
                                  reason=f"{len(people)} of {required} distinct approvals",
                                  data={**common, "approvers": list(approvers), "required": required}))
            return Verdict("waiting", inc, used, approvers, f"{len(people)} of {required} approvals")
        moved = engine.apply_transition(tx, inc, engine.AUTHORIZED, actor, decision="authorized",
                                        policy_version=policy_version,
                                        reason=f"authorized by {', '.join(approvers)}",
                                        data={**common, "approvers": list(approvers), "required": required})
        return _verdict(moved, "authorized", used, approvers)
    return write


def person_of(approver: str) -> str:
    """The person an approval identity names: a link's bound recipient without the ``link:`` prefix."""
    return approver[len("link:"):] if approver.startswith("link:") else approver


def _verdict(moved: engine.Incident | engine.IllegalTransitionError, outcome: str, approval: Approval,
             approvers: tuple[str, ...] = ()) -> Verdict:
    if isinstance(moved, engine.IllegalTransitionError):
        raise moved
    return Verdict(outcome, moved, approval, approvers)


def idempotency_key(tenant: str, incident: str, jti: str) -> str:
    """The same for every attempt of one execution, different for each approval."""
    return hashlib.sha256(f"{tenant}|{incident}|{jti}".encode()).hexdigest()[:32]


def expire(tenant: str, incident: str, proposal: int, policy_version: str | None) -> Callable[[WriteTx], Any]:
    """The approval window closed: EXPIRED (actor system) if the same proposal is still waiting."""

    def write(tx: WriteTx) -> engine.Incident | engine.IllegalTransitionError | None:
        inc = engine.get_incident(tx.conn, tenant, incident)
        if inc.stage != engine.PROPOSED or proposal != proposal_number(tx.conn, tenant, incident):
            return None
        tx.execute("UPDATE approvals SET outcome = 'expired' WHERE tenant = ? AND incident = ? AND proposal = ? "
                   "AND used_at IS NULL", (tenant, incident, proposal))
        return engine.apply_transition(tx, inc, engine.EXPIRED, "system", decision="expired",
                                       policy_version=policy_version,
                                       reason="no approval in time: the proposal expired")
    return write
