"""Declared endpoints: each route states its access (public or a permission), its request and
response schemas; one wrapper authenticates, authorises, validates and maps errors for all of them.
The OpenAPI document and the attack-matrix test are generated from the same declarations."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ConflictError, FieldError, NotFoundError, StoreError
from ..incidents.engine import IllegalTransitionError
from ..ledger.entry import utc_timestamp
from ..schema import validate
from ..tenancy.access import AccessError, Principal, authenticate, authorize
from ..tenancy.tenants import get_tenant, integration_tenant, touch_key
from .body import MAX_BODY, ApiError, decode_json, read_body
from .throttle import TooManyFailuresError, failed_auth

log = logging.getLogger("alertengine.web")
ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                            "field": {"type": "string"}}}},
}


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    """The one error shape every endpoint answers with."""
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status)


@dataclass
class Call:
    """What a handler gets: the request, its caller, the tenant in its path, its validated body."""

    request: Request
    principal: Principal | None
    tenant: str | None
    body: Any
    params: dict[str, Any]  # path parameters, and the declared query parameters that were given

    @property
    def state(self) -> Any:
        return self.request.app.state

    @property
    def actor(self) -> str:
        return self.principal.actor if self.principal else "anonymous"

    @property
    def engineer(self) -> str:
        """How the ledger names a human acting through an API key."""
        assert self.principal is not None
        return f"engineer:key:{self.principal.key_id}"

    def own_tenant(self) -> str:
        """The tenant of a path without one: the caller's own (an appliance admin, which has none,
        uses the same path under /api/tenants/{tenant})."""
        if self.tenant is not None:
            return self.tenant
        if self.principal is None or self.principal.tenant is None:
            raise ApiError(400, "tenant_required", "an appliance-admin key has no tenant: use the same path under "
                                                   "/api/tenants/{tenant}")
        return self.principal.tenant


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    permission: str | None          # None only together with public=True
    public: bool = False
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    status: int = 200
    tags: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()
    validate_request: bool = True  # False: the handler validates (the schema is still published)
    query: dict[str, dict[str, Any]] | None = None  # query parameters: name -> schema (integer or string)
    media_type: str = "application/json"           # of a successful response
    also_media: tuple[str, ...] = ()                # other media types a successful response may have
    integration: bool = False   # authenticated by a tenant's ingest key (path {key}, bearer header, or body_key)
    body_key: str | None = None  # with integration: the body field that may carry the key (PagerDuty routing_key)
    max_body: int = 256 * 1024

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


@dataclass
class Registry:
    endpoints: list[Endpoint] = field(default_factory=list)

    def route(self, method: str, path: str, *, summary: str, permission: str | None = None, public: bool = False,
              request: dict | None = None, response: dict | None = None, status: int = 200,
              tags: tuple[str, ...] = (), errors: tuple[int, ...] = (), validate_request: bool = True,
              query: dict[str, dict[str, Any]] | None = None, media_type: str = "application/json",
              also_media: tuple[str, ...] = (), integration: bool = False, body_key: str | None = None,
              max_body: int = 256 * 1024) -> Callable[[Handler], Handler]:
        if [public, permission is not None, integration].count(True) != 1:
            raise ValueError(f"{method} {path}: declare exactly one of public=True, a permission or integration=True")

        def register(fn: Handler) -> Handler:
            self.endpoints.append(Endpoint(method, path, fn, summary, permission, public, request, response, status,
                                           tags, errors, validate_request, query, media_type, also_media,
                                           integration, body_key, max_body))
            return fn
        return register

    def routes(self) -> list[Route]:
        out = []
        for ep in self.endpoints:
            route = Route(ep.path, _wrap(ep), methods=[ep.method], name=ep.operation_id)
            route.endpoint.__alertengine_endpoint__ = ep  # type: ignore[attr-defined]
            out.append(route)
        return out


def _wrap(ep: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            call = await _prepare(ep, request)
            result = await ep.handler(call)
        except ApiError as e:
            return error_response(e.status, e.code, e.message, e.field)
        except AccessError as e:
            return error_response(e.status, e.code, e.message)
        except TooManyFailuresError:
            reply = error_response(429, "too_many_requests", "too many failed authentications from your address "
                                                             "at once; retry later")
            reply.headers["Retry-After"] = "5"
            return reply
        except ConflictError as e:
            return error_response(409, "conflict", e.message, e.field)
        except IllegalTransitionError as e:
            return error_response(409, "illegal_transition", str(e))
        except FieldError as e:  # schema, URL policy, ledger input
            return error_response(422, "invalid", e.message, e.field or None)
        except NotFoundError as e:
            return error_response(404, "not_found", f"{e.what} not found")
        except StoreError as e:  # transient: the sender should retry
            log.error("store error on %s %s: %s", ep.method, ep.path, e)
            reply = error_response(503, "unavailable", "the appliance could not store this now; retry shortly")
            reply.headers["Retry-After"] = "5"
            return reply
        if isinstance(result, Response):
            return result
        return JSONResponse(result, status_code=ep.status)
    endpoint.__name__ = ep.operation_id
    return endpoint


def _no_nul(params: dict[str, Any], request: Request) -> None:
    """A NUL character in the path or the query is refused: no name or id holds one, and
    PostgreSQL stores no NUL in text."""
    for name, value in params.items():
        if isinstance(value, str) and "\x00" in value:
            raise ApiError(400, "bad_request", "the path holds a NUL character (%00)", name)
    if "\x00" in request.url.query or "%00" in request.url.query:
        for name, value in request.query_params.multi_items():
            if "\x00" in value or "\x00" in name:
                raise ApiError(400, "bad_request", "the query holds a NUL character (%00)", name)


async def _prepare(ep: Endpoint, request: Request) -> Call:
    state = request.app.state
    params = dict(request.path_params)
    _no_nul(params, request)
    principal = None
    tenant = params.get("tenant")
    if ep.integration:
        return await _prepare_ingest(ep, request, params)
    if not ep.public:
        principal = await _authenticate(request)
        assert ep.permission is not None
        authorize(principal, ep.permission, tenant)
        if tenant is not None:
            await state.db.read(get_tenant, tenant)  # 404 only for the appliance admin: others got 403 above
    _read_query(ep, request, params)
    body = None
    if ep.request is not None:
        body = await _json_body(request, ep.max_body, form_label_ok=principal is not None)
        if ep.validate_request:
            validate(ep.request, body)
    return Call(request, principal, tenant, body, params)


def _read_query(ep: Endpoint, request: Request, params: dict[str, Any]) -> None:
    """The declared query parameters that were given, checked against their schemas, into ``params``."""
    for name, schema in (ep.query or {}).items():
        raw = request.query_params.get(name)
        if raw is None:
            continue
        value: Any = raw
        if schema.get("type") == "integer":
            if not re.fullmatch(r"-?[0-9]{1,18}", raw):
                raise ApiError(422, "invalid", "must be an integer", name)
            value = int(raw)
        validate(schema, value, name)
        params[name] = value


async def _prepare_ingest(ep: Endpoint, request: Request, params: dict[str, Any]) -> Call:
    """Ingest endpoints: the tenant is whoever owns the ingest key, wherever the sender puts it."""
    _no_nul(params, request)
    body = await _json_body(request, ep.max_body)
    key = params.pop("key", None)
    if key is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    if key is None and ep.body_key and isinstance(body, dict) and isinstance(body.get(ep.body_key), str):
        key = body[ep.body_key]
    found = await request.app.state.db.read(integration_tenant, key)
    if found is None:
        await failed_auth(request, "ingest key")
        raise AccessError(401, "unauthenticated", "an ingest integration key is required (URL, bearer header"
                          + (f" or {ep.body_key}" if ep.body_key else "") + ")")
    params["integration"] = found[1]
    _read_query(ep, request, params)
    return Call(request, None, found[0], body, params)


async def _authenticate(request: Request) -> Principal:
    state = request.app.state
    try:
        principal = await state.db.read(authenticate, request.headers.get("authorization"))
    except AccessError:
        await failed_auth(request, "API key")
        raise
    _touch(request, principal)
    return principal


def _touch(request: Request, principal: Principal) -> None:
    """Record last use, at most once a minute per key, without delaying the request."""
    state = request.app.state
    now = time.monotonic()
    if now - state.key_touched.get(principal.key_id, -1e9) < 60:
        return
    state.key_touched[principal.key_id] = now
    task = asyncio.get_running_loop().create_task(state.db.write(touch_key(principal.key_id, utc_timestamp())))
    state.background.add(task)
    task.add_done_callback(state.background.discard)


async def _json_body(request: Request, limit: int = MAX_BODY, form_label_ok: bool = False) -> Any:
    """The request's JSON body. ``form_label_ok``: the caller authenticated with a bearer key, and
    a JSON body labelled ``application/x-www-form-urlencoded`` (what ``curl -d`` sends without
    ``-H "Content-Type: application/json"``, as seed 003's examples do) is read as JSON. That label
    is refused elsewhere because a browser may send it cross-site without asking; a cross-site
    request can never carry an Authorization header without asking, so here it is safe."""
    raw = await read_body(request, limit)
    ctype = request.headers.get("content-type", "")
    lenient = form_label_ok and ctype.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"
    if raw and "json" not in ctype and not lenient:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    return decode_json(raw)
