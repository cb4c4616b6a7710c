"""Commit context: deploy records in SQLite (idempotent, validated, ledgered without personal data or
secrets), the incident's deploy window and relevance order, risky paths, and the GitHub push webhook."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from typing import Any

import pytest

from alertengine.appliance import DataDir
from alertengine.diagnosis.deploys import (
    DEPLOY_SCHEMA,
    RISKY,
    Deploy,
    deploys_near,
    list_deploys,
    most_relevant,
    parse_github_push,
    rank,
    record_deploy,
    risky_paths,
    verify_github_signature,
)
from alertengine.errors import FieldError, NotFoundError
from alertengine.schema import SchemaError
from alertengine.signals.ingest import PayloadError
from alertengine.store import Database
from alertengine.tenancy.tenants import create_tenant

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
OPENED = "2026-03-01T12:00:00.000000Z"
TOKEN = "xoxb-1234567890-abcdefghij"
EMAIL = "ada.lovelace@example.com"


@pytest.fixture
def tenant(db: Database) -> str:
    return db.write_sync(create_tenant("acme", "test")).id  # the deploys table comes with the migrations


def at(seconds: float, base: str = OPENED) -> str:
    """OPENED shifted by ``seconds``, in RFC 3339 with an offset (not the ledger's own form)."""
    opened = dt.datetime.fromisoformat(base.replace("Z", "+00:00"))
    return (opened + dt.timedelta(seconds=seconds)).astimezone(dt.timezone(dt.timedelta(hours=1))).isoformat()


def deploy_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"sha": SHA, "message": "Raise the checkout pool size", "author": "Ada Lovelace",
                            "files": ["app/pool.py"], "additions": 3, "deletions": 1, "time": at(-120),
                            "service": "checkout"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not DROP}


DROP = object()  # a field value meaning "leave the field out"


def record(db: Database, tenant: str, **changes: Any) -> Deploy:
    return db.write_sync(record_deploy(tenant, deploy_body(**changes), "key:ci"))


def deploy_entries(db: Database) -> list[dict[str, Any]]:
    with db.reader() as conn:
        return [json.loads(r[0]) for r in
                conn.execute("SELECT body FROM ledger WHERE kind = 'deploy.recorded' ORDER BY seq")]


def table_rows(db: Database) -> list[tuple]:
    with db.reader() as conn:
        return conn.execute("SELECT * FROM deploys ORDER BY deployed_at").fetchall()


# --- recording ----------------------------------------------------------------------------------

def test_recording_a_deploy_stores_the_row_and_ledgers_it(db: Database, tenant: str) -> None:
    deploy = record(db, tenant, files=["app/pool.py", "db/migrations/0042_pool.sql"])
    assert deploy.public() == {
        "id": deploy.id, "tenant": tenant, "service": "checkout", "sha": SHA, "message": "Raise the checkout pool size",
        "author": "Ada Lovelace", "files": ["app/pool.py", "db/migrations/0042_pool.sql"],
        "risky_paths": ["db/migrations/0042_pool.sql"], "additions": 3, "deletions": 1,
        "time": "2026-03-01T11:58:00.000000Z", "source": "api"}
    assert not deploy.duplicate
    [row] = table_rows(db)
    assert row[0] == deploy.id and row[1] == tenant and row[9] == "2026-03-01T11:58:00.000000Z"
    assert json.loads(row[6]) == ["app/pool.py", "db/migrations/0042_pool.sql"]
    [entry] = deploy_entries(db)
    assert entry["actor"] == "key:ci" and entry["tenant"] == tenant
    assert entry["data"] == {"deploy": deploy.id, "sha": SHA, "service": "checkout",
                             "author": entry["data"]["author"], "message": "Raise the checkout pool size",
                             "file_count": 2, "risky_paths": ["db/migrations/0042_pool.sql"], "risky_count": 1,
                             "additions": 3, "deletions": 1, "time": "2026-03-01T11:58:00.000000Z",
                             "source": "api"}
    assert entry["data"]["author"].startswith("hmac-sha256:")   # a person: keyed, not enumerable


