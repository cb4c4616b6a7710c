"""FastAPI and plain Starlette apps served by uvicorn on 127.0.0.1, measured through a real HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from typing import Any, Callable, Iterator

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi import HTTPException as FastAPIHTTPException
from fastapi.responses import StreamingResponse as FastAPIStreamingResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route

from alertengine.sdk import UNMATCHED, AlertEngineMiddleware, Monitor, instrument
from alertengine.sdk.window import RouteStats
from tests.waiting import wait_for

HEALTH = "/health/alerts"


@contextlib.contextmanager
def serve(app: Any, *, lifespan: str = "on", log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 (an ephemeral port) in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, log_level=log_level,
                                           lifespan=lifespan, access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), what="uvicorn started")
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def _chunks(count: int, pause: float) -> Any:
    for _ in range(count):
        await asyncio.sleep(pause)
        yield b"chunk\n"


def starlette_app() -> Starlette:
    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.path_params["item_id"]})

    def sync_item(request: Request) -> JSONResponse:          # runs in the thread pool
        time.sleep(0.001)
        return JSONResponse({"n": request.path_params["n"]})

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(_chunks(5, 0.03), media_type="text/plain")

    async def endless(request: Request) -> StreamingResponse:
        return StreamingResponse(_chunks(400, 0.02), media_type="text/plain")

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("the app failed")

    async def missing(request: Request) -> JSONResponse:
        raise HTTPException(404)

    async def user(request: Request) -> JSONResponse:
        return JSONResponse({"uid": request.path_params["uid"]})

    return Starlette(routes=[
        Route("/items/{item_id}", item), Route("/sync/{n}", sync_item), Route("/stream", stream),
        Route("/endless", endless), Route("/boom", boom), Route("/missing", missing),
        Mount("/api", routes=[Route("/users/{uid}", user)])])


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict:
        return {"id": item_id}

    @app.get("/sync/{n}")
    def sync_item(n: int) -> dict:                           # runs in the thread pool
        time.sleep(0.001)
        return {"n": n}

    @app.get("/stream")
    async def stream() -> FastAPIStreamingResponse:
        return FastAPIStreamingResponse(_chunks(5, 0.03), media_type="text/plain")

    @app.get("/endless")
    async def endless() -> FastAPIStreamingResponse:
        return FastAPIStreamingResponse(_chunks(400, 0.02), media_type="text/plain")

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("the app failed")

    @app.get("/missing")
    async def missing() -> dict:
        raise FastAPIHTTPException(404)

    users = APIRouter()

    @users.get("/users/{uid}")
    async def user(uid: str) -> dict:
        return {"uid": uid}

    app.include_router(users, prefix="/api")
    return app


class Served:
    def __init__(self, url: str, monitor: Monitor) -> None:
        self.url = url
        self.monitor = monitor
        self.client = httpx.Client(base_url=url, timeout=10)

    def route(self, template: str) -> RouteStats | None:
        found = [r for r in self.monitor.stats().routes if r.route == template]
        return found[0] if found else None

    def health(self) -> dict:
        response = self.client.get(HEALTH)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        return response.json()


@pytest.fixture(params=["starlette", "fastapi"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    app = starlette_app() if request.param == "starlette" else fastapi_app()
    monitor = instrument(app, service_name=f"{request.param}-svc", instance_id="i-1")
    with serve(app) as url:
        s = Served(url, monitor)
        try:
            yield s
        finally:
            s.client.close()


def test_routes_are_counted_by_template_never_by_raw_path(served: Served) -> None:
    for n in range(5):
        assert served.client.get(f"/items/{n}").status_code == 200
    assert served.client.get("/api/users/alice").status_code == 200
    assert served.client.get("/api/users/bob").status_code == 200
    assert served.client.get("/no/such/page").status_code == 404
    assert served.client.get("/missing").status_code == 404
    routes = {r["route"]: r for r in served.health()["routes"]}
    assert {k: v["requests"] for k, v in routes.items()} == {
        "/items/{item_id}": 5, "/api/users/{uid}": 2, UNMATCHED: 1, "/missing": 1}
    assert routes["/missing"]["status_classes"]["4xx"] == 1 and routes["/missing"]["error_count"] == 0


def test_the_health_endpoint_never_counts_itself(served: Served) -> None:
    for _ in range(5):
        doc = served.health()
    assert doc["status"] == "no_data" and doc["metrics"]["sample_size"] == 0
    served.client.get("/items/1")
    doc = served.health()
    assert doc["metrics"]["sample_size"] == 1 and [r["route"] for r in doc["routes"]] == ["/items/{item_id}"]
    assert doc["service_name"].endswith("-svc") and doc["status"] == "ok"


def test_a_streaming_response_is_timed_to_its_last_chunk(served: Served) -> None:
    with served.client.stream("GET", "/stream") as response:
        assert b"".join(response.iter_bytes()) == b"chunk\n" * 5
    stats = wait_for(lambda: served.route("/stream"))
    assert stats.summary.requests == 1 and stats.summary.status_classes["2xx"] == 1
    assert stats.summary.p50_ms is not None and stats.summary.p50_ms >= 5 * 30 * 0.99


def test_an_exception_raised_by_the_app_counts_as_a_500_error(served: Served) -> None:
    for _ in range(3):   # uvicorn drops a keep-alive connection after an app exception: a new one each time
        assert served.client.get("/boom", headers={"Connection": "close"}).status_code == 500
    served.client.get("/items/1")
    doc = served.health()
    [boom] = [r for r in doc["routes"] if r["route"] == "/boom"]
    assert boom["error_count"] == 3 and boom["status_classes"]["5xx"] == 3
    assert doc["metrics"]["error_rate"] == 0.75 and doc["status"] == "critical"


def test_a_client_disconnect_is_counted_as_disconnected_not_as_an_error(served: Served) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /endless HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b"200 OK" in sock.recv(4096)
    stats = wait_for(lambda: served.route("/endless"))
    assert stats is not None, "the disconnected stream was never recorded"
    assert stats.summary.status_classes["disconnected"] == 1 and stats.summary.errors == 0
    assert stats.summary.p50_ms is not None and stats.summary.p50_ms < 400 * 20   # ended long before the stream would
    assert served.client.get("/items/2").status_code == 200                       # the app is fine


def test_sync_endpoints_in_threads_and_concurrent_clients_are_all_counted(served: Served) -> None:
    def client(worker: int) -> None:
        with httpx.Client(base_url=served.url, timeout=10) as c:
            for i in range(25):
                path = f"/sync/{i}" if (worker + i) % 2 else f"/items/{i}"
                assert c.get(path).status_code == 200

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    def counted() -> dict:
        """The middleware records a request once its response has gone out, so the last ones can
        still be on their way when the clients have their answers: wait for them."""
        routes = {r.route: r.summary for r in served.monitor.stats().routes}
        done = sum(s.requests for s in routes.values()) >= 200
        return routes if done else {}

    routes = wait_for(counted, what="all 200 requests counted")
    assert routes["/sync/{n}"].requests == 100 and routes["/items/{item_id}"].requests == 100
    assert sum(s.status_classes["2xx"] for s in routes.values()) == 200


@pytest.mark.parametrize(("header", "status"), [
    (None, 401), ("Bearer wrong", 401), ("Basic s3cret", 401), ("Bearer s3cret", 200), ("bearer s3cret", 200)])
def test_an_optional_bearer_token_guards_the_health_endpoint(header: str | None, status: int) -> None:
    app = starlette_app()
    instrument(app, token="s3cret")
    with serve(app) as url:
        response = httpx.get(url + HEALTH, headers={"Authorization": header} if header else {}, timeout=10)
    assert response.status_code == status
    assert ("sdk" in response.json()) == (status == 200)
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_the_health_endpoint_answers_get_and_head_only() -> None:
    app = starlette_app()
    instrument(app, health_path="/_health")
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as c:
        head = c.head("/_health")
        post = c.post("/_health")
        get = c.get("/_health")
        default = c.get(HEALTH)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 100
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
    assert get.json()["sdk"] == "alertengine" and get.headers["cache-control"] == "no-store"
    assert default.status_code == 404                      # the app's own answer: the path was moved


def test_excluded_paths_and_templates_are_not_measured() -> None:
    app = starlette_app()
    monitor = instrument(app, exclude=["/items/{item_id}", "/api/*"])
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as c:
        for path in ("/items/1", "/items/2", "/api/users/x", "/stream"):
            assert c.get(path).status_code == 200
    assert [(r.route, r.summary.requests) for r in monitor.stats().routes] == [("/stream", 1)]


def test_a_failure_inside_the_sdk_is_logged_once_and_requests_pass_untouched(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    app = starlette_app()
    monitor = instrument(app)

    def broken(*args: object) -> None:
        raise RuntimeError("bug in the SDK")

    monkeypatch.setattr(monitor, "record", broken)
    with caplog.at_level(logging.ERROR, logger="alertengine.sdk"), serve(app) as url, \
            httpx.Client(base_url=url, timeout=10) as c:
        answers = [c.get(f"/items/{n}") for n in range(10)]
        doc = c.get(HEALTH).json()
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"id": str(n)}) for n in range(10)]
    assert [r.getMessage() for r in caplog.records if r.name == "alertengine.sdk"] == [
        "alertengine SDK failure in record (logged once; the request went on untouched)"]
    assert monitor.failures == 10 and doc["sdk_failures"] == 10


def test_a_failing_health_report_falls_through_to_the_app(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    app = starlette_app()
    monitor = instrument(app)
    monkeypatch.setattr(monitor, "report", lambda: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="alertengine.sdk"), serve(app) as url, \
            httpx.Client(base_url=url, timeout=10) as c:
        answers = [c.get(HEALTH).status_code for _ in range(3)]
        assert c.get("/items/7").status_code == 200
    assert answers == [404, 404, 404]                      # the app's own answer for the path
    assert len([r for r in caplog.records if r.name == "alertengine.sdk"]) == 1
    assert monitor.stats().overall.requests == 1           # the health requests were never measured


def test_any_asgi_app_can_be_wrapped_in_the_middleware_class() -> None:
    async def raw(scope: dict, receive: Callable, send: Callable) -> None:
        status = 503 if scope["path"] == "/down" else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"raw"})

    app = AlertEngineMiddleware(raw, service_name="raw", window_seconds=30, bucket_seconds=3)
    with serve(app, lifespan="off") as url, httpx.Client(base_url=url, timeout=10) as c:
        assert [c.get(p).status_code for p in ("/a", "/b", "/down")] == [200, 200, 503]
        doc = c.get(HEALTH).json()
    assert doc["window_seconds"] == 30.0 and doc["service_name"] == "raw"
    assert [(r["route"], r["requests"], r["error_count"]) for r in doc["routes"]] == [(UNMATCHED, 3, 1)]


def test_instrument_needs_a_starlette_app_and_one_way_to_configure() -> None:
    async def raw(scope: dict, receive: Callable, send: Callable) -> None:
        return None

    with pytest.raises(TypeError, match="AlertEngineMiddleware"):
        instrument(raw)
    with pytest.raises(TypeError, match="either monitor"):
        instrument(starlette_app(), monitor=Monitor(), window_seconds=30)
    with pytest.raises(TypeError, match="either monitor"):
        AlertEngineMiddleware(raw, monitor=Monitor(), count_4xx=True)


def test_a_fastapi_app_mounted_in_a_starlette_app_keeps_the_mount_prefix() -> None:
    root = Starlette(routes=[Mount("/v2", app=fastapi_app())])
    monitor = instrument(root)
    with serve(root) as url, httpx.Client(base_url=url, timeout=10) as c:
        for path in ("/v2/items/1", "/v2/items/2", "/v2/api/users/ann"):
            assert c.get(path).status_code == 200
    assert {r.route: r.summary.requests for r in monitor.stats().routes} == {
        "/v2/items/{item_id}": 2, "/v2/api/users/{uid}": 1}
