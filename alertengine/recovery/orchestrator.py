"""The orchestrator: asks humans to approve what policy proposed, and runs what they authorized.

On PROPOSED it mints one single-use approval per contact (links) plus chat buttons, and sends
them through the gateway (in shadow mode: nothing minted, the suppression ledgered). On an
authorization it moves the incident to EXECUTING, calls the service's recovery webhook (signed,
retried) and records EXECUTED, or FAILED with a dead letter. Only ``orchestrator`` does this."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx

from ..errors import ConflictError, NotFoundError
from ..incidents import engine, timers
from ..incidents.policy import load_policy
from ..incidents.timers import Timer
from ..ledger.entry import LedgerEvent, identity_fingerprint, utc_timestamp
from ..net.webhooks import post_signed
from ..notify.gateway import Gateway, Message
from ..notify.people import expand, get_person
from ..store import Database, WriteTx
from ..tenancy.vault import SecretVault
from . import approvals, chat
from .approvals import ApprovalTokens, Verdict

log = logging.getLogger("alertengine.orchestrator")


@dataclass(frozen=True)
class Target:
    """Where a service's recovery goes: its webhook and signing secret."""

    url: str | None
    secret: str | None
    contacts: dict[str, Any]
    approvers: dict[str, list[str]]
    overrides: dict[str, Any] = field(default_factory=dict)   # the service's own policy settings


def service_target(conn: sqlite3.Connection, vault: SecretVault, tenant: str, service_id: str | None) -> Target:
    if service_id is None:
        return Target(None, None, {}, {})
    row = conn.execute("SELECT spec, webhook_secret FROM services WHERE tenant = ? AND id = ?",
                       (tenant, service_id)).fetchone()
    if row is None:
        return Target(None, None, {}, {})
    spec = json.loads(row[0])
    secret = vault.decrypt(bytes(row[1]), context=f"tenant:{tenant}/service:{service_id}/webhook_secret")
    return Target(spec.get("recovery_webhook_url"), secret, spec.get("contacts", {}), spec.get("approvers", {}),
                  spec.get("policy", {}))


def dissent_theories(conn: sqlite3.Connection, tenant: str, incident: str) -> list[dict[str, Any]]:
    """The two theories of the incident's latest diagnosis, when the council dissented.

    A dissent is an ``incident.diagnosed`` entry with decision ``dissent`` and
    ``data.theories = [{"label": "A", "root_cause", "category", "confidence", "logs_to_check"}, {"label": "B", …}]``."""
    row = conn.execute("SELECT body FROM ledger WHERE tenant = ? AND incident = ? AND kind = 'incident.diagnosed' "
                       "ORDER BY seq DESC LIMIT 1", (tenant, incident)).fetchone()
    if row is None:
        return []
    entry = json.loads(row[0])
    theories = entry["data"].get("theories") if entry.get("decision") == "dissent" else None
    if not isinstance(theories, list) or not all(isinstance(t, dict) and isinstance(t.get("label"), str)
                                                 for t in theories):
        return []
    return theories


def deploy_line(conn: sqlite3.Connection, tenant: str, incident: str) -> str:
    """The most relevant deploy, as the diagnosis recorded it, for the message."""
    row = conn.execute("SELECT body FROM ledger WHERE tenant = ? AND incident = ? AND kind = 'incident.diagnosed' "
                       "ORDER BY seq DESC LIMIT 1", (tenant, incident)).fetchone()
    deploy = json.loads(row[0])["data"].get("deploy") if row else None
    if not deploy:
        return ""
    risky = f"; risky: {', '.join(deploy['risky'][:3])}" if deploy.get("risky") else ""
    return f"\nMost relevant deploy: {deploy['sha'][:10]} at {deploy.get('deployed_at')}: {deploy.get('message', '')[:120]}{risky}"