def test_recording_the_same_deploy_again_returns_the_first_and_ledgers_once(db: Database, tenant: str) -> None:
    first = record(db, tenant)
    again = db.write_sync(record_deploy(tenant, deploy_body(sha=SHA.upper(), message="different"), "key:other",
                                        source="cli"))
    assert again.duplicate and again == first and again.message == first.message
    assert len(table_rows(db)) == 1
    assert len(deploy_entries(db)) == 1


@pytest.mark.parametrize(("first", "second", "rows"), [
    ({"service": "checkout"}, {"service": "search"}, 2),      # same commit, two services
    ({"service": DROP}, {"service": DROP}, 1),                # service-less: still idempotent
    ({"service": DROP}, {"service": "checkout"}, 2),
    ({}, {"sha": "0123456789abcdef"}, 2),
])
def test_idempotence_is_per_tenant_sha_and_service(db: Database, tenant: str, first: dict, second: dict,
                                                   rows: int) -> None:
    record(db, tenant, **first)
    record(db, tenant, **second)
    assert len(table_rows(db)) == rows == len(deploy_entries(db))


def test_deploys_are_recorded_per_tenant(db: Database, tenant: str) -> None:
    other = db.write_sync(create_tenant("globex", "test")).id
    mine, theirs = record(db, tenant), record(db, other)
    assert mine.id != theirs.id and not theirs.duplicate
    with db.reader() as conn:
        assert [d.id for d in list_deploys(conn, tenant)] == [mine.id]
        assert [d.id for d in deploys_near(conn, other, OPENED, "checkout")] == [theirs.id]


def test_an_unknown_tenant_is_not_found(db: Database, tenant: str) -> None:
    with pytest.raises(NotFoundError):
        record(db, "t_doesnotexist")
    assert table_rows(db) == []


@pytest.mark.parametrize(("changes", "field"), [
    ({"sha": DROP}, "sha"),
    ({"sha": "abc123"}, "sha"),                      # 6 digits
    ({"sha": "g" * 40}, "sha"),
    ({"sha": "a" * 65}, "sha"),
    ({"sha": 1234567}, "sha"),
    ({"message": "x" * 4097}, "message"),
    ({"author": "a" * 257}, "author"),
    ({"files": ["f"] * 1001}, "files"),
    ({"files": ["ok.py", "x" * 513]}, "files[1]"),
    ({"files": ["ok.py", ""]}, "files[1]"),
    ({"files": "app.py"}, "files"),
    ({"additions": -1}, "additions"),
    ({"deletions": 2.5}, "deletions"),
    ({"deletions": True}, "deletions"),
    ({"time": "yesterday"}, "time"),
    ({"time": "2026-03-01T12:00:00"}, "time"),       # no zone
    ({"time": "2026-02-30T12:00:00Z"}, "time"),      # no such day
    ({"service": "../etc"}, "service"),
    ({"service": "s" * 65}, "service"),
    ({"branch": "main"}, "branch"),
])
def test_an_invalid_deploy_is_refused_naming_the_field(db: Database, tenant: str, changes: dict, field: str) -> None:
    with pytest.raises(SchemaError) as caught:
        record_deploy(tenant, deploy_body(**changes), "key:ci")
    assert caught.value.field == field
    assert table_rows(db) == []


def test_a_minimal_deploy_takes_defaults(db: Database, tenant: str) -> None:
    deploy = db.write_sync(record_deploy(tenant, {"sha": "ABCDEF0"}, "cli:ops", source="cli"))
    assert (deploy.sha, deploy.message, deploy.author, deploy.files, deploy.service) == ("abcdef0", "", None, (), None)
    assert (deploy.additions, deploy.deletions, deploy.source) == (None, None, "cli")
    assert deploy.deployed_at.endswith("Z")  # recorded now, in the ledger's own form


def test_the_schema_is_published_with_its_limits() -> None:
    props = DEPLOY_SCHEMA["properties"]
    assert DEPLOY_SCHEMA["required"] == ["sha"] and DEPLOY_SCHEMA["additionalProperties"] is False
    assert (props["sha"]["minLength"], props["sha"]["maxLength"]) == (7, 64)
    assert props["message"]["maxLength"] == 4096 and props["author"]["maxLength"] == 256
    assert props["files"]["maxItems"] == 1000 and props["files"]["items"]["maxLength"] == 512


