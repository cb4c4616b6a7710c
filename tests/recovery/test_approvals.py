"""Alert → approve → execute through the real app: single-use links, the read-only preview, the
CSRF-checked confirm, the signed recovery webhook with retries and a dead-letter queue."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import AsyncIterator

import httpx
import jwt
import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.incidents import engine
from alertengine.incidents.detection import ServiceRef
from alertengine.incidents.policy import put_policy
from alertengine.incidents.replay import replay_database
from alertengine.signals import HealthReading
from alertengine.store import Database
from alertengine.tenancy.services import create_service, normalise
from alertengine.tenancy.tenants import create_tenant, set_shadow
from alertengine.web.app import create_app
from tests.fakes.person import PersonChannel
from tests.fakes.receiver import Receiver, closed_port_url

SLOW = HealthReading("answered", "sdk", 200, 10.0, "warning", p95_ms=9000.0, error_rate=0.0, health_score=70.0,
                     sample_size=100)


class Flow:
    def __init__(self, db: Database, data: DataDir, config: Config, client: httpx.AsyncClient, app: object) -> None:
        self.db, self.data, self.config, self.client, self.app = db, data, config, client, app
        self.tenant = db.write_sync(create_tenant("acme", "test")).id
        self.receiver: Receiver | None = None
        self.service: ServiceRef | None = None
        self.person = PersonChannel()   # installed by the tests that want it as the tenant's only remote channel

    @property
    def orchestrator(self):  # type: ignore[no-untyped-def]
        return self.app.state.orchestrator  # type: ignore[attr-defined]

    def add_service(self, url: str | None, contacts: dict | None = None) -> str:
        body = {"name": "checkout", "health_url": "http://127.0.0.1:9/health", "recovery_webhook_url": url,
                "contacts": contacts or {"primary": {"name": "Ada", "telegram_chat_id": "111"}},
                "approvers": {"telegram": ["111", "222"]}}
        spec = normalise(body, self.config.url_policy)
        svc, secret = self.db.write_sync(create_service(self.tenant, "checkout", spec, self.app.state.vault, "test"))
        self.service = ServiceRef(self.tenant, svc.id, "checkout")
        return secret

    async def outage(self) -> engine.Incident:
        for _ in range(3):
            inc = await self.app.state.detector.on_reading(self.service, SLOW)  # type: ignore[attr-defined]
        assert inc is not None
        return inc

    def links(self) -> list[str]:
        """The approval links that reached people (their own channel: never the logs)."""
        return self.person.links()

    def token(self, index: int = -1) -> str:
        return self.links()[index].rsplit("/", 1)[1]

    async def preview(self, token: str) -> httpx.Response:
        return await self.client.get(f"/action/recover/{token}")

    async def confirm(self, token: str, decision: str = "approve", csrf: str | None = "auto") -> httpx.Response:
        if csrf == "auto":
            page = await self.preview(token)
            found = re.search(r'name="csrf" value="([^"]+)"', page.text)
            csrf = found.group(1) if found else "none"
            self.client.cookies.set("ae_csrf", csrf, path="/action/recover")
        data = {"token": token, "decision": decision}
        if csrf is not None:
            data["csrf"] = csrf
        return await self.client.post("/action/recover/confirm", data=data)

    async def settle(self) -> None:
        await asyncio.gather(*self.orchestrator.background)

    def incident(self, inc_id: str = "INC-1") -> engine.Incident:
        return engine.get_incident(self.db.read_conn(), self.tenant, inc_id)

    def kinds(self) -> list[str]:
        return [r[0] for r in self.db.read_conn().execute("SELECT kind FROM ledger WHERE tenant = ? ORDER BY seq",
                                                          (self.tenant,))]

    def replay_clean(self) -> None:
        with self.db.reader() as conn:
            assert replay_database(conn).differences == []


@pytest.fixture
async def flow(data_dir: DataDir, config: Config, db: Database) -> AsyncIterator[Flow]:
    config = Config(data_dir=data_dir.path, checkpoint_interval=0.2, console_notifications=False)
    app = create_app(config, data_dir, db)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))
    async with httpx.AsyncClient(transport=transport, base_url="http://appliance") as client:
        f = Flow(db, data_dir, config, client, app)
        f.person.install(app)
        db.write_sync(set_shadow(f.tenant, False, "test"))
        yield f
        await f.settle()
        await app.state.runtime.http.aclose()  # type: ignore[attr-defined]


async def test_link_preview_changes_nothing_then_confirm_runs_the_signed_webhook_once(flow: Flow) -> None:
    with Receiver() as receiver:
        receiver.secret = flow.add_service(f"{receiver.url}/recover")
        inc = await flow.outage()
        assert inc.stage == engine.PROPOSED
        token = flow.token()
        before = flow.db.ledger_size
        page = await flow.preview(token)
        assert page.status_code == 200 and "restart service" in page.text and "127.0.0.1" in page.text
        assert "Ada" in page.text and page.headers["cache-control"] == "no-store"
        assert flow.db.ledger_size == before and flow.incident().stage == engine.PROPOSED  # read-only
        done = await flow.confirm(token)
        assert done.status_code == 200 and "Approved" in done.text
        await flow.settle()
        [request] = receiver.requests
        assert request.signature_ok and request.path == "/recover"
        body = json.loads(request.body)
        assert body["incident"] == "INC-1" and body["action"] == "restart service"
        assert body["approved_by"] == ["link:primary:Ada"] and body["idempotency_key"] == request.headers["idempotency-key"]
        assert flow.incident().stage == engine.EXECUTED
        again = await flow.preview(token)
        assert again.status_code == 409 and "already used by link:primary:Ada" in again.text
        replay = await flow.confirm(token)
        assert replay.status_code in (409,) and len(receiver.requests) == 1
    kinds = flow.kinds()
    assert kinds.index("incident.authorized") < kinds.index("incident.executing") < kinds.index("incident.executed")
    authorized = json.loads(flow.db.read_conn().execute(
        "SELECT body FROM ledger WHERE kind = 'incident.authorized'").fetchone()[0])
    assert authorized["actor"] == "engineer:link:primary:Ada"
    flow.replay_clean()


async def test_a_thousand_concurrent_confirms_execute_exactly_once(flow: Flow) -> None:
    with Receiver() as receiver:
        receiver.secret = flow.add_service(f"{receiver.url}/recover")
        await flow.outage()
        token = flow.token()
        page = await flow.preview(token)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        flow.client.cookies.set("ae_csrf", csrf, path="/action/recover")
        replies = await asyncio.gather(*(flow.client.post("/action/recover/confirm",
                                                          data={"token": token, "csrf": csrf, "decision": "approve"})
                                         for _ in range(1000)))
        await flow.settle()
        statuses = [r.status_code for r in replies]
        assert statuses.count(200) == 1 and statuses.count(409) == 999
        assert all("already used" in r.text for r in replies if r.status_code == 409)
        assert len(receiver.requests) == 1
    assert flow.kinds().count("incident.authorized") == 1 and flow.kinds().count("incident.executing") == 1
    flow.replay_clean()


@pytest.mark.parametrize("tamper,status", [
    ("expired", 410), ("flipped", 400), ("alg_none", 400), ("other_secret", 400), ("wrong_audience", 400),
    ("garbage", 400),
])
async def test_bad_tokens_are_refused(flow: Flow, tamper: str, status: int) -> None:
    flow.add_service(None)
    await flow.outage()
    good = flow.token()
    claims = jwt.decode(good, options={"verify_signature": False})
    if tamper == "expired":
        token = jwt.encode({**claims, "iat": 1, "exp": 2}, flow.data.secret("token.key"), algorithm="HS256")
    elif tamper == "flipped":
        token = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    elif tamper == "alg_none":
        token = jwt.encode(claims, None, algorithm="none")
    elif tamper == "other_secret":
        token = jwt.encode(claims, b"x" * 32, algorithm="HS256")
    elif tamper == "wrong_audience":
        token = jwt.encode({**claims, "aud": "something-else"}, flow.data.secret("token.key"), algorithm="HS256")
    else:
        token = "not-a-token"
    assert (await flow.preview(token)).status_code == status
    reply = await flow.confirm(token, csrf="x")
    flow.client.cookies.set("ae_csrf", "x", path="/action/recover")
    reply = await flow.client.post("/action/recover/confirm", data={"token": token, "csrf": "x", "decision": "approve"})
    assert reply.status_code == status
    assert flow.incident().stage == engine.PROPOSED


async def test_confirm_without_csrf_or_for_a_resolved_incident_is_refused(flow: Flow, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    flow.add_service(None)
    await flow.outage()
    token = flow.token()
    flow.client.cookies.clear()
    no_csrf = await flow.client.post("/action/recover/confirm", data={"token": token, "decision": "approve"})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    await engine.run(flow.db, engine.transition(flow.tenant, "INC-1", engine.RESOLVED, "engineer:x", reason="done"))
    late = await flow.confirm(token)
    assert late.status_code == 409 and flow.incident().stage == engine.RESOLVED
    appliance_logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert token not in appliance_logs  # (the test's own HTTP client logs URLs; the appliance never does)
    ledger_bytes = b"".join(r[0] for r in flow.db.read_conn().execute("SELECT body FROM ledger"))
    assert token.encode() not in ledger_bytes


@pytest.mark.parametrize("script,stage,attempts", [
    ((500, 200), engine.EXECUTED, 2),
    ((400,), engine.FAILED, 1),
])
async def test_webhook_retries_then_executes_or_dead_letters(flow: Flow, script: tuple, stage: str, attempts: int) -> None:
    with Receiver() as receiver:
        receiver.secret = flow.add_service(f"{receiver.url}/recover")
        receiver.script(*script)
        await flow.outage()
        await flow.confirm(flow.token())
        await flow.settle()
        assert flow.incident().stage == stage and len(receiver.requests) == attempts
        keys = {r.headers["idempotency-key"] for r in receiver.requests}
        assert len(keys) == 1
    letters = flow.db.read_conn().execute("SELECT final_status, detail FROM dead_letters").fetchall()
    assert (len(letters) == 1) == (stage == engine.FAILED)
    flow.replay_clean()


async def test_connection_refused_dead_letters_and_a_retry_needs_a_fresh_approval(flow: Flow) -> None:
    from alertengine.recovery import deadletters
    from tests.conftest import run_cli
    flow.add_service(closed_port_url())
    await flow.outage()
    first = flow.token()
    await flow.confirm(first)
    await flow.settle()
    assert flow.incident().stage == engine.FAILED
    [letter] = deadletters.list_dead_letters(flow.db.read_conn(), flow.tenant)
    assert letter.incident == "INC-1" and len(letter.attempts) == 3 and "refused" in letter.detail.lower() or letter.detail
    listed = run_cli("dlq", "list", "--tenant", flow.tenant, "--data-dir", str(flow.data.path))
    assert listed.code == 0 and json.loads(listed.stdout)[0]["id"] == letter.id
    inc = await engine.run(flow.db, deadletters.repropose(flow.tenant, letter.id, "engineer:key:x", "sha256:0"))
    await flow.orchestrator.propose(inc)
    assert flow.incident().stage == engine.PROPOSED
    assert (await flow.confirm(first)).status_code == 409  # the old approval is spent
    assert flow.token() != first and (await flow.preview(flow.token())).status_code == 200
    with pytest.raises(Exception, match="already re-proposed"):
        await engine.run(flow.db, deadletters.repropose(flow.tenant, letter.id, "engineer:key:x", "sha256:0"))
    flow.replay_clean()


async def test_two_person_rule_needs_two_distinct_approvers(flow: Flow) -> None:
    with Receiver() as receiver:
        receiver.secret = flow.add_service(f"{receiver.url}/recover", contacts={
            "primary": {"name": "Ada"}, "secondary": {"name": "Grace"}})
        flow.db.write_sync(put_policy(flow.tenant, "[approvals]\nrequired = 2\n", "test"))
        await flow.outage()
        first, second = flow.links()[-2:]
        one = await flow.confirm(first.rsplit("/", 1)[1])
        assert "another person must approve" in one.text and flow.incident().stage == engine.PROPOSED
        two = await flow.confirm(second.rsplit("/", 1)[1])
        assert "Approved" in two.text
        await flow.settle()
        assert flow.incident().stage == engine.EXECUTED and len(receiver.requests) == 1
        assert sorted(json.loads(receiver.requests[0].body)["approved_by"]) == ["link:primary:Ada", "link:secondary:Grace"]


async def test_no_approval_in_time_expires_and_the_next_breach_proposes_again(flow: Flow) -> None:
    flow.add_service(None)
    await flow.outage()
    first = flow.token()
    await flow.app.state.runtime.timer_round("2999-01-01T00:00:00.000000Z")  # type: ignore[attr-defined]
    assert flow.incident().stage == engine.EXPIRED
    assert (await flow.confirm(first)).status_code == 409
    await flow.app.state.detector.on_reading(flow.service, SLOW)  # type: ignore[attr-defined]
    assert flow.incident().stage == engine.PROPOSED
    second = flow.token()
    assert second != first and (await flow.preview(second)).status_code == 200
    flow.replay_clean()


async def test_shadow_mode_mints_nothing_calls_nothing_and_ledgers_it(flow: Flow) -> None:
    flow.db.write_sync(set_shadow(flow.tenant, True, "test"))
    with Receiver() as receiver:
        receiver.secret = flow.add_service(f"{receiver.url}/recover")
        await flow.outage()
        assert flow.links() == []
        assert flow.db.read_conn().execute("SELECT count(*) FROM approvals").fetchone()[0] == 0
        assert receiver.requests == []
    assert "token.suppressed" in flow.kinds() and "notification.suppressed" in flow.kinds()
    flow.replay_clean()


async def test_a_used_link_stays_used_after_a_restart(data_dir: DataDir, db: Database, store_url: str) -> None:
    config = Config(data_dir=data_dir.path, console_notifications=False, database_url=store_url)
    app = create_app(config, data_dir, db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://appliance") as client:
        flow = Flow(db, data_dir, config, client, app)
        flow.person.install(app)
        db.write_sync(set_shadow(flow.tenant, False, "test"))
        flow.add_service(None)
        await flow.outage()
        token = flow.token()
        assert (await flow.confirm(token)).status_code == 200
        await flow.settle()
    await app.state.runtime.http.aclose()  # type: ignore[attr-defined]
    db.close()
    reopened = data_dir.open_database(config)
    try:
        app2 = create_app(config, data_dir, reopened)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app2), base_url="http://appliance") as client:
            again = Flow.__new__(Flow)
            again.db, again.data, again.config, again.client, again.app = reopened, data_dir, config, client, app2
            again.person = PersonChannel().install(app2)
            reply = await again.confirm(token)
            assert reply.status_code == 409 and "already used" in reply.text
        await app2.state.runtime.http.aclose()  # type: ignore[attr-defined]
    finally:
        reopened.close()


async def test_dissent_offers_both_theories_and_records_the_choice(flow: Flow) -> None:
    with Receiver() as receiver:
        receiver.secret = flow.add_service(f"{receiver.url}/recover")
        opening = engine.Opening(flow.tenant, "health:dissent", "poller", "checkout: errors", "P1", flow.service.id,
                                 "checkout", None, "sha256:000000000000", "errors", {})
        inc, _ = await flow.db.write(engine.open_incident(opening))
        theories = [{"label": "A", "root_cause": "connection pool exhausted", "category": "database", "confidence": 81,
                     "logs_to_check": ["db pool metrics"]},
                    {"label": "B", "root_cause": "upstream payment API timing out", "category": "external_api",
                     "confidence": 77, "logs_to_check": ["gateway timeouts"]}]
        await engine.run(flow.db, engine.transition(flow.tenant, inc.id, engine.DIAGNOSED, "ai:council", decision="dissent",
                                                    reason="the two models disagree", data={"theories": theories}))

        def with_action(tx):  # type: ignore[no-untyped-def]
            tx.execute("UPDATE incidents SET action = 'restart checkout pool' WHERE tenant = ? AND id = ?",
                       (flow.tenant, inc.id))
            return engine.apply_transition(tx, engine.get_incident(tx.conn, flow.tenant, inc.id), engine.PROPOSED,
                                           "policy", reason="policy proposes")
        proposed = await engine.run(flow.db, with_action)
        await flow.orchestrator.propose(proposed)
        line = json.loads((flow.data.path / "notifications.jsonl").read_text().splitlines()[-1])
        assert line["event"] == "dissent"
        assert line["text"].splitlines() == [
            "checkout: errors (P1)", "The two diagnoses disagree; choose which to trust.",
            "Theory A (database, 81%): connection pool exhausted. Check: db pool metrics.",
            "Theory B (external_api, 77%): upstream payment API timing out. Check: gateway timeouts.",
            "Either approval runs: restart checkout pool, calling 127.0.0.1."]
        # the log names who got a link, never the link; the links reached the person
        assert line["approval_links_for"] == ["primary:Ada (trust A)", "primary:Ada (trust B)"]
        assert "/action/recover/" not in json.dumps(line)
        links = flow.person.received[-1].links
        assert set(links) == {"primary:Ada (trust A)", "primary:Ada (trust B)"}
        token_b = links["primary:Ada (trust B)"].rsplit("/", 1)[1]
        token_a = links["primary:Ada (trust A)"].rsplit("/", 1)[1]
        page = await flow.preview(token_b)
        assert "upstream payment API" in page.text and "Theory B" in page.text
        assert (await flow.confirm(token_b)).status_code == 200
        await flow.settle()
        assert json.loads(receiver.requests[0].body)["choice"] == "B"
        assert (await flow.confirm(token_a)).status_code == 409  # the other theory's link is spent too
    flow.replay_clean()


async def test_the_proposal_carries_the_health_figures_and_the_diagnosis(flow: Flow) -> None:
    """Approving from a phone is never approving blind: the figures, the diagnosis, the action."""
    with Receiver() as receiver:
        receiver.secret = flow.add_service(f"{receiver.url}/recover")
        await flow.outage()
        proposal = next(m for m in flow.person.received if m.event == "proposed")
        lines = proposal.text.splitlines()
        assert lines[0] == "checkout: latency (P2)"
        assert lines[1] == "Health score: 70/100 | P95: 9.0s | Errors: 0%"        # the SLOW reading
        assert lines[2].startswith("Rule-based diagnosis (no AI answer) — confidence ")
        assert lines[-1] == "Suggested fix: restart service, calling 127.0.0.1"