def health_line(conn: sqlite3.Connection, tenant: str, incident: str) -> str:
    """``Health score: 23/100 | P95: 2.8s | Errors: 19%`` from the reading that opened the incident."""
    row = conn.execute("SELECT body FROM ledger WHERE tenant = ? AND incident = ? AND kind = 'incident.detected' "
                       "ORDER BY seq LIMIT 1", (tenant, incident)).fetchone()
    reading = json.loads(row[0])["data"].get("reading") if row else None
    if not isinstance(reading, dict):
        return ""
    parts = []
    if isinstance(reading.get("health_score"), (int, float)):
        parts.append(f"Health score: {reading['health_score']:.0f}/100")
    if isinstance(reading.get("p95_ms"), (int, float)):
        parts.append(f"P95: {reading['p95_ms'] / 1000:.1f}s")
    if isinstance(reading.get("error_rate"), (int, float)):
        parts.append(f"Errors: {reading['error_rate'] * 100:.0f}%")
    return " | ".join(parts)


def diagnosis_summary(conn: sqlite3.Connection, tenant: str, incident: str) -> tuple[str, str]:
    """(how sure, what) of the latest diagnosis: ``Both models agree — confidence 87%`` and its root cause."""
    row = conn.execute("SELECT body FROM ledger WHERE tenant = ? AND incident = ? AND kind = 'incident.diagnosed' "
                       "ORDER BY seq DESC LIMIT 1", (tenant, incident)).fetchone()
    if row is None:
        return "", ""
    entry = json.loads(row[0])
    data, confidence = entry["data"], entry.get("confidence")
    sure = f" — confidence {confidence}%" if confidence is not None else ""
    how = {"consensus": f"Both models agree{sure}", "heuristic": f"Rule-based diagnosis (no AI answer){sure}"}.get(
        entry.get("decision") or "", f"Diagnosis{sure}")
    return how, str(data.get("root_cause") or "")


def proposal_text(inc: engine.Incident, host: str | None, theories: list[dict[str, Any]],
                  conn: sqlite3.Connection | None = None) -> str:
    """What a person approves from a phone: the health figures, the diagnosis with its confidence
    (or both theories, with what to check), and the exact action and host. Never approving blind."""
    calls = f", calling {host}" if host else " (no recovery webhook: approval is recorded only)"
    health = health_line(conn, inc.tenant, inc.id) if conn is not None else ""
    head = [f"{inc.title} ({inc.priority})"] + ([health] if health else [])
    if not theories:
        how, what = diagnosis_summary(conn, inc.tenant, inc.id) if conn is not None else ("", "")
        lines = head + ([f"{how}: {what}" if what else how] if how else [])
        return "\n".join(lines + [f"Suggested fix: {inc.action}{calls}"])
    lines = head + ["The two diagnoses disagree; choose which to trust."]
    for t in theories:
        logs = ", ".join(str(x) for x in t.get("logs_to_check", [])[:5]) or "none named"
        lines.append(f"Theory {t['label']} ({t.get('category', 'unknown')}, {t.get('confidence', '?')}%): "
                     f"{t.get('root_cause', '')}. Check: {logs}.")
    lines.append(f"Either approval runs: {inc.action}{calls}.")
    return "\n".join(lines)