# --- personal data and secrets ------------------------------------------------------------------

def _keyed(data_dir: DataDir, value: str) -> str:
    """A person's fingerprint as the format defines it: HMAC-SHA256 under the install's key."""
    key = (data_dir.path / "fingerprint.key").read_bytes()
    return "hmac-sha256:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


def test_the_ledger_never_holds_the_authors_email_or_a_token_from_the_message(db: Database, tenant: str,
                                                                               data_dir: DataDir) -> None:
    message = (f"Rotate the Slack bot\n\nold token was {TOKEN}, spotted by {EMAIL}\n\n"
               f"Co-authored-by: Ada Lovelace <{EMAIL}>")
    deploy = record(db, tenant, author=f"Ada Lovelace <{EMAIL}>", message=message)
    [entry] = deploy_entries(db)
    with db.reader() as conn:
        raw = conn.execute("SELECT body FROM ledger WHERE kind = 'deploy.recorded'").fetchone()[0]
    text = raw.decode() if isinstance(raw, bytes) else raw
    assert EMAIL not in text and "ada.lovelace" not in text
    assert TOKEN not in text and "1234567890-abcdefghij" not in text
    head, _, trailer = entry["data"]["message"].partition("\n\nCo-authored-by: ")
    assert head == ("Rotate the Slack bot\n\nold token was [redacted sha256:9787577eb430f396], spotted by "
                    f"[email {_keyed(data_dir, EMAIL)}]")
    assert re.fullmatch(r"\[person hmac-sha256:[0-9a-f]{16}\]", trailer) and "Ada" not in trailer
    assert entry["data"]["author"] == _keyed(data_dir, f"Ada Lovelace <{EMAIL}>")   # a person: keyed
    assert TOKEN not in json.dumps(table_rows(db)) and TOKEN not in deploy.message  # not at rest either


def test_the_ledgered_message_is_cut_to_500_characters(db: Database, tenant: str) -> None:
    record(db, tenant, message="m" * 495 + TOKEN + "n" * 3000)
    [entry] = deploy_entries(db)
    assert len(entry["data"]["message"]) <= 500 and TOKEN not in entry["data"]["message"]
    assert "xoxb" not in entry["data"]["message"]
    assert entry["data"]["message"].startswith("m" * 495)


# --- the incident's deploy window and relevance --------------------------------------------------

@pytest.mark.parametrize(("offset", "included"), [
    (-601, False),   # 10:01 before
    (-600, True),    # exactly 10 minutes before
    (-599, True),    # 9:59 before
    (0, True),
    (59, True),      # 0:59 after
    (60, True),
    (61, False),     # 1:01 after
])
def test_the_window_runs_from_ten_minutes_before_to_one_minute_after(db: Database, tenant: str, offset: int,
                                                                    included: bool) -> None:
    deploy = record(db, tenant, time=at(offset))
    with db.reader() as conn:
        found = deploys_near(conn, tenant, OPENED, "checkout")
    assert [d.id for d in found] == ([deploy.id] if included else [])


@pytest.mark.parametrize(("incident_service", "expected"), [
    ("checkout", {"checkout", None}),
    ("search", {"search", None}),
    (None, {"checkout", "search", None}),
])
def test_the_window_holds_the_services_own_and_service_less_deploys(
        db: Database, tenant: str, incident_service: str | None, expected: set) -> None:
    for i, service in enumerate(("checkout", "search", DROP)):
        record(db, tenant, sha=f"{i}" * 40, service=service)
    with db.reader() as conn:
        found = deploys_near(conn, tenant, OPENED, incident_service)
    assert {d.service for d in found} == expected


def test_deploys_near_orders_by_service_then_risk_then_time(db: Database, tenant: str) -> None:
    shas = {}
    for name, service, files, offset in [
        ("other_risky_close", DROP, ["db/migrations/1.sql"], -5),
        ("own_plain_close", "checkout", ["README.md"], -10),
        ("own_risky_far", "checkout", ["config/app.yaml"], -500),
        ("own_risky_close", "checkout", ["Dockerfile"], -60),
        ("own_risky_after", "checkout", ["k8s/deploy.yaml"], 30),
    ]:
        shas[record(db, tenant, sha=hashlib.sha1(name.encode()).hexdigest(), service=service, files=files,
                    time=at(offset)).id] = name
    with db.reader() as conn:
        found = deploys_near(conn, tenant, OPENED, "checkout")
    assert [shas[d.id] for d in found] == ["own_risky_after", "own_risky_close", "own_risky_far", "own_plain_close",
                                           "other_risky_close"]
    assert most_relevant(found, "checkout", OPENED) == found[0]


