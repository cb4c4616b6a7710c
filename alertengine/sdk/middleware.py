"""Pure ASGI middleware: measures every HTTP request into a Monitor and serves the health endpoint.

Rules for what a request counts as:

* the response ended (final body sent) → its status, timed to that moment (background tasks after
  the response are not counted);
* otherwise, if the client went away (an ``http.disconnect`` message or a failed send) → a
  *disconnected* request: timed, never an error;
* otherwise (the app raised, or returned without finishing a response) → 500, an error.

The route is the route *template* (``/items/{item_id}``, with mount prefixes), never the raw path;
requests no route matched count as ``<unmatched>``. The health endpoint, excluded paths and
non-HTTP scopes (websocket, lifespan) are never measured. Nothing the SDK does can fail a request:
an exception inside it is counted, logged once, and the request goes on untouched.
"""

from __future__ import annotations

import hmac
import json
from time import perf_counter
from typing import Any, Awaitable, Callable, Iterable, MutableMapping

from .monitor import UNMATCHED, Monitor

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_HEALTH_PATH = "/health/alerts"
_MAX_TEMPLATES = 10_000
_MAX_DEPTH = 16


class RouteTemplates:
    """Full route templates of the routes requests ended in.

    FastAPI (with lazily included routers) names the full template of the route it chose in its own
    scope entry; it is used when present, behind the mount prefix the request came through. Otherwise
    the app's route tree is walked once (Starlette mounts and hosts included) and remembered by route
    object; a route not found there is named by its own ``path``.
    """

    def __init__(self) -> None:
        self._known: dict[int, tuple[object, str]] = {}

    def of(self, scope: Scope, root: object, route: object) -> str:
        fastapi_scope = scope.get("fastapi")
        if isinstance(fastapi_scope, dict):
            chosen = getattr(fastapi_scope.get("effective_route_context"), "path_format", None)
            if isinstance(chosen, str) and chosen.startswith("/"):
                return _mount_prefix(scope) + chosen
        entry = self._known.get(id(route))
        if entry is not None and entry[0] is route:
            return entry[1]
        found: dict[int, tuple[object, str]] = {}
        _walk(getattr(root, "routes", None), "", found, 0)
        entry = found.get(id(route))
        if entry is None or entry[0] is not route:
            path = getattr(route, "path", None)
            entry = (route, path if isinstance(path, str) and path else UNMATCHED)
            found[id(route)] = entry
        if len(found) <= _MAX_TEMPLATES:
            self._known = found
        return entry[1]


def _mount_prefix(scope: Scope) -> str:
    """The (concrete) path prefix of the Starlette mounts a request went through, if any."""
    app_root, root = scope.get("app_root_path"), scope.get("root_path", "")
    if isinstance(app_root, str) and isinstance(root, str) and root.startswith(app_root):
        return root[len(app_root):]
    return ""


def _walk(routes: object, prefix: str, out: dict[int, tuple[object, str]], depth: int) -> None:
    if depth > _MAX_DEPTH or not isinstance(routes, (list, tuple)):
        return
    for route in routes:
        path = getattr(route, "path", None)
        full = prefix + path if isinstance(path, str) else prefix
        out.setdefault(id(route), (route, full or "/"))
        try:
            children = getattr(route, "routes", None)     # Mount and Host
        except Exception:  # noqa: BLE001 — a custom route's property must not break the walk
            children = None
        if children:
            _walk(children, full, out, depth + 1)


