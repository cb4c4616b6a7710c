"""Approval pages: a read-only preview behind each single-use link, and the confirm that acts.

``GET /action/recover/{token}`` shows what would happen and changes nothing. ``POST
/action/recover/confirm`` (form: token, csrf, decision) acts once; the CSRF value is a
double-submit cookie set by the preview. Neither page is cached or sends a Referer, and the
appliance keeps no access log, so tokens are not written anywhere."""

from __future__ import annotations

import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from ..errors import NotFoundError
from ..incidents import engine
from ..recovery import approvals
from ..recovery.approvals import TokenError
from ..recovery.orchestrator import dissent_theories, service_target
from .body import ApiError, read_body
from .routing import Call, Registry
from .throttle import failed_auth

actions_api = Registry()
_pages = Environment(loader=PackageLoader("alertengine.web", "templates"), autoescape=select_autoescape(["html"]))
CSRF_COOKIE = "ae_csrf"
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"}
HTML = {"type": "string", "contentMediaType": "text/html"}


def _page(status: int, **context: Any) -> HTMLResponse:
    context.setdefault("title", context.get("heading", "AlertEngine approval"))
    return HTMLResponse(_pages.get_template("approval.html").render(**context), status_code=status, headers=_HEADERS)


def _refusal(status: int, heading: str, message: str, incident: engine.Incident | None = None) -> HTMLResponse:
    return _page(status, state="done", heading=heading, message=message, incident=incident)


def _diagnosis(conn: Any, inc: engine.Incident, choice: str | None) -> str | None:
    theories = dissent_theories(conn, inc.tenant, inc.id)
    chosen = [t for t in theories if t["label"] == choice]
    if chosen:
        t = chosen[0]
        return f"Theory {t['label']} ({t.get('category', 'unknown')}, {t.get('confidence', '?')}%): {t.get('root_cause', '')}"
    row = conn.execute("SELECT body FROM ledger WHERE tenant = ? AND incident = ? AND kind = 'incident.diagnosed' "
                       "ORDER BY seq DESC LIMIT 1", (inc.tenant, inc.id)).fetchone()
    return json.loads(row[0])["reason"] if row else None


def _preview_rows(conn: Any, claims: Any, vault: Any) -> tuple[Any, engine.Incident, Any, str | None]:
    """The approval a link names, its incident and, while it can still be decided, the recovery
    target and the diagnosis to show."""
    approval = approvals.find_approval(conn, jti=claims.jti, tenant=claims.tenant)
    approvals.check_claims(approval, claims)
    inc = engine.get_incident(conn, claims.tenant, claims.incident)
    if approval.used_at is not None or inc.stage != engine.PROPOSED:
        return approval, inc, None, None
    return approval, inc, service_target(conn, vault, inc.tenant, inc.service_id), _diagnosis(conn, inc, claims.choice)


@actions_api.route("GET", "/action/recover/{token}", public=True, response=HTML, media_type="text/html",
                   summary="Read-only preview of an approval link (authenticated by the signed, single-use token)",
                   tags=("approvals",), errors=(400, 404, 409, 410, 429))
async def preview_recovery(call: Call) -> Any:
    orchestrator = call.state.orchestrator
    try:
        claims = orchestrator.tokens.read(call.params["token"])
        approval, inc, target, diagnosis = await call.state.db.read(_preview_rows, claims, call.state.vault)
    except TokenError as exc:
        if exc.code != "expired":   # a forged or mangled link is a failed authentication
            await failed_auth(call.request, "approval link")
        return _refusal(400 if exc.code != "expired" else 410, "This link cannot be used", exc.message)
    except NotFoundError:
        return _refusal(404, "This link cannot be used", "no such approval")
    if approval.used_at is not None:
        return _refusal(409, "Already used", f"This link was already used by {approval.used_by} at {approval.used_at}.", inc)
    if inc.stage != engine.PROPOSED:
        return _refusal(409, "Nothing to approve", f"{inc.id} is {inc.stage}: there is no pending proposal.", inc)
    csrf = secrets.token_urlsafe(24)
    reply = _page(200, state="preview", incident=inc, action=approval.action, token=call.params["token"], csrf=csrf,
                  host=urlsplit(target.url).hostname if target.url else None, approver=claims.recipient,
                  seconds_left=max(0, claims.expires_at - int(time.time())), choice=claims.choice,
                  diagnosis=diagnosis,
                  title=f"Approve {inc.id}?")
    reply.set_cookie(CSRF_COOKIE, csrf, max_age=900, path="/action/recover", httponly=True, samesite="strict",
                     secure=call.request.url.scheme == "https")
    return reply


MAX_FORM = 16_384  # a token, a CSRF value and a decision; nothing legitimate comes near it


@actions_api.route("POST", "/action/recover/confirm", public=True, response=HTML, media_type="text/html",
                   summary="Approve or reject with a single-use token (form: token, csrf, decision)",
                   tags=("approvals",), errors=(400, 403, 404, 409, 410, 413, 429))
async def confirm_recovery(call: Call) -> Any:
    try:
        raw = await read_body(call.request, MAX_FORM)
    except ApiError:
        return _refusal(413, "Refused", "the form is too large")
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), strict_parsing=False).items()}
    cookie = call.request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie, form.get("csrf", "")):
        return _refusal(403, "Refused", "the request did not come from the approval page (CSRF check failed)")
    decision = form.get("decision")
    if decision not in ("approve", "reject"):
        return _refusal(400, "Refused", "choose Approve or Reject")
    try:
        verdict = await call.state.orchestrator.decide_by_link(form.get("token", ""), decision)
    except TokenError as exc:
        if exc.code != "expired":   # a forged or mangled link is a failed authentication
            await failed_auth(call.request, "approval link")
        return _refusal(400 if exc.code != "expired" else 410, "This link cannot be used", exc.message)
    except NotFoundError:
        return _refusal(404, "This link cannot be used", "no such approval")
    inc = verdict.incident
    if verdict.outcome == "authorized":
        return _page(200, state="done", heading="Approved", incident=inc,
                     message=f"Recovery authorized by {', '.join(verdict.approvers)}. {inc.action} is running now.")
    if verdict.outcome == "waiting":
        return _page(200, state="done", heading="Approval recorded", incident=inc,
                     message=f"{verdict.detail}: another person must approve before it runs.")
    if verdict.outcome == "rejected":
        return _page(200, state="done", heading="Rejected", incident=inc, message="The action will not run.")
    if verdict.outcome == "already_used":
        return _refusal(409, "Already used", f"This link was {verdict.detail}.", inc)
    return _refusal(409, "Not approved", verdict.detail.capitalize() + ".", inc)