def make_deploy(name: str, service: str | None, files: tuple[str, ...], offset: int) -> Deploy:
    return Deploy(name, "t", service, "a" * 40, "", None, files, None, None, at(offset), "api")


@pytest.mark.parametrize(("deploys", "service", "opened_at", "expected"), [
    ([], "checkout", OPENED, None),
    ([make_deploy("plain", "checkout", ("a.py",), -1), make_deploy("risky", "checkout", ("x.sql",), -300)],
     "checkout", OPENED, "risky"),
    ([make_deploy("serviceless", None, ("x.sql",), -1), make_deploy("own", "checkout", ("a.py",), -300)],
     "checkout", OPENED, "own"),
    ([make_deploy("far", "checkout", ("a.py",), -300), make_deploy("near", "checkout", ("b.py",), -30)],
     "checkout", OPENED, "near"),
    ([make_deploy("after", "checkout", ("a.py",), 20), make_deploy("before", "checkout", ("b.py",), -40)],
     "checkout", OPENED, "after"),
    ([make_deploy("older", "checkout", ("a.py",), -40), make_deploy("newer", "checkout", ("b.py",), -20)],
     "checkout", None, "newer"),   # without the opening time: the newest
    ([make_deploy("risky", "search", ("x.sql",), -300), make_deploy("plain", None, ("a.py",), -1)],
     None, OPENED, "risky"),       # no service to prefer
])
def test_most_relevant_deploy(deploys: list[Deploy], service: str | None, opened_at: str | None,
                              expected: str | None) -> None:
    best = most_relevant(deploys, service, opened_at)
    assert (best.id if best else None) == expected
    if deploys:
        assert rank(list(reversed(deploys)), service, opened_at)[0].id == expected


@pytest.mark.parametrize(("path", "risky"), [
    ("db/migrations/0042_add_index.py", True),
    ("migrations/0001_initial.py", True),
    ("db/migrate/20260301_add_users.rb", True),
    ("alembic/versions/abc123_add.py", True),
    ("sql/reports.SQL", True),
    ("db/schema.rb", True),
    ("prisma/schema.prisma", True),
    ("app/queries/orders.py", True),
    ("app/order_queries.py", True),
    ("app/query.py", True),
    ("config/database.py", True),
    ("app/settings.py", True),
    ("settings/production.py", True),
    ("deploy/values.yaml", True),
    (".github/workflows/ci.yml", True),
    ("pyproject.toml", True),
    ("setup.cfg", True),
    ("tox.ini", True),
    (".env", True),
    (".env.production", True),
    ("services/api/.env", True),
    ("Dockerfile", True),
    ("docker/Dockerfile.prod", True),
    ("docker-compose.override.yml", True),
    ("k8s/deployment.json", True),
    ("helm/checkout/templates/deployment.tpl", True),
    ("charts/checkout/Chart.lock", True),
    ("app/views.py", False),
    ("./db/seed.sql", True),
    ("README.md", False),
    ("static/js/jquery.min.js", False),
    ("docs/environment.md", False),
    ("src/configure_logging.py", False),
    ("tests/test_pool.py", False),
])
def test_risky_paths(path: str, risky: bool) -> None:
    assert risky_paths(["app/views.py", path]) == ([path] if risky else [])


def test_risky_paths_keeps_order_and_drops_repeats() -> None:
    assert risky_paths(["b.sql", "a.py", "Dockerfile", "b.sql"]) == ["b.sql", "Dockerfile"]
    assert all(pattern == pattern.lower() for pattern in RISKY)


# --- GitHub push webhook ------------------------------------------------------------------------