def mint_link(db: Database, vault: SecretVault, tokens: ApprovalTokens, base_url: str, tenant: str, incident: str,
              recipient: str, choice: str | None, actor: str) -> str:
    """A fresh single-use approval link for the incident's current proposal, bound to ``recipient``
    (one of the people the proposal asked), minted on demand by ``actor`` and ledgered. For an operator
    at the appliance's shell to hand to a person when no chat channel reaches them."""
    conn = db.read_conn()
    inc = engine.get_incident(conn, tenant, incident)
    if inc.stage != engine.PROPOSED:
        raise ConflictError("incident", f"{inc.id} is {inc.stage}: there is no proposal to approve")
    proposal = approvals.proposal_number(conn, tenant, incident)
    people = sorted({r for (r,) in conn.execute(
        "SELECT recipient FROM approvals WHERE tenant = ? AND incident = ? AND proposal = ? "
        "AND recipient NOT IN ('on-call', 'chat')",
        (tenant, incident, proposal))})
    if recipient not in people:
        raise ConflictError("recipient", f"the proposal asks {', '.join(people)}, not {recipient!r}")
    choices = [t["label"] for t in dissent_theories(conn, tenant, incident)]
    if choices and choice not in choices:
        raise ConflictError("choice", f"the diagnosis dissents: choose one of {', '.join(choices)}")
    if not choices and choice is not None:
        raise ConflictError("choice", "the diagnosis does not dissent: there is nothing to choose")
    policy = load_policy(conn, tenant)
    token, claims = tokens.mint(tenant, inc.id, inc.action or "", choice, recipient,
                                ttl=policy.rules(inc.service_name).ttl_seconds)
    db.write_sync(approvals.record_request(claims, approvals.new_ref(), "cli", policy.version, actor=actor))
    return f"{base_url.rstrip('/')}/action/recover/{token}"


