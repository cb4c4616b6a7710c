"""Twilio's webhooks: delivery reports, WhatsApp replies and voice keypresses.

Every request must carry a valid ``X-Twilio-Signature`` made with the tenant's Twilio auth token
over the URL Twilio was given, which is the appliance's ``public_url`` plus the path and query
(behind a proxy, set ``public_url`` to the address Twilio reaches). A tenant without Twilio settings
or a wrong signature gets the same 401, and the failure is throttled like any failed authentication.

* ``POST /bot/twilio/{tenant}/status``: a message's or a call's status (notify/deliveries.py).
* ``POST /bot/twilio/{tenant}/inbound``: a WhatsApp message from a person: ``ACK K7QM``,
  ``RESOLVE K7QM``, ``APPROVE K7QM [A|B]`` or ``REJECT K7QM`` (notify/replies.py). The sender's
  number must be a person's WhatsApp address (or a service contact's); an approval uses the
  reference sent to that person, so it counts as theirs, exactly as their link would. The answer
  is a TwiML message saying what happened.
* ``POST /bot/twilio/{tenant}/voice``: the digit pressed during one of our calls; 1 acknowledges
  the incident as the person called. A call never approves anything.
"""

from __future__ import annotations

import json
import time
from typing import Any
from xml.sax.saxutils import escape

from starlette.responses import JSONResponse, Response

from ..errors import NotFoundError
from ..incidents import engine
from ..notify import deliveries, replies
from ..notify.channels.settings import channel_secrets
from ..notify.channels.twilio import CALL_STATUSES, E164, MESSAGE_STATUSES, first, form_pairs, signature_ok
from ..notify.people import list_people
from ..recovery import chat
from ..recovery.approvals import proposal_number
from .body import ApiError, read_body
from .routing import Call, Registry
from .throttle import failed_auth

twilio_api = Registry()
MAX_FORM = 64 * 1024       # Twilio's webhook forms are a few KiB
_TWIML = "text/xml; charset=utf-8"
_ACT_WORDS = {"acknowledged": "Acknowledged {incident}: the escalation stops.", "resolved": "Resolved {incident}.",
              "already": "{incident} was already acknowledged.", "closed": "{incident} is closed.",
              "not_allowed": "This number is not one of the responders.", "unknown": "No such incident."}
_DECIDE_WORDS = {"authorized": "Approved: the recovery of {incident} runs now.",
                 "waiting": "Approval recorded for {incident}: one more person must approve.",
                 "rejected": "Rejected: the action on {incident} will not run.",
                 "already_used": "You already answered this proposal.", "expired": "This approval has expired.",
                 "not_proposed": "There is nothing to approve on {incident} any more.",
                 "not_yours": "This approval was not sent to this number."}
_STATUS = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"},
                                                                 "outcome": {"type": "string"}}}


def _twiml(message: str | None = None, *, say: str | None = None) -> Response:
    inner = f"<Message>{escape(message)}</Message>" if message else f"<Say>{escape(say)}</Say>" if say else ""
    return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>', media_type=_TWIML)


async def _verified(call: Call) -> tuple[str, dict[str, str]]:
    """The tenant and the form fields of a request Twilio signed; a 401 otherwise."""
    tenant = call.params["tenant"]
    raw = await read_body(call.request, MAX_FORM)
    token = (await call.state.db.read(channel_secrets, tenant, "twilio", call.state.vault)).get("auth_token", "") \
        if len(tenant) <= 64 else ""
    query = call.request.url.query
    url = f"{call.state.config.base_url.rstrip('/')}{call.request.url.path}" + (f"?{query}" if query else "")
    try:
        pairs = form_pairs(raw)
    except ValueError:
        pairs = None
    if pairs is None or not signature_ok(token, url, pairs, call.request.headers.get("x-twilio-signature")):
        await failed_auth(call.request, "Twilio signature")
        raise ApiError(401, "unauthenticated", "missing or wrong X-Twilio-Signature")
    return tenant, dict(first(pairs))


def _clock(call: Call) -> float:
    return float(getattr(call.state, "clock", time.time)())