DOC_SECRET = "It's a Secret to Everybody"          # GitHub's documented test vector
DOC_BODY = b"Hello, World!"
DOC_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@pytest.mark.parametrize(("secret", "header", "body", "ok"), [
    (DOC_SECRET, DOC_SIGNATURE, DOC_BODY, True),
    (DOC_SECRET, DOC_SIGNATURE.upper().replace("SHA256=", "sha256="), DOC_BODY, True),
    ("another secret", DOC_SIGNATURE, DOC_BODY, False),
    (DOC_SECRET, DOC_SIGNATURE, b"Hello, World?", False),
    (DOC_SECRET, None, DOC_BODY, False),
    (DOC_SECRET, "", DOC_BODY, False),
    (DOC_SECRET, DOC_SIGNATURE.replace("sha256=", "sha1="), DOC_BODY, False),
    (DOC_SECRET, DOC_SIGNATURE.removeprefix("sha256="), DOC_BODY, False),
    (DOC_SECRET, DOC_SIGNATURE[:-2], DOC_BODY, False),
    (DOC_SECRET, DOC_SIGNATURE + "é", DOC_BODY, False),
    ("", "sha256=" + hmac.new(b"", DOC_BODY, hashlib.sha256).hexdigest(), DOC_BODY, False),
])
def test_github_signature(secret: str, header: str | None, body: bytes, ok: bool) -> None:
    assert verify_github_signature(secret, header, body) is ok


