"""Slack's interactivity endpoint: the buttons of our Slack messages.

``POST /bot/slack/{tenant}`` (the app's Interactivity Request URL) is authenticated by Slack's
request signature with the tenant's slack ``signing_secret``: ``v0`` HMAC-SHA256 over the
timestamp and the exact body, refused when the timestamp is more than five minutes from the
appliance's clock, compared in constant time. A tenant without a signing secret, a stale or a
wrong signature all get the same 401.

Who may press what follows the other chat channels: Approve / Reject (and Trust A / Trust B) in a
person's message are theirs alone (recovery/orchestrator.py ``decide_by_chat``); in a shared channel
only the service's allowed approvers on Slack count. Acknowledge / Resolve / Silence need a person
or contact the tenant knows by that Slack user id (recovery/chat.py). The message is then updated
with the outcome (``chat.update``), its buttons removed; Slack gets its 200 at once either way.
"""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.responses import JSONResponse

from ..errors import NotFoundError
from ..notify.channels.settings import channel_secrets
from ..notify.channels.remote import SlackChannel
from ..notify.channels.slack import Interaction, parse_interaction, signature_ok
from ..notify.message import Message
from ..recovery import chat
from .body import ApiError, read_body
from .routing import Call, Registry
from .throttle import failed_auth

slack_api = Registry()
MAX_PAYLOAD = 64 * 1024
_APPROVAL = re.compile(r"^ap:([a-z0-9]{12}):([yn])$")
_INCIDENT = re.compile(r"^(ak|rs|sl):(INC-[0-9]{1,15})$")
# Outcomes the message is updated with (its buttons then go). Not "waiting": in a shared channel the
# second approver still needs the buttons.
_DONE = {"authorized": "approved", "rejected": "rejected", "acknowledged": "acknowledged", "resolved": "resolved",
         "silenced": "silenced for 1 h"}


@slack_api.route("POST", "/bot/slack/{tenant}", public=True, tags=("chat bots",), errors=(400, 401, 404, 413, 429),
                 summary="Slack interactivity (buttons), authenticated by X-Slack-Signature",
                 response={"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"},
                                                                                "outcome": {"type": "string"}}})
async def slack_interaction(call: Call) -> Any:
    tenant = call.params["tenant"]
    raw = await read_body(call.request, MAX_PAYLOAD)
    secrets = await call.state.db.read(channel_secrets, tenant, "slack", call.state.vault) if len(tenant) <= 64 else {}
    now = float(getattr(call.state, "clock", time.time)())
    headers = call.request.headers
    if not signature_ok(secrets.get("signing_secret", ""), headers.get("x-slack-request-timestamp"),
                        headers.get("x-slack-signature"), raw, now):
        await failed_auth(call.request, "Slack signature")
        raise ApiError(401, "unauthenticated", "missing, stale or wrong X-Slack-Signature")
    try:
        press = parse_interaction(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_payload", f"not a Slack interaction: {exc}") from None
    if press is None:
        return {"ok": True, "outcome": "ignored"}
    approval, action = _APPROVAL.match(press.value), _INCIDENT.match(press.value)
    incident = None
    if approval is not None:
        ref, choice = approval.groups()
        try:
            verdict = await call.state.orchestrator.decide_by_chat(tenant, ref, press.user_id, "slack",
                                                                   "approve" if choice == "y" else "reject")
            outcome, incident = verdict.outcome, verdict.incident.id
        except NotFoundError:
            outcome = "not_proposed"
    elif action is not None:
        code, incident = action.groups()
        outcome = (await chat.act(call.state.db, tenant, incident, "slack", press.user_id, code)).outcome
    else:
        outcome = "unknown_button"
    if outcome in _DONE and incident is not None:
        await _update(call, tenant, press, incident, f"{incident}: {_DONE[outcome]} by {press.user_name}")
    return JSONResponse({"ok": True, "outcome": outcome})


async def _update(call: Call, tenant: str, press: Interaction, incident: str, outcome: str) -> None:
    """Show who did what in place of the buttons (best effort: the decision is already recorded). The
    channel is built from the tenant's settings as the outbox builds it."""
    if not (press.channel_id and press.message_ts) or await call.state.gateway.is_shadow(tenant):
        return
    sender = call.state.runtime.sender
    channel = await call.state.db.read(lambda _conn: sender.resolve(tenant, "slack", press.channel_id))
    if not isinstance(channel, SlackChannel):
        return
    inc = await call.state.db.read(lambda conn: conn.execute(
        "SELECT priority, title FROM incidents WHERE tenant = ? AND id = ?", (tenant, incident)).fetchone())
    message = Message(tenant, incident, "answered", inc[0] if inc else "P3", inc[1] if inc else incident)
    await channel.client.update_message(press.channel_id, press.message_ts, message, outcome)