@twilio_api.route("POST", "/bot/twilio/{tenant}/status", public=True, tags=("chat bots",),
                  errors=(400, 401, 404, 413, 429), response=_STATUS,
                  summary="Twilio status callback of a WhatsApp message or a voice call (X-Twilio-Signature)")
async def twilio_status(call: Call) -> Any:
    tenant, form = await _verified(call)
    if form.get("CallSid"):
        sid, status, error = form["CallSid"], form.get("CallStatus", ""), form.get("ErrorCode") or None
        known = CALL_STATUSES
    elif form.get("MessageSid"):
        sid, status, error = form["MessageSid"], form.get("MessageStatus", ""), form.get("ErrorCode") or None
        known = MESSAGE_STATUSES
    else:
        raise ApiError(400, "bad_payload", "a status callback names a MessageSid or a CallSid")
    if status not in known:   # Twilio adds statuses without notice: acknowledged, not acted on
        return {"ok": True, "outcome": "ignored"}
    result = await call.state.db.write(deliveries.report(tenant, sid[:64], status, error and error[:16], _clock(call),
                                                         shadow=await call.state.gateway.is_shadow(tenant)))
    if result.requeued or result.hastened:
        call.state.runtime.sender.wake()
    return JSONResponse({"ok": True, "outcome": result.outcome})


@twilio_api.route("POST", "/bot/twilio/{tenant}/voice", public=True, tags=("chat bots",),
                  errors=(400, 401, 404, 413, 429), summary="The digit pressed during a call (TwiML answer)")
async def twilio_voice(call: Call) -> Any:
    tenant, form = await _verified(call)
    if await call.state.gateway.is_shadow(tenant):
        return _twiml()             # shadow mode: nothing leaves, not even words on a call
    known = (await call.state.db.read(deliveries.find, tenant, form.get("CallSid", "")[:64]))
    if known is None or known["channel"] != "voice" or not known["incident"]:
        return _twiml(say="This call is not about an open incident. Goodbye.")
    if form.get("Digits") != "1":
        return _twiml(say="Not acknowledged. Goodbye.")
    result = await chat.act(call.state.db, tenant, known["incident"], "voice", known["address"], "ak")
    words = {"acknowledged": "Acknowledged. The escalation stops. Goodbye.",
             "already": "It was already acknowledged. Goodbye.", "closed": "The incident is closed. Goodbye."}
    return _twiml(say=words.get(result.outcome, "You are not one of the responders. Goodbye."))


@twilio_api.route("POST", "/bot/twilio/{tenant}/inbound", public=True, tags=("chat bots",),
                  errors=(400, 401, 404, 413, 429), summary="A WhatsApp message from a person (TwiML answer)")
async def twilio_inbound(call: Call) -> Any:
    tenant, form = await _verified(call)
    number = form.get("From", "").removeprefix("whatsapp:")
    if not E164.fullmatch(number):
        return _twiml()         # not a WhatsApp sender we could ever know: nothing to say
    db = call.state.db
    await db.write(deliveries.note_inbound(tenant, "whatsapp", number, _clock(call)))
    quiet = await call.state.gateway.is_shadow(tenant)   # shadow mode: nothing leaves, not even an answer
    command = replies.parse(form.get("ButtonPayload") or form.get("Body", ""))
    if command is None:
        return _twiml(None if quiet else replies.HELP)
    by_code, quoted = await db.read(lambda conn: (
        replies.incident_of(conn, tenant, command.code) if command.code else None,
        deliveries.find(conn, tenant, form.get("OriginalRepliedMessageSid", "")[:64])))
    by_quote = quoted["incident"] if quoted else None
    if command.code and by_code is None:
        answer = f"No incident has the code {command.code}. " + replies.HELP
    elif by_code and by_quote and by_code != by_quote:
        answer = "The code and the message you replied to are about different incidents: nothing was done."
    elif not (by_code or by_quote):
        answer = replies.HELP
    else:
        answer = await _act(call, tenant, by_code or by_quote, number, command, quoted if by_quote else None)
    return _twiml(None if quiet else answer)


