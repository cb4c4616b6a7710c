"""``serve``'s log: with ``log_format = "json"`` every line on standard error is one JSON object
(ts, level, logger, message, and exc when there is a traceback); health polls leave no line, at
the default level, however many there are; no secret reaches the log.

The subprocess test runs a real ``alertengine serve`` (its standard output and error kept apart)
polling a local health endpoint that counts the polls it answers."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from alertengine.cli.serve import JsonLines
from alertengine.config import load_config
from alertengine.errors import ConfigError
from tests.serving import ADMIN_KEY_RE, free_port
from tests.waiting import wait_for

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
FIELDS = {"ts", "level", "logger", "message"}
OPTIONAL = {"exc", "stack"}
AI_KEY = "sk-ant-test-" + "q" * 40      # a secret in the settings: it must never be logged


class Health:
    """A health endpoint on 127.0.0.1 that counts the polls it answers."""

    def __init__(self) -> None:
        self.polls = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.polls += 1
                body = b'{"status": "ok"}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def health() -> Iterator[Health]:
    h = Health()
    h.thread.start()
    yield h
    h.server.shutdown()
    h.server.server_close()


def lines_of(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        assert line.strip(), "an empty line in a JSON-lines log"
        record = json.loads(line)          # every line is one JSON object, or this fails
        assert isinstance(record, dict), line
        assert FIELDS <= set(record) <= FIELDS | OPTIONAL, line
        assert TS.match(record["ts"]) and record["level"] in ("debug", "info", "warning", "error", "critical"), line
        out.append(record)
    return out


@pytest.mark.slow
def test_serve_with_json_logs_writes_json_lines_and_no_line_per_health_poll(tmp_path: Path, health: Health) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTENGINE_")}
    env.update(ALERTENGINE_LOG_FORMAT="json", ALERTENGINE_AI_API_KEY=AI_KEY)
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "alertengine", "serve", "--port", str(port),
                                 "--data-dir", str(tmp_path / "data")], cwd=tmp_path, env=env, stdout=o, stderr=e)
    url = f"http://127.0.0.1:{port}"
    explain = lambda: f"stdout:\n{out.read_text()}\nstderr:\n{err.read_text()}"  # noqa: E731
    try:
        def up() -> bool:
            assert proc.poll() is None, f"serve exited early\n{explain()}"
            try:
                return httpx.get(f"{url}/healthz", timeout=5, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, what="serve answering /healthz", explain=explain)
        [admin] = ADMIN_KEY_RE.findall(out.read_text())
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60,
                          trust_env=False) as client:
            tenant = client.post("/api/tenants", json={"name": "payments"}).json()["id"]
            made = client.post(f"/api/tenants/{tenant}/services",
                               json={"name": "checkout", "health_url": health.url, "poll_interval": 0.2})
            assert made.status_code == 201, made.text
        wait_for(lambda: health.polls >= 25, what="25 health polls", explain=explain)
        polls = health.polls
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            raise
    assert code == 0, explain()
    stderr = err.read_text()
    records = lines_of(stderr)
    assert records, "serve logged nothing at all (not even uvicorn's start and stop)"
    assert len(records) < polls, f"{len(records)} log lines for {polls} polls:\n{stderr}"
    target = health.url.split("//", 1)[1]        # 127.0.0.1:<port>/health
    assert not [r for r in records if target in r["message"] or r["logger"].startswith(("httpx", "httpcore"))]
    for secret in (admin, AI_KEY):
        assert secret not in stderr
    assert AI_KEY not in out.read_text()
    # the text of standard output (banner, console notifications) is not mixed into the log
    assert "serving on" in out.read_text() and "serving on" not in stderr


def test_a_json_line_carries_the_traceback_and_stays_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("alertengine.test", logging.ERROR, __file__, 1, "failed: %s\n%s", ("x", "y"),
                                   sys.exc_info())
    line = JsonLines().format(record)
    assert "\n" not in line
    got = json.loads(line)
    assert set(got) == {"ts", "level", "logger", "message", "exc"}
    assert (got["level"], got["logger"], got["message"]) == ("error", "alertengine.test", "failed: x\ny")
    assert got["exc"].startswith("Traceback (most recent call last):") and got["exc"].endswith("ValueError: bad\nthing")
    assert TS.match(got["ts"])


def test_a_json_line_holds_no_extras_of_the_record() -> None:
    record = logging.LogRecord("alertengine.test", logging.INFO, __file__, 1, "polled", (), None)
    record.token = "secret-extra"   # what a careless extra= would attach
    got = json.loads(JsonLines().format(record))
    assert got.keys() == {"ts", "level", "logger", "message"} and "secret-extra" not in json.dumps(got)


@pytest.mark.parametrize("value,ok", [("text", True), ("json", True), ("JSON", False), ("logfmt", False), ("", False)])
def test_log_format_is_text_or_json(tmp_path: Path, value: str, ok: bool) -> None:
    empty = tmp_path / "alertengine.toml"
    empty.write_text("")
    environ = {"ALERTENGINE_LOG_FORMAT": value}
    if ok:
        assert load_config(empty, environ).log_format == value
        return
    with pytest.raises(ConfigError, match="log_format"):
        load_config(empty, environ)


def test_text_is_the_default_log_format(tmp_path: Path) -> None:
    empty = tmp_path / "alertengine.toml"
    empty.write_text("")
    assert load_config(empty, {}).log_format == "text"