def github_push() -> dict[str, Any]:
    """A push event as GitHub sends it (abridged: repository and sender carry many more fields)."""
    return {
        "ref": "refs/heads/main",
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "repository": {"id": 35129377, "name": "checkout", "full_name": "acme/checkout", "private": True,
                       "owner": {"name": "acme", "email": None, "login": "acme"},
                       "html_url": "https://github.com/acme/checkout", "default_branch": "main",
                       "created_at": 1430869212, "updated_at": "2026-02-27T18:03:51Z", "pushed_at": 1772366280},
        "pusher": {"name": "ada", "email": EMAIL},
        "sender": {"login": "ada", "id": 21031067, "type": "User"},
        "created": False, "deleted": False, "forced": False, "base_ref": None,
        "compare": "https://github.com/acme/checkout/compare/6113728f27ae...0d1a26e67d8f",
        "commits": [
            {"id": "b1b5a8d1e6bd0e2f9c5a1f3f0e9f4b0b8a3c2d1e", "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
             "distinct": True, "message": "Add index on orders.created_at",
             "timestamp": "2026-03-01T12:52:10+01:00",
             "url": "https://github.com/acme/checkout/commit/b1b5a8d1e6bd0e2f9c5a1f3f0e9f4b0b8a3c2d1e",
             "author": {"name": "Ada Lovelace", "email": EMAIL, "username": "ada"},
             "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
             "added": ["db/migrations/0042_orders_created_at.py"], "removed": [], "modified": ["app/orders.py"]},
            {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "tree_id": "1e5cf4f4fd33f1ba4f73a4be06dcdb2ca8d3e6a1",
             "distinct": True, "message": f"Bump pool size\n\nslack {TOKEN} leaked here\n\n"
                                          f"Co-authored-by: Ada Lovelace <{EMAIL}>",
             "timestamp": "2026-03-01T12:55:02+01:00",
             "url": "https://github.com/acme/checkout/commit/0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
             "author": {"name": "Grace Hopper", "email": "grace@example.com", "username": "grace"},
             "committer": {"name": "Grace Hopper", "email": "grace@example.com", "username": "grace"},
             "added": [], "removed": ["config/old.yaml"], "modified": ["config/app.yaml", "app/pool.py"]},
        ],
        "head_commit": {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"},
    }


def test_a_github_push_becomes_one_deploy_body_per_commit() -> None:
    first, second = parse_github_push(github_push(), "checkout")
    pushed = "2026-03-01T11:58:00.000000Z"   # repository.pushed_at, not the commits' authoring times
    assert first == {"sha": "b1b5a8d1e6bd0e2f9c5a1f3f0e9f4b0b8a3c2d1e", "message": "Add index on orders.created_at",
                     "author": "Ada Lovelace",
                     "files": ["db/migrations/0042_orders_created_at.py", "app/orders.py"],
                     "additions": None, "deletions": None, "time": pushed, "service": "checkout"}
    assert second["files"] == ["config/old.yaml", "config/app.yaml", "app/pool.py"]
    assert second["author"] == "Grace Hopper"
    assert "email" not in json.dumps(first)
    assert "service" not in parse_github_push(github_push(), None)[0]


def test_without_pushed_at_the_commit_time_is_used() -> None:
    payload = github_push()
    del payload["repository"]["pushed_at"]
    times = [body["time"] for body in parse_github_push(payload, None)]
    assert times == ["2026-03-01T12:52:10+01:00", "2026-03-01T12:55:02+01:00"]


def test_a_push_without_commits_records_nothing() -> None:
    payload = github_push()
    payload.update(commits=[], deleted=True, after="0" * 40)
    assert parse_github_push(payload, "checkout") == []


def test_an_oversized_commit_is_cut_to_fit_keeping_risky_files() -> None:
    payload = github_push()
    commit = payload["commits"][0]
    commit.update(message="x" * 10_000, author={"name": "n" * 300},
                  modified=[f"src/module_{i}.py" for i in range(1500)] + ["db/schema.sql"])
    body = parse_github_push(payload, None)[0]
    assert len(body["message"]) == 4096 and len(body["author"]) == 256
    assert len(body["files"]) == 1000
    assert body["files"][:2] == ["db/migrations/0042_orders_created_at.py", "db/schema.sql"]
    record_deploy("t", body, "github")  # passes the schema (raises SchemaError otherwise)


def with_change(path: tuple, value: Any) -> dict[str, Any]:
    payload = github_push()
    target: Any = payload
    for key in path[:-1]:
        target = target[key]
    if value is DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return payload


@pytest.mark.parametrize(("payload", "field"), [
    (["not", "an", "object"], "$"),
    (with_change(("commits",), DROP), "commits"),
    (with_change(("commits",), "many"), "commits"),
    (with_change(("commits", 1), "0d1a26e"), "commits[1]"),
    (with_change(("commits", 0, "id"), DROP), "commits[0].id"),
    (with_change(("commits", 0, "id"), "not-a-sha"), "commits[0].id"),
    (with_change(("commits", 0, "message"), 42), "commits[0].message"),
    (with_change(("commits", 0, "author"), "Ada"), "commits[0].author"),
    (with_change(("commits", 1, "modified"), "app.py"), "commits[1].modified"),
    (with_change(("commits", 1, "modified", 0), None), "commits[1].modified[0]"),
    (with_change(("commits", 0, "additions"), -3), "commits[0].additions"),
    (with_change(("repository", "pushed_at"), "last tuesday"), "repository.pushed_at"),
    (with_change(("repository", "pushed_at"), DROP) | {"commits": [
        {**github_push()["commits"][0], "timestamp": "2026-03-01"}]}, "commits[0].timestamp"),
])
def test_a_malformed_push_is_refused_naming_the_field(payload: Any, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_github_push(payload, "checkout")
    assert caught.value.field == field
    assert isinstance(caught.value, FieldError)


def test_a_push_recorded_end_to_end_keeps_people_and_tokens_out_of_the_ledger(db: Database, tenant: str) -> None:
    raw = json.dumps(github_push()).encode()
    secret = "whsec_push_test"
    header = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    assert verify_github_signature(secret, header, raw)
    recorded = [db.write_sync(record_deploy(tenant, body, "github:acme/checkout", source="github"))
                for body in parse_github_push(json.loads(raw), "checkout")]
    again = [db.write_sync(record_deploy(tenant, body, "github:acme/checkout", source="github"))
             for body in parse_github_push(json.loads(raw), "checkout")]   # GitHub redelivers
    assert [d.duplicate for d in again] == [True, True] and again == recorded
    entries = deploy_entries(db)
    assert len(entries) == 2
    ledger_text = json.dumps(entries)
    for personal in (EMAIL, "grace@example.com", "Ada Lovelace", "Grace Hopper", TOKEN):
        assert personal not in ledger_text
    with db.reader() as conn:
        found = deploys_near(conn, tenant, "2026-03-01T12:03:00Z", "checkout")
        best = most_relevant(found, "checkout", "2026-03-01T12:03:00Z")
    assert {d.id for d in found} == {d.id for d in recorded}
    assert best is not None and best.risky