async def _act(call: Call, tenant: str, incident: str, number: str, command: replies.Command,
               quoted: dict[str, Any] | None) -> str:
    if command.verb in ("acknowledge", "resolve"):
        code = {"acknowledge": "ak", "resolve": "rs"}[command.verb]
        result = await chat.act(call.state.db, tenant, incident, "whatsapp", number, code)
        return _ACT_WORDS.get(result.outcome, result.outcome).format(incident=incident)
    try:
        ref = await call.state.db.read(_approval_of, tenant, incident, number, command, quoted)
    except _NoApproval as why:
        return str(why)
    verdict = await call.state.orchestrator.decide_by_chat(tenant, ref, number, "whatsapp", command.verb)
    return _DECIDE_WORDS.get(verdict.outcome, verdict.outcome).format(incident=incident)


class _NoApproval(Exception):
    """No approval reference fits the answer; the message says why, to the person."""


def _approval_of(conn: Any, tenant: str, incident: str, number: str, command: replies.Command,
                 quoted: dict[str, Any] | None) -> str:
    """The approval reference a WhatsApp answer from ``number`` decides; ``_NoApproval`` says why none."""
    person = next((p for p in list_people(conn, tenant) if p.addresses.get("whatsapp") == number), None)
    if person is None:
        raise _NoApproval("Only a person this appliance knows by this number can approve from WhatsApp.")
    try:
        inc = engine.get_incident(conn, tenant, incident)
    except NotFoundError:
        raise _NoApproval("No such incident.") from None
    if quoted is not None and command.proposal is None:
        return _quoted_reference(conn, tenant, quoted, f"person:{person.id}", command.choice, command.verb)
    return _reference(conn, tenant, inc, f"person:{person.id}", command)


def _reference(conn: Any, tenant: str, inc: engine.Incident, recipient: str, command: replies.Command) -> str:
    """The approval reference of the proposal the answer names (``K7QM-2``) sent to ``recipient``
    (for the theory ``choice``; a rejection needs none); ``_NoApproval`` says why there is none.
    Only the incident's current proposal can be answered."""
    if inc.stage != engine.PROPOSED:
        raise _NoApproval(f"There is nothing to approve on {inc.id} (it is {inc.stage.lower()}).")
    current = proposal_number(conn, tenant, inc.id)
    if command.proposal is None:
        raise _NoApproval(f"Name the proposal: reply {command.verb.upper()} {command.code}-{current} "
                          "(from our message).")
    if command.proposal != current:
        raise _NoApproval(f"That proposal on {inc.id} is no longer open: answer the newest message about it.")
    rows = conn.execute("SELECT ref, choice FROM approvals WHERE tenant = ? AND incident = ? AND recipient = ? AND "
                        "proposal = ?", (tenant, inc.id, recipient, current)).fetchall()
    return _choose(inc.id, {c: r for r, c in rows}, command.choice, command.verb)


def _quoted_reference(conn: Any, tenant: str, quoted: dict[str, Any], recipient: str, choice: str | None,
                      verb: str) -> str:
    """The approval reference carried by the quoted message itself, when it was sent to ``recipient``:
    it belongs to that message's proposal, so a late answer cannot reach a newer one."""
    row = conn.execute("SELECT recipient, body FROM outbox WHERE tenant = ? AND id = ?",
                       (tenant, quoted["outbox"])).fetchone()
    refs = json.loads(row[1]).get("refs") or {} if row is not None and row[0] == recipient else {}
    return _choose(quoted["incident"], {c or None: r for c, r in refs.items()}, choice, verb)


def _choose(incident: str, choices: dict[str | None, str], choice: str | None, verb: str) -> str:
    if not choices:
        raise _NoApproval(f"That message did not ask you to approve anything on {incident}.")
    if None in choices:
        if choice is not None:
            raise _NoApproval("This proposal has no theories to choose from.")
        return choices[None]
    if verb == "reject" and choice is None:
        return choices[min(c for c in choices if c)]
    if choice not in choices:
        raise _NoApproval("The diagnoses disagree: reply APPROVE <code> "
                          + " or ".join(sorted(c for c in choices if c)) + ".")
    return choices[choice]

