"""Authentication and authorisation over real HTTP, against a real ``alertengine serve`` subprocess.

Tenants and keys are made the ways an operator makes them: tenant ``alpha`` and its keys through
the HTTP API, tenant ``beta`` and its admin key with ``alertengine tenant add`` / ``key create`` from
the appliance's shell while serve is running."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.serving import Appliance, client_from, running_appliance

pytestmark = pytest.mark.slow

UNAUTHENTICATED = {"code": "unauthenticated", "message": "unknown or revoked API key"}
MALFORMED = {"code": "unauthenticated", "message": "malformed API key"}
MISSING = {"code": "unauthenticated", "message": "an API key is required: Authorization: Bearer <key>"}
OTHER_TENANT = {"code": "forbidden", "message": "this key may not act in that tenant"}


@dataclass
class World:
    app: Appliance
    alpha: str
    beta: str
    keys: dict[str, str] = field(default_factory=dict)     # "alpha-viewer" -> secret
    key_ids: dict[str, str] = field(default_factory=dict)  # "alpha-viewer" -> key id
    beta_service: str = ""
    beta_integration: str = ""


def refused(reply: httpx.Response, status: int, error: dict[str, str]) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {"error": error}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_appliance(tmp_path_factory.mktemp("serve-auth")) as app:
        alpha = app.add_tenant("alpha")
        w = World(app, alpha, "")
        w.key_ids["alpha-admin"], w.keys["alpha-admin"] = app.add_key(alpha, "admin", "alpha-admin")
        for role in ("operator", "auditor", "viewer"):   # a tenant admin manages its own keys
            w.key_ids[f"alpha-{role}"], w.keys[f"alpha-{role}"] = app.add_key(alpha, role, f"alpha-{role}",
                                                                             by=w.keys["alpha-admin"])
        made = app.cli("tenant", "add", "beta")
        assert made.code == 0, made.stderr
        w.beta = made.json()["id"]
        made = app.cli("key", "create", "--tenant", w.beta, "--role", "admin", "--name", "beta-admin")
        assert made.code == 0 and "not shown again" in made.stderr, made.stderr
        w.key_ids["beta-admin"], w.keys["beta-admin"] = made.json()["key"]["id"], made.json()["secret"]
        service = app.ok("POST", f"/api/tenants/{w.beta}/services", w.keys["beta-admin"], 201,
                         json={"name": "billing", "health_url": "http://127.0.0.1:9/health", "poll_interval": 3600})
        w.beta_service = service["id"]
        made = app.cli("integration", "create", "--tenant", w.beta, "--name", "beta-events")
        assert made.code == 0, made.stderr
        w.beta_integration = made.json()["integration"]["id"]
        opened = app.ok("POST", "/ingest/events", made.json()["key"],
                        json={"service": "billing", "title": "queue backlog", "severity": "high"})
        assert opened["incidents"] == ["INC-1"]
        yield w


def test_the_admin_key_printed_once_at_first_start_manages_tenants(world: World) -> None:
    app = world.app
    assert app.output().count(app.admin_key) == 1
    listed = app.ok("GET", "/api/tenants", app.admin_key)
    assert {t["name"]: t["id"] for t in listed["tenants"]} == {"alpha": world.alpha, "beta": world.beta}
    assert all(t["shadow"] is True for t in listed["tenants"])   # new tenants start in shadow mode
    # the appliance admin may act in every tenant, whoever created it
    assert app.ok("GET", f"/api/tenants/{world.beta}/services", app.admin_key)["services"][0]["name"] == "billing"
    refused(app.get("/api/tenants"), 401, MISSING)


def test_a_tenant_key_works_only_in_its_own_tenant(world: World) -> None:
    app, alpha, beta = world.app, world.alpha, world.beta
    for role in ("admin", "operator", "auditor", "viewer"):
        key = world.keys[f"alpha-{role}"]
        assert app.ok("GET", f"/api/tenants/{alpha}", key)["name"] == "alpha"
        # a path naming another tenant answers 403, exactly as for a tenant that does not exist
        refused(app.get(f"/api/tenants/{beta}", key), 403, OTHER_TENANT)
        refused(app.get(f"/api/tenants/{beta}/incidents", key), 403, OTHER_TENANT)
        refused(app.get("/api/tenants/t_0000000000000000", key), 403, OTHER_TENANT)
    # the key made with the CLI, while serve runs, is honoured at once, in its own tenant only
    assert app.ok("GET", f"/api/tenants/{beta}/incidents", world.keys["beta-admin"])["incidents"][0]["id"] == "INC-1"
    refused(app.get(f"/api/tenants/{alpha}/services", world.keys["beta-admin"]), 403, OTHER_TENANT)
    refused(app.post(f"/api/tenants/{alpha}/keys", world.keys["beta-admin"], json={"role": "admin", "name": "x"}),
            403, OTHER_TENANT)
    # only the appliance admin lists or creates tenants
    refused(app.get("/api/tenants", world.keys["alpha-admin"]), 403,
            {"code": "forbidden", "message": "role 'admin' may not tenant list"})
    refused(app.post("/api/tenants", world.keys["alpha-admin"], json={"name": "gamma"}), 403,
            {"code": "forbidden", "message": "role 'admin' may not tenant create"})
    assert len(app.ok("GET", "/api/tenants", app.admin_key)["tenants"]) == 2


def test_another_tenants_resources_answer_exactly_like_missing_ones(world: World) -> None:
    app, alpha, beta = world.app, world.alpha, world.beta
    key = world.keys["alpha-admin"]
    pairs = [   # (beta's real resource through alpha's path, a resource that exists nowhere)
        ("GET", f"/api/tenants/{alpha}/services/{world.beta_service}", f"/api/tenants/{alpha}/services/svc_{'0' * 16}"),
        ("DELETE", f"/api/tenants/{alpha}/services/{world.beta_service}",
         f"/api/tenants/{alpha}/services/svc_{'0' * 16}"),
        ("POST", f"/api/tenants/{alpha}/services/{world.beta_service}/rotate-secret",
         f"/api/tenants/{alpha}/services/svc_{'0' * 16}/rotate-secret"),
        ("GET", f"/api/tenants/{alpha}/incidents/INC-1", f"/api/tenants/{alpha}/incidents/INC-999"),
        ("GET", f"/api/tenants/{alpha}/incidents/INC-1/timeline", f"/api/tenants/{alpha}/incidents/INC-999/timeline"),
        ("DELETE", f"/api/tenants/{alpha}/keys/{world.key_ids['beta-admin']}", f"/api/tenants/{alpha}/keys/{'0' * 12}"),
        ("DELETE", f"/api/tenants/{alpha}/integrations/{world.beta_integration}",
         f"/api/tenants/{alpha}/integrations/{'0' * 12}"),
    ]
    for method, theirs, nowhere in pairs:
        other, missing = app.request(method, theirs, key), app.request(method, nowhere, key)
        assert other.status_code == missing.status_code == 404, (theirs, other.text, missing.text)
        assert other.json() == missing.json() and other.json()["error"]["code"] == "not_found"
        assert other.headers["content-type"] == missing.headers["content-type"]
    # even the appliance admin, naming alpha, does not see beta's INC-1
    assert app.ok("GET", f"/api/tenants/{alpha}/incidents/INC-1", app.admin_key, 404)["error"]["code"] == "not_found"
    assert app.ok("GET", f"/api/tenants/{alpha}/incidents", key)["incidents"] == []
    # nothing of beta's changed: its service, key and integration are all still there and working
    beta_key = world.keys["beta-admin"]
    service = app.ok("GET", f"/api/tenants/{beta}/services/{world.beta_service}", beta_key)
    assert service["name"] == "billing"
    [integration] = app.ok("GET", f"/api/tenants/{beta}/integrations", beta_key)["integrations"]
    assert integration["revoked"] is None
    kinds = [e["kind"] for e in app.ledger(beta)]
    assert "service.removed" not in kinds and "service.secret_rotated" not in kinds
    assert "apikey.revoked" not in kinds and "integration.revoked" not in kinds


def test_bad_credentials_are_refused_with_401_and_the_json_error(world: World) -> None:
    app, alpha = world.app, world.alpha
    path = f"/api/tenants/{alpha}"
    key_id, secret = app.add_key(alpha, "operator", "soon-revoked", by=world.keys["alpha-admin"])
    assert app.ok("GET", path, secret)["id"] == alpha
    # Every refusal below is on purpose; they come from two other loopback addresses so that the
    # per-address slow-down of repeated failures (its own test is below) does not pile up here.
    with client_from("127.0.0.2") as first, client_from("127.0.0.3") as second:
        # a real key id with a wrong secret, an unknown key id: the same answer (no oracle)
        raw = secret[len(f"ae_{key_id}_"):]
        wrong = f"ae_{key_id}_{'A' * 43}"
        assert len(raw) == 43 and wrong != secret
        refused(app.get(path, wrong, via=first), 401, UNAUTHENTICATED)
        refused(app.get(path, f"ae_{'0' * 12}_{raw}", via=first), 401, UNAUTHENTICATED)
        # revoked through the API by the tenant admin: refused from the next request on
        revoked = app.ok("DELETE", f"/api/tenants/{alpha}/keys/{key_id}", world.keys["alpha-admin"])
        assert revoked["revoked"] is not None
        refused(app.get(path, secret, via=first), 401, UNAUTHENTICATED)
        # revoked with the CLI while serve runs: refused from the next request on too
        cli_id, cli_secret = app.add_key(alpha, "viewer", "cli-revoked", by=world.keys["alpha-admin"])
        assert app.ok("GET", path, cli_secret)["id"] == alpha
        done = app.cli("key", "revoke", cli_id)
        assert done.code == 0 and done.json()["revoked"], done.stderr
        refused(app.get(path, cli_secret, via=first), 401, UNAUTHENTICATED)
        # no header, or one that is not a bearer API key
        refused(app.get(path, via=second), 401, MISSING)
        for header in ("Bearer", "Bearer not-a-key", f"Basic {secret}", f"Token {world.keys['alpha-viewer']}",
                       f"Bearer {world.keys['alpha-viewer']}x"):
            refused(app.get(path, headers={"Authorization": header}, via=second), 401, MALFORMED)
        refused(app.get(path, params={"api_key": world.keys["alpha-viewer"]}, via=second), 401, MISSING)
    # the good keys are unaffected
    assert app.ok("GET", path, world.keys["alpha-viewer"])["id"] == alpha
    listed = {k["id"]: k for k in app.ok("GET", f"/api/tenants/{alpha}/keys", world.keys["alpha-admin"])["keys"]}
    assert listed[key_id]["revoked"] and listed[cli_id]["revoked"]
    assert listed[world.key_ids["alpha-viewer"]]["revoked"] is None
    assert all(secret not in json.dumps(k) for k in listed.values())


def test_roles_limit_what_a_key_may_do(world: World) -> None:
    app, alpha = world.app, world.alpha
    viewer, operator, auditor, admin = (world.keys[f"alpha-{r}"] for r in ("viewer", "operator", "auditor", "admin"))
    base = f"/api/tenants/{alpha}"
    ingest = app.add_integration(alpha, "alpha-events", by=admin)
    opened = app.ok("POST", "/ingest/events", ingest, json={"service": "web", "title": "5xx burst", "severity": "high"})
    [incident] = opened["incidents"]
    before = len(app.ledger(alpha))
    keys_before = {(k["id"], k["role"], k["revoked"]) for k in app.ok("GET", f"{base}/keys", admin)["keys"]}

    def forbidden(reply: httpx.Response, role: str, permission: str) -> None:
        refused(reply, 403, {"code": "forbidden", "message": f"role {role!r} may not {permission}"})

    # a viewer reads, and may not write anything
    for path in (base, f"{base}/services", f"{base}/incidents", f"{base}/incidents/{incident}", f"{base}/policy",
                 f"/tenant/{alpha}/shadow"):
        assert app.get(path, viewer).status_code == 200, path
    service = {"name": "web", "health_url": "http://127.0.0.1:9/health", "poll_interval": 3600}
    forbidden(app.post(f"{base}/services", viewer, json=service), "viewer", "service write")
    forbidden(app.post(f"{base}/keys", viewer, json={"role": "admin", "name": "escalate"}), "viewer", "key manage")
    forbidden(app.delete(f"/tenant/{alpha}/shadow", viewer), "viewer", "tenant shadow write")
    forbidden(app.request("PUT", f"{base}/policy", viewer, json={"toml": "[detection]\nbreaches_to_open = 1\n"}),
              "viewer", "policy write")
    forbidden(app.post(f"{base}/incidents/{incident}/acknowledge", viewer), "viewer", "incident act")
    forbidden(app.post(f"{base}/incidents/{incident}/resolve", viewer, json={"reason": "x"}), "viewer", "incident act")
    forbidden(app.get(f"{base}/ledger", viewer), "viewer", "ledger read")
    forbidden(app.get(f"{base}/notifications/channels", viewer), "viewer", "channel read")
    # an auditor reads the ledger but acts on nothing; an operator acts on incidents only
    assert app.get(f"{base}/ledger", auditor).status_code == 200
    forbidden(app.post(f"{base}/incidents/{incident}/resolve", auditor, json={"reason": "x"}),
              "auditor", "incident act")
    forbidden(app.post(f"{base}/services", operator, json=service), "operator", "service write")
    forbidden(app.get(f"{base}/ledger", operator), "operator", "ledger read")
    # nothing the refused calls asked for happened
    assert app.ok("GET", f"{base}/services", admin)["services"] == []
    assert app.ok("GET", f"/tenant/{alpha}/shadow", admin)["shadow"] is True
    assert {(k["id"], k["role"], k["revoked"]) for k in app.ok("GET", f"{base}/keys", admin)["keys"]} == keys_before
    assert len(app.ledger(alpha)) == before
    assert app.incident(alpha, incident)["stage"] != "RESOLVED"
    # the operator may act, and the ledger names the key that did
    acked = app.ok("POST", f"{base}/incidents/{incident}/acknowledge", operator)
    assert acked["acknowledged_by"] == f"engineer:key:{world.key_ids['alpha-operator']}"
    done = app.ok("POST", f"{base}/incidents/{incident}/resolve", operator, json={"reason": "rolled back"})
    assert done["stage"] == "RESOLVED" and done["is_open"] is False
    [resolved] = app.ledger(alpha, kind="incident.resolved")
    assert resolved["actor"] == f"engineer:key:{world.key_ids['alpha-operator']}"
    assert resolved["reason"] == "rolled back"


def test_who_did_what_is_ledgered_and_verifies_after_shutdown(world: World) -> None:
    """Runs last in this module: it stops the appliance."""
    app = world.app
    [alpha_created] = app.ledger(world.alpha, kind="tenant.created")
    assert alpha_created["actor"].startswith("apikey:")
    [beta_created] = app.ledger(world.beta, kind="tenant.created")
    assert beta_created["actor"].startswith("cli:")
    assert app.stop() == 0, app.output()
    verified = app.cli("ledger", "verify")
    assert verified.code == 0, verified.stdout + verified.stderr
    result = verified.json()
    assert result["checkpoint_size"] == result["entries_checked"]
    replayed = app.cli("replay")
    assert replayed.code == 0, replayed.stdout + replayed.stderr


def test_repeated_failures_are_slowed_and_ledgered_once_per_burst(tmp_path: Path) -> None:
    with running_appliance(tmp_path) as app:
        tenant = app.add_tenant("acme")
        _key_id, good = app.add_key(tenant, "viewer", "good")
        wrong = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
        took = []
        for _ in range(9):
            started = time.monotonic()
            refused(app.get(f"/api/tenants/{tenant}", wrong), 401, UNAUTHENTICATED)
            took.append(time.monotonic() - started)
        # five failures are free; then each answer waits 0.1 s, 0.2 s, 0.4 s, 0.8 s (lower bounds: a
        # loaded machine only makes them slower)
        assert took[5] >= 0.1 and took[6] >= 0.2 and took[7] >= 0.4 and took[8] >= 0.8, took
        assert app.ok("GET", f"/api/tenants/{tenant}", good)["name"] == "acme"   # the right key still works
        shown = app.cli("ledger", "show", "--kind", "auth.failures", "--json")
        assert shown.code == 0, shown.stderr
        [burst] = [json.loads(line) for line in shown.stdout.splitlines()]
        assert burst["decision"] == "throttle" and burst["data"]["address"] == "127.0.0.1"
        assert burst["data"]["path"] == "/api/tenants/{tenant}"   # the route, never what was in the path
        assert good not in shown.stdout and wrong not in shown.stdout   # keys are never ledgered
        assert app.stop() == 0