class Orchestrator:
    def __init__(self, db: Database, gateway: Gateway, vault: SecretVault, tokens: ApprovalTokens, base_url: str,
                 client: httpx.AsyncClient) -> None:
        self.db = db
        self.gateway = gateway
        self.vault = vault
        self.tokens = tokens
        self.base_url = base_url.rstrip("/")
        self.client = client  # owned by the runtime
        self.background: set[asyncio.Task[None]] = set()

    # --- asking for approval --------------------------------------------------------------------
    async def propose(self, inc: engine.Incident) -> None:
        """Ask for approval: one single-use link per contact (per theory, when the diagnosis is a
        dissent), and chat buttons carrying short references."""
        def facts(conn: sqlite3.Connection) -> tuple[Any, list[dict[str, Any]], str, int]:
            policy = load_policy(conn, inc.tenant)
            target = service_target(conn, self.vault, inc.tenant, inc.service_id)
            host = urlsplit(target.url).hostname if target.url else None
            theories = dissent_theories(conn, inc.tenant, inc.id)
            text = proposal_text(inc, host, theories, conn) + deploy_line(conn, inc.tenant, inc.id)
            return policy, theories, text, approvals.proposal_number(conn, inc.tenant, inc.id)
        policy, theories, text, proposal = await self.db.read(facts)
        rules = policy.rules(inc.service_name)
        choices: list[str | None] = [t["label"] for t in theories] or [None]
        event = "dissent" if theories else "proposed"
        # the proposal's number: a typed approval names it (APPROVE K7QM-2), so a late answer to an
        # earlier proposal can never approve this one
        data = {"service": inc.service_name, "action": inc.action, "proposal": proposal}
        # one link per recipient routing picks, bound to that recipient (and only in their message)
        people = await self.gateway.recipients(Message(inc.tenant, inc.id, event, inc.priority, text, data=data)) \
            or ["on-call"]   # nobody to tell: the buttons still need an approval request to point at
        if await self.gateway.is_shadow(inc.tenant):
            await self.gateway.suppress(inc.tenant, "token", inc.id, policy.version,
                                        {"action": inc.action, "recipients": [identity_fingerprint(p) for p in people],
                                         "choices": choices, "ttl_seconds": rules.ttl_seconds})
            await self.gateway.notify(Message(inc.tenant, inc.id, "proposed", inc.priority, text,
                                              data={"service": inc.service_name, "action": inc.action}),
                                      policy_version=policy.version)
            return
        links: dict[str, str] = {}
        # Each person's message carries their own link and their own chat buttons (references bound
        # to them: decide_by_chat); a shared chat or webhook gets the "chat" request's buttons, which
        # only the service's allowed approvers can use.
        refs: dict[str, dict[str, str]] = {}
        for choice in choices:
            for person in [*people, "chat"]:
                token, claims = self.tokens.mint(inc.tenant, inc.id, inc.action or "", choice, person,
                                                 ttl=rules.ttl_seconds)
                ref = approvals.new_ref()
                refs.setdefault("*" if person == "chat" else person, {})[choice or ""] = ref
                await self.db.write(approvals.record_request(claims, ref, "chat" if person == "chat" else "link",
                                                             policy.version))
                if person != "chat":
                    links[person if choice is None else f"{person} (trust {choice})"] = \
                        f"{self.base_url}/action/recover/{token}"
        await self.gateway.notify(Message(inc.tenant, inc.id, event, inc.priority,
                                          text, recipient=", ".join(people), links=links, refs=refs, data=data),
                                  policy_version=policy.version)

    # --- a human decides ------------------------------------------------------------------------
    async def decide_by_link(self, token: str, decision: str) -> Verdict:
        claims = self.tokens.read(token)
        approvals.check_claims(await self.db.read(approvals.find_approval, jti=claims.jti, tenant=claims.tenant),
                               claims)
        return await self._decide((claims.jti, None), claims.tenant, f"link:{claims.recipient}", decision, "link")

    async def decide_by_chat(self, tenant: str, ref: str, user: str, channel: str, decision: str) -> Verdict:
        """A chat button or reply. A reference sent to a person is theirs alone: only their own
        address on ``channel`` may use it, and the approval counts as theirs (``person:<id>``, as
        their link would), the channel's identity ledgered beside it. A shared chat's reference
        may be used by the service's allowed approvers on that channel."""
        def facts(conn: sqlite3.Connection) -> tuple[approvals.Approval, engine.Incident, Any, list[str], str | None]:
            approval = approvals.find_approval(conn, ref=ref, tenant=tenant)
            inc = engine.get_incident(conn, tenant, approval.incident)
            if approval.recipient.startswith("person:"):
                try:
                    return approval, inc, get_person(conn, tenant, approval.recipient.partition(":")[2]), [], None
                except NotFoundError:
                    return approval, inc, None, [], None
            target = service_target(conn, self.vault, tenant, inc.service_id)
            # the ids listed for this channel, and the addresses on it of the people and teams named in "people"
            named = expand(conn, tenant, [str(r) for r in target.approvers.get("people", [])])
            allowed = [str(i) for i in target.approvers.get(channel, [])] + \
                [p.addresses[channel] for p in named if channel in p.addresses]
            # someone the tenant knows (a person, a service contact) counts as that person, whichever way
            # they approve (their link, their own buttons, a shared chat): never twice for the two-person rule
            return approval, inc, None, allowed, chat.allowed(conn, tenant, inc, channel, user) if user in allowed else None
        approval, inc, person, allowed, who = await self.db.read(facts)
        identity = f"{channel}:{user}"
        if approval.recipient.startswith("person:"):
            if person is None or not person.addresses.get(channel) or \
                    not hmac.compare_digest(person.addresses[channel].encode(), user.encode("utf-8", "surrogatepass")):
                await self.db.append(LedgerEvent(
                    kind="approval.refused", tenant=tenant, incident=inc.id, stage=inc.stage,
                    actor=f"engineer:{identity}", decision="not_yours",
                    reason=f"the approval was sent to someone else than this {channel} user",
                    data={"user": identity_fingerprint(identity), "via": channel, "ref": ref}))
                return Verdict("not_yours", inc, approval, detail="this was sent to someone else")
            return await self._decide((approval.jti, None), tenant, approval.recipient, decision, channel, identity)
        if user not in allowed:
            await self.db.append(LedgerEvent(
                kind="approval.refused", tenant=tenant, incident=inc.id, stage=inc.stage, actor=f"engineer:{identity}",
                decision="not_an_approver", reason=f"{channel} user is not an allowed approver of this service",
                data={"user": identity_fingerprint(identity), "via": channel, "ref": ref}))
            return Verdict("not_an_approver", inc, approval, detail="you are not an allowed approver")
        approver = who if who is not None and not who.startswith("approver:") else identity
        jti = approval.jti
        if approval.used_at is not None and approval.used_by != approver:
            jti = await self.db.write(self._second_approval(approval))  # the two-person rule: a fresh approval
        return await self._decide((jti, None), tenant, approver, decision, channel, identity)

    def _second_approval(self, first: approvals.Approval) -> Callable[[WriteTx], str]:
        def write(tx: WriteTx) -> str:
            jti = secrets.token_hex(16)
            tx.execute("INSERT INTO approvals (jti, ref, tenant, incident, proposal, action, choice, recipient, "
                       "created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (jti, approvals.new_ref(), first.tenant, first.incident, first.proposal, first.action,
                        first.choice, "chat", utc_timestamp(), first.expires))
            return jti
        return write

    async def _decide(self, key: tuple[str | None, str | None], tenant: str, approver: str, decision: str,
                      via: str, vouched: str | None = None) -> Verdict:
        def facts(conn: sqlite3.Connection) -> tuple[engine.Incident, Any]:
            approval = approvals.find_approval(conn, jti=key[0], ref=key[1], tenant=tenant)
            return engine.get_incident(conn, tenant, approval.incident), load_policy(conn, tenant)
        inc, policy = await self.db.read(facts)
        required = policy.rules(inc.service_name).required
        verdict = await self.db.write(approvals.consume(key, tenant, approver, decision, via, required, policy.version,
                                                        vouched=vouched))
        if verdict.outcome == "authorized":
            self._spawn(self.execute(verdict))
        elif verdict.outcome == "rejected":
            await self.gateway.notify(Message(tenant, inc.id, "rejected", inc.priority,
                                              f"{approver} rejected {inc.action!r}"), policy_version=policy.version)
        return verdict

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # --- running what was authorized ------------------------------------------------------------
    async def execute(self, verdict: Verdict) -> engine.Incident:
        inc = verdict.incident
        policy = await self.db.read(load_policy, inc.tenant)
        target = await self.db.read(service_target, self.vault, inc.tenant, inc.service_id)
        key = approvals.idempotency_key(inc.tenant, inc.id, verdict.approval.jti)
        payload = {"incident": inc.id, "action": inc.action, "choice": verdict.approval.choice,
                   "approved_by": list(verdict.approvers) or [verdict.approval.used_by],
                   "approved_at": verdict.approval.used_at, "idempotency_key": key, "tenant": inc.tenant,
                   "service": inc.service_name}
        running = await engine.run(self.db, engine.transition(
            inc.tenant, inc.id, engine.EXECUTING, "orchestrator", decision="executing", policy_version=policy.version,
            reason=f"calling the recovery webhook of {inc.service_name}",
            data={"host": urlsplit(target.url).hostname if target.url else None, "idempotency_key": key}))
        shadow = await self.gateway.is_shadow(inc.tenant)
        if shadow or not target.url or not target.secret:
            why = "shadow mode" if shadow else "the service has no recovery webhook"
            if why == "shadow mode":
                await self.gateway.suppress(inc.tenant, "webhook", inc.id, policy.version, {"payload": payload})
            return await self._failed(running, policy.version, why, payload, target, (), None)
        result = await post_signed(self.client, target.url, target.secret, payload, idempotency_key=key)
        attempts = [{"n": a.number, "status": a.status, "error": a.error, "ms": round(a.duration_ms, 1)}
                    for a in result.attempts]
        if not result.delivered:
            return await self._failed(running, policy.version, result.detail, payload, target, attempts,
                                      result.final_status)
        window = policy.rules(inc.service_name, target.overrides).verification_window

        def executed(tx: WriteTx) -> engine.Incident | engine.IllegalTransitionError:
            moved = engine.apply_transition(
                tx, running, engine.EXECUTED, "orchestrator", decision="executed", policy_version=policy.version,
                reason=f"recovery webhook answered {result.final_status}",
                data={"status": result.final_status, "attempts": attempts, "idempotency_key": key,
                      "verification_window": window})
            # a stored deadline: if the service has not recovered by then, policy says so (a restart loses none)
            timers.schedule(tx, inc.tenant, inc.id, "verify_recovery", timers.due_in(window),
                            {"window": window, "policy_version": policy.version})
            return moved
        done = await engine.run(self.db, executed)
        await self.gateway.notify(Message(inc.tenant, inc.id, "executed", inc.priority,
                                          f"{inc.action} ran (HTTP {result.final_status}); watching {window:g} s "
                                          "for recovery", data={"service": inc.service_name}),
                                  policy_version=policy.version)
        return done

    async def _failed(self, inc: engine.Incident, policy_version: str, detail: str, payload: dict[str, Any],
                      target: Target, attempts: Any, status: int | None) -> engine.Incident:
        letter = "dlq_" + secrets.token_hex(8)

        def write(tx: WriteTx) -> engine.Incident | engine.IllegalTransitionError:
            tx.execute("INSERT INTO dead_letters (id, tenant, incident, url, payload, attempts, final_status, detail, "
                       "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (letter, inc.tenant, inc.id, target.url or "", json.dumps(payload), json.dumps(attempts),
                        status, detail, utc_timestamp()))
            return engine.apply_transition(tx, inc, engine.FAILED, "orchestrator", decision="failed",
                                           policy_version=policy_version, reason=f"recovery failed: {detail}",
                                           data={"status": status, "attempts": attempts, "dead_letter": letter})
        failed = await engine.run(self.db, write)
        await self.gateway.notify(Message(inc.tenant, inc.id, "failed", inc.priority,
                                          f"{inc.action} failed: {detail}. Dead letter {letter}."),
                                  policy_version=policy_version)
        return failed

    # --- deadlines ------------------------------------------------------------------------------
    async def on_timer(self, timer: Timer) -> None:
        if timer.kind == "verify_recovery" and timer.incident is not None:
            await self._verify_recovery(timer)
            return
        if timer.kind != "approval_expiry" or timer.incident is None:
            return
        policy = await self.db.read(load_policy, timer.tenant)
        try:
            expired = await engine.run(self.db, approvals.expire(timer.tenant, timer.incident,
                                                                 int(timer.data.get("proposal", 0)), policy.version))
        except NotFoundError:
            return
        if expired is not None:
            await self.gateway.notify(Message(timer.tenant, timer.incident, "expired", expired.priority,
                                              "no approval in time: the proposal expired"),
                                      policy_version=policy.version)

    async def _verify_recovery(self, timer: Timer) -> None:
        """The verification window after a recovery ran is over. Recovered (or resolved) meanwhile:
        nothing to do. Still EXECUTED: the recovery did not work. Policy records FAILED
        (``not_recovered``), the responders are told, and policy proposes again: a new approval."""
        assert timer.incident is not None
        try:
            inc = await self.db.read(engine.get_incident, timer.tenant, timer.incident)
        except NotFoundError:
            return
        if inc.stage != engine.EXECUTED:
            return
        policy = await self.db.read(load_policy, timer.tenant)
        window = timer.data.get("window")
        failed = await engine.run(self.db, engine.transition(
            inc.tenant, inc.id, engine.FAILED, "policy", decision="not_recovered", policy_version=policy.version,
            reason=f"the recovery ran but {inc.service_name or 'the service'} is still failing after {window} s",
            data={"window": window}))
        if not isinstance(failed, engine.Incident):
            return
        await self.gateway.notify(Message(
            inc.tenant, inc.id, "not_recovered", inc.priority,
            f"{inc.action} ran but {inc.service_name or 'the service'} is still failing after {window} s. "
            "A new approval is needed to try again.", data={"service": inc.service_name, "stage": failed.stage}),
            policy_version=policy.version)
        if inc.action:
            again = await engine.run(self.db, engine.transition(
                inc.tenant, inc.id, engine.PROPOSED, "policy", decision="propose", policy_version=policy.version,
                reason="policy proposes again: the recovery did not work", data={"action": inc.action}))
            if isinstance(again, engine.Incident):
                await self.propose(again)

    async def close(self) -> None:
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
