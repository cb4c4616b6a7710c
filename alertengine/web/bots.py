"""Chat-bot webhooks: Telegram's callback buttons approve or reject a proposed recovery, and
acknowledge, resolve or silence an incident (``ak|rs|sl:<incident>``; recovery/chat.py says who may).

``POST /bot/telegram/{tenant}`` is authenticated by Telegram's ``X-Telegram-Bot-Api-Secret-Token``
(the tenant's telegram ``webhook_secret``); a tenant without one, or a wrong header, gets the same
401. Buttons carry ``ap:<approval ref>:y|n``, never a token. Only the service's allowed approvers
count; the approver recorded is the Telegram user."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.responses import JSONResponse

from ..errors import NotFoundError
from ..notify.channels.settings import channel_secrets
from ..notify.channels.telegram import CallbackQuery, TelegramClient, parse_callback, secret_token_ok
from ..recovery import chat
from .body import ApiError, decode_json, read_body
from .routing import Call, Registry
from .throttle import failed_auth

bots_api = Registry()
MAX_UPDATE = 64 * 1024  # a callback update is a few KiB; Telegram messages are at most 4096 characters
_DATA = re.compile(r"^ap:([a-z0-9]{12}):([yn])$")
_INCIDENT = re.compile(r"^(ak|rs|sl):(INC-[0-9]{1,15})$")
_DONE = {"acknowledged": "acknowledged", "resolved": "resolved", "silenced": "silenced for 1 h"}
_ACTION_ANSWERS = {"acknowledged": "Acknowledged: the escalation stops.", "resolved": "Resolved.",
                   "silenced": "Silenced for 1 hour.", "already": "Already acknowledged.",
                   "closed": "This incident is closed.", "unknown": "No such incident.",
                   "not_allowed": "You are not one of this tenant's responders.",
                   "cannot_silence": "Nothing to silence this incident by."}
_ANSWERS = {"authorized": "Approved: the recovery runs now.", "waiting": "Approval recorded: one more person must approve.",
            "rejected": "Rejected: the action will not run.", "already_used": "Already decided.",
            "expired": "This approval has expired.", "not_proposed": "Nothing to approve any more.",
            "not_an_approver": "You are not an allowed approver for this service.",
            "not_yours": "These buttons were sent to someone else: only they can use them."}


async def _client(call: Call, tenant: str, secrets: dict[str, str]) -> TelegramClient | None:
    row = await call.state.db.read(lambda conn: conn.execute(
        "SELECT config FROM channels WHERE tenant = ? AND kind = 'telegram'", (tenant,)).fetchone())
    if row is None or not secrets.get("bot_token"):
        return None
    base = json.loads(row[0]).get("api_base_url") or "https://api.telegram.org"
    return TelegramClient(base, secrets["bot_token"], call.state.runtime.http)


@bots_api.route("POST", "/bot/telegram/{tenant}", public=True, tags=("chat bots",), errors=(400, 401, 404, 413, 429),
                summary="Telegram bot webhook (authenticated by X-Telegram-Bot-Api-Secret-Token)",
                response={"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"},
                                                                               "outcome": {"type": "string"}}})
async def telegram_webhook(call: Call) -> Any:
    tenant = call.params["tenant"]
    secrets = (await call.state.db.read(channel_secrets, tenant, "telegram", call.state.vault)) \
        if len(tenant) <= 64 else {}
    if not secret_token_ok(call.request.headers.get("x-telegram-bot-api-secret-token"), secrets.get("webhook_secret", "")):
        await failed_auth(call.request, "Telegram webhook secret")
        raise ApiError(401, "unauthenticated", "missing or wrong X-Telegram-Bot-Api-Secret-Token")
    raw = await read_body(call.request, MAX_UPDATE)
    try:
        query = parse_callback(decode_json(raw))
    except ValueError as exc:
        raise ApiError(400, "bad_payload", f"not a Telegram update: {exc}") from None
    if query is None:
        return {"ok": True, "outcome": "ignored"}
    match = _DATA.match(query.data)
    client = await _client(call, tenant, secrets)
    action = _INCIDENT.match(query.data)
    if action is not None:
        return await _incident_action(call, tenant, client, query, *action.groups())
    if match is None:
        if client:
            await client.answer_callback(query.id, "Unknown button.")
        return {"ok": True, "outcome": "unknown_button"}
    ref, choice = match.groups()
    try:
        verdict = await call.state.orchestrator.decide_by_chat(tenant, ref, str(query.user_id), "telegram",
                                                               "approve" if choice == "y" else "reject")
        outcome = verdict.outcome
    except NotFoundError:
        outcome = "not_proposed"
    if client:
        await client.answer_callback(query.id, _ANSWERS.get(outcome, outcome))
        if outcome in ("authorized", "rejected") and query.chat_id is not None and query.message_id is not None:
            verb = "approved" if outcome == "authorized" else "rejected"
            await client.edit_message(query.chat_id, query.message_id,
                                      f"{verdict.incident.id}: {verdict.incident.action} {verb} by {query.user_name}.")
    return JSONResponse({"ok": True, "outcome": outcome})


async def _incident_action(call: Call, tenant: str, client: TelegramClient | None, query: CallbackQuery, code: str,
                           incident: str) -> Any:
    """Acknowledge, resolve or silence from a button; the message then shows who did what."""
    result = await chat.act(call.state.db, tenant, incident, "telegram", str(query.user_id), code)
    if client:
        await client.answer_callback(query.id, _ACTION_ANSWERS.get(result.outcome, result.outcome))
        if result.outcome in _DONE and query.chat_id is not None and query.message_id is not None:
            await client.edit_message(query.chat_id, query.message_id,
                                      f"{incident}: {_DONE[result.outcome]} by {query.user_name}.")
    return JSONResponse({"ok": True, "outcome": result.outcome})