class AlertEngineMiddleware:
    """Wrap any ASGI app: ``app = AlertEngineMiddleware(app, service_name="checkout")``.

    Monitor options (``window_seconds``, ``thresholds``, ``count_4xx`` …) go to a new Monitor unless
    ``monitor`` is given. ``routes_from`` is the app whose route tree names the templates (by default
    the Starlette app found in the request scope).
    """

    def __init__(self, app: ASGIApp, *, monitor: Monitor | None = None, health_path: str = DEFAULT_HEALTH_PATH,
                 token: str | None = None, exclude: Iterable[str] = (), routes_from: object | None = None,
                 **monitor_options: Any) -> None:
        if monitor is not None and monitor_options:
            raise TypeError(f"pass either monitor or monitor options, not both: {sorted(monitor_options)}")
        if not health_path.startswith("/"):
            raise ValueError("health_path must start with '/'")
        self.app = app
        self.monitor = monitor if monitor is not None else Monitor(**monitor_options)
        self.health_path = health_path
        self._token = token.encode() if token else None
        patterns = [p for p in exclude]
        self._exclude_exact = frozenset(p for p in patterns if not p.endswith("*"))
        self._exclude_prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
        self._routes_from = routes_from
        self._templates = RouteTemplates()

    # -- the hot path --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        health = measure = False
        root: object = None
        try:
            path = scope["path"]
            health = path == self.health_path or path == scope.get("root_path", "") + self.health_path
            measure = not health and not self._excluded(path)
            root = self._routes_from if self._routes_from is not None else scope.get("app")
        except Exception as exc:  # noqa: BLE001 — the SDK must never fail a request
            self._failed("dispatch", exc)
        if health and await self._serve_health(scope, send):
            return
        if not measure:
            await self.app(scope, receive, send)
            return

        status: Any = None
        complete = False
        disconnected = False
        ended = 0.0

        async def receive_wrapper() -> Message:
            nonlocal disconnected
            message = await receive()
            if message.get("type") == "http.disconnect":
                disconnected = True
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, complete, disconnected, ended
            try:
                kind = message["type"]
                if kind == "http.response.start":
                    status = message["status"]
            except Exception:  # noqa: BLE001 — a malformed message is for the server to refuse
                kind = None
            try:
                await send(message)
            except OSError:
                disconnected = True
                raise
            if (kind == "http.response.body" and not message.get("more_body", False)) \
                    or kind == "http.response.pathsend":
                complete = True
                ended = perf_counter()

        started = perf_counter()
        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            try:
                if complete:
                    final = status if isinstance(status, int) else 500
                elif disconnected:
                    final, ended = None, perf_counter()
                else:
                    final, ended = 500, perf_counter()
                route = scope.get("route")
                template = UNMATCHED if route is None else self._templates.of(
                    scope, root if root is not None else scope.get("app"), route)
                if not self._excluded(template):
                    self.monitor.record(scope.get("method", "GET"), template, final, (ended - started) * 1000.0)
            except Exception as exc:  # noqa: BLE001
                self._failed("record", exc)

    def _excluded(self, path: str) -> bool:
        return path in self._exclude_exact or (bool(self._exclude_prefixes) and path.startswith(self._exclude_prefixes))

    def _failed(self, where: str, exc: BaseException) -> None:
        try:
            self.monitor.note_failure(where, exc)
        except Exception:  # noqa: BLE001 — not even logging may fail a request
            pass

    # -- the health endpoint -------------------------------------------------------------------

    async def _serve_health(self, scope: Scope, send: Send) -> bool:
        """Answer the health request; False (nothing sent) when the SDK failed and the app should answer."""
        try:
            method = scope.get("method", "GET")
            if method not in ("GET", "HEAD"):
                status, body, extra = 405, b'{"error":"method not allowed"}', [(b"allow", b"GET, HEAD")]
            elif self._token is not None and not self._authorized(scope):
                status, body, extra = 401, b'{"error":"unauthorized"}', [(b"www-authenticate", b"Bearer")]
            else:
                doc = self.monitor.report().to_dict()
                status, extra = 200, []
                body = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
            headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                       (b"content-length", str(len(body)).encode()), *extra]
        except Exception as exc:  # noqa: BLE001
            self._failed("health endpoint", exc)
            return False
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        except OSError:
            pass                      # the poller went away; nothing left to do
        return True

    def _authorized(self, scope: Scope) -> bool:
        assert self._token is not None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                scheme, _, given = bytes(value).partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)
        return False


def instrument(app: Any, *, health_path: str = DEFAULT_HEALTH_PATH, token: str | None = None,
               exclude: Iterable[str] = (), monitor: Monitor | None = None, **monitor_options: Any) -> Monitor:
    """Instrument a Starlette or FastAPI app (before it starts); returns its Monitor.

    ``monitor_options`` are Monitor's: ``window_seconds``, ``bucket_seconds``, ``thresholds``,
    ``count_4xx``, ``is_error``, ``service_name``, ``instance_id``, ``max_routes``, ``clock`` …
    """
    add_middleware = getattr(app, "add_middleware", None)
    if add_middleware is None:
        raise TypeError("instrument() takes a Starlette or FastAPI app; wrap any other ASGI app in "
                        "AlertEngineMiddleware(app, ...)")
    if monitor is not None and monitor_options:
        raise TypeError(f"pass either monitor or monitor options, not both: {sorted(monitor_options)}")
    monitor = monitor if monitor is not None else Monitor(**monitor_options)
    add_middleware(AlertEngineMiddleware, monitor=monitor, health_path=health_path, token=token,
                   exclude=tuple(exclude), routes_from=app)
    return monitor
