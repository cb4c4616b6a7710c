"""Commit context for diagnosis: deploy records (API, GitHub push, CLI), risky paths, deploys near an incident."""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import NotFoundError
from ..ledger.entry import (
    LedgerEvent,
    identity_fingerprint,
    is_rfc3339,
    normal_ts,
    redact,
    utc_timestamp,
)
from ..schema import SchemaError, validate
from ..signals.ingest import PayloadError
from ..signals.ingest.common import (
    ROOT,
    check_str,
    index,
    join,
    need_list,
    need_object,
    need_str,
    type_name,
)
from ..store import WriteTx
from ..tenancy.tenants import NAME_SCHEMA

MAX_MESSAGE = 4096
MAX_AUTHOR = 256
MAX_FILES = 1000
MAX_PATH = 512
MAX_PUSH_COMMITS = 2048         # GitHub's own cap on a push event's commits[]
LEDGER_MESSAGE = 500            # characters of the (redacted) message a ledger entry keeps
LEDGER_RISKY = 50               # risky paths a ledger entry lists (the rest are counted)
WINDOW_BEFORE = 600             # seconds before an incident opened that a deploy is context
WINDOW_AFTER = 60               # ... and after (clocks of CI and appliance disagree a little)
SIGNATURE_HEADER = "X-Hub-Signature-256"

_SHA = r"^[0-9A-Fa-f]{7,64}$"
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second an RFC 3339 time can name
_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
_SOURCE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
# Git trailers that name people: "Co-authored-by: Ada <ada@…>", "Signed-off-by: …", "Reviewed-by: …".
_PERSON_TRAILER_RE = re.compile(r"^([ \t]*[A-Za-z][A-Za-z-]*-by:[ \t]*)(\S.*)$", re.MULTILINE)
_COLUMNS = "id, tenant, service, sha, message, author, files, additions, deletions, deployed_at, source"

DEPLOY_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["sha"],
    "properties": {
        "sha": {"type": "string", "minLength": 7, "maxLength": 64, "pattern": _SHA,
                "description": "commit id, 7-64 hex digits"},
        "message": {"type": "string", "maxLength": MAX_MESSAGE, "description": "commit message (default empty)"},
        "author": {"type": ["string", "null"], "maxLength": MAX_AUTHOR,
                   "description": "personal data: ledgered only as a fingerprint"},
        "files": {"type": "array", "maxItems": MAX_FILES,
                  "items": {"type": "string", "minLength": 1, "maxLength": MAX_PATH},
                  "description": "paths changed (default none)"},
        "additions": {"type": ["integer", "null"], "minimum": 0},
        "deletions": {"type": ["integer", "null"], "minimum": 0},
        "time": {"type": "string", "maxLength": 64, "pattern": _RFC3339,
                 "description": "RFC 3339 time of the deploy (default: when recorded)"},
        "service": {**NAME_SCHEMA, "type": ["string", "null"],
                    "description": "the service deployed; none means it may concern any service"},
    },
}

# Paths whose change often explains an incident: matched (fnmatch, case-insensitive) against
# "/" + the path, so "*/migrations/*" also matches a top-level "migrations/…".
RISKY: tuple[str, ...] = (
    # database migrations, queries and schema
    "*/migrations/*", "*/migrate/*", "*/alembic/*", "*.sql", "*schema*", "*/quer[yi]*", "*_quer[yi]*",
    # configuration
    "*/config/*", "*/configs/*", "*/config.*", "*/settings/*", "*/settings.*", "*.yaml", "*.yml", "*.toml",
    "*.ini", "*.cfg", "*.conf", "*/.env", "*/.env.*", "*.env",
    # images and orchestration
    "*/dockerfile", "*/dockerfile.*", "*.dockerfile", "*/docker-compose*", "*/k8s/*", "*/kubernetes/*",
    "*/helm/*", "*/charts/*", "*/manifests/*", "*/kustomization.*",
)


@dataclass(frozen=True)
class Deploy:
    """One recorded deploy. ``duplicate`` is True when record_deploy found it already recorded."""

    id: str
    tenant: str
    service: str | None
    sha: str
    message: str
    author: str | None
    files: tuple[str, ...]
    additions: int | None
    deletions: int | None
    deployed_at: str
    source: str
    duplicate: bool = field(default=False, compare=False)

    @property
    def risky(self) -> list[str]:
        return risky_paths(self.files)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "service": self.service, "sha": self.sha,
                "message": self.message, "author": self.author, "files": list(self.files),
                "risky_paths": self.risky, "additions": self.additions, "deletions": self.deletions,
                "time": self.deployed_at, "source": self.source}


# --- risky paths --------------------------------------------------------------------------------

def is_risky(path: str) -> bool:
    probe = path.strip().lower()
    while probe.startswith("./"):
        probe = probe[2:]
    probe = "/" + probe.lstrip("/")
    return any(fnmatch.fnmatchcase(probe, pattern) for pattern in RISKY)


def risky_paths(files: Iterable[str]) -> list[str]:
    """The files (as given, first occurrence, in order) that match a RISKY pattern."""
    seen: set[str] = set()
    out = []
    for path in files:
        if path not in seen and is_risky(path):
            seen.add(path)
            out.append(path)
    return out


# --- recording ----------------------------------------------------------------------------------

def new_deploy_id() -> str:
    return "dep_" + secrets.token_hex(8)


def record_deploy(tenant: str, body: Mapping[str, Any], actor: str,
                  source: str = "api") -> Callable[[WriteTx], Deploy]:
    """Validate a deploy body (raises SchemaError naming the field) and return the write that stores
    and ledgers it. Recording the same (tenant, sha, service) again returns the stored deploy, with
    ``duplicate`` set and nothing ledgered."""
    validate(DEPLOY_SCHEMA, body)
    if not _SOURCE_RE.match(source):
        raise SchemaError("source", "must be a short lower-case word")
    when = body.get("time")
    if when is not None and not is_rfc3339(when):
        raise SchemaError("time", "must be an RFC 3339 time with a zone")
    sha = body["sha"].lower()
    service = body.get("service")
    files = tuple(dict.fromkeys(body.get("files", ())))
    message = redact(body.get("message", ""))     # credentials never rest in the table either
    author, additions, deletions = body.get("author"), body.get("additions"), body.get("deletions")

    def write(tx: WriteTx) -> Deploy:
        if tx.execute("SELECT 1 FROM tenants WHERE id = ?", (tenant,)).fetchone() is None:
            raise NotFoundError("tenant")
        row = tx.execute(f"SELECT {_COLUMNS} FROM deploys WHERE tenant = ? AND sha = ? AND service IS ?",
                         (tenant, sha, service)).fetchone()
        if row is not None:
            return _from_row(row, duplicate=True)
        deploy = Deploy(new_deploy_id(), tenant, service, sha, message, author, files, additions, deletions,
                        normal_ts(when) or utc_timestamp(), source)
        tx.execute(f"INSERT INTO deploys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (deploy.id, tenant, service, sha, deploy.message, deploy.author, json.dumps(list(files)),
                    deploy.additions, deploy.deletions, deploy.deployed_at, source))
        tx.append(LedgerEvent(kind="deploy.recorded", tenant=tenant, actor=actor,
                              reason=f"deploy {sha[:12]} of {service or 'any service'} recorded ({source})",
                              data=ledger_view(deploy)))
        return deploy
    return write


def ledger_view(deploy: Deploy) -> dict[str, Any]:
    """What the ledger keeps of a deploy: the author only as a fingerprint; the message with
    credentials and people (see :func:`scrub`) replaced by fingerprints, cut to LEDGER_MESSAGE characters."""
    risky = deploy.risky
    return {"deploy": deploy.id, "sha": deploy.sha, "service": deploy.service,
            "author": identity_fingerprint(deploy.author) if deploy.author else None,
            "message": scrub(scrub(deploy.message)[:LEDGER_MESSAGE]),  # scrubbed again: a cut can expose a match
            "file_count": len(deploy.files),
            "risky_paths": [scrub(p) for p in risky[:LEDGER_RISKY]], "risky_count": len(risky),
            "additions": deploy.additions, "deletions": deploy.deletions, "time": deploy.deployed_at,
            "source": deploy.source}


def scrub(text: str) -> str:
    """``redact(text)`` with the people a message names also fingerprinted: the value of every
    ``*-by:`` trailer, and any other e-mail address."""
    text = _PERSON_TRAILER_RE.sub(lambda m: f"{m.group(1)}[person {identity_fingerprint(m.group(2).strip())}]",
                                  redact(text))
    return _EMAIL_RE.sub(lambda m: f"[email {identity_fingerprint(m.group().lower())}]", text)


# --- reading ------------------------------------------------------------------------------------

def _from_row(row: Sequence[Any], *, duplicate: bool = False) -> Deploy:
    return Deploy(row[0], row[1], row[2], row[3], row[4], row[5], tuple(json.loads(row[6])), row[7], row[8],
                  row[9], row[10], duplicate)


def list_deploys(conn: sqlite3.Connection, tenant: str, *, service: str | None = None,
                 limit: int = 50) -> list[Deploy]:
    """A tenant's deploys, newest first (of one service and the service-less ones, if given)."""
    sql = f"SELECT {_COLUMNS} FROM deploys WHERE tenant = ?"
    params: list[Any] = [tenant]
    if service is not None:
        sql += " AND (service = ? OR service IS NULL)"
        params.append(service)
    sql += " ORDER BY deployed_at DESC, id LIMIT ?"
    params.append(limit)
    return [_from_row(r) for r in conn.execute(sql, params)]


def deploys_near(conn: sqlite3.Connection, tenant: str, opened_at: str, service: str | None,
                 before: float = WINDOW_BEFORE, after: float = WINDOW_AFTER) -> list[Deploy]:
    """Deploys from ``before`` seconds before to ``after`` seconds after ``opened_at`` (both ends
    included) of ``service`` or of no service — of any service when ``service`` is None — most
    relevant first (see :func:`rank`)."""
    opened = _parse_time(opened_at)
    low = utc_timestamp(opened - _dt.timedelta(seconds=before))
    high = utc_timestamp(opened + _dt.timedelta(seconds=after))
    sql = f"SELECT {_COLUMNS} FROM deploys WHERE tenant = ? AND deployed_at >= ? AND deployed_at <= ?"
    params: list[Any] = [tenant, low, high]
    if service is not None:
        sql += " AND (service = ? OR service IS NULL)"
        params.append(service)
    return rank([_from_row(r) for r in conn.execute(sql, params)], service, opened_at)


def rank(deploys: Iterable[Deploy], service: str | None, opened_at: str | None = None) -> list[Deploy]:
    """Most relevant first: the incident's own service before service-less (or other) deploys, then
    deploys touching risky paths, then the closest in time to ``opened_at`` (without it: the newest)."""
    opened = _parse_time(opened_at) if opened_at is not None else None

    def key(d: Deploy) -> tuple[int, int, float, float, str]:
        at = _parse_time(d.deployed_at).timestamp()
        distance = abs(at - opened.timestamp()) if opened is not None else 0.0
        return (0 if service is not None and d.service == service else 1, 0 if d.risky else 1, distance, -at, d.id)
    return sorted(deploys, key=key)


def most_relevant(deploys: Iterable[Deploy], service: str | None, opened_at: str | None = None) -> Deploy | None:
    """The deploy an alert shows (the first of :func:`rank`), or None."""
    ranked = rank(deploys, service, opened_at)
    return ranked[0] if ranked else None


def _parse_time(value: str) -> _dt.datetime:
    parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return parsed


# --- GitHub-compatible push webhook -------------------------------------------------------------

def verify_github_signature(secret: str, header: str | None, body: bytes) -> bool:
    """Whether ``header`` (``X-Hub-Signature-256: sha256=<hex>``) is the HMAC-SHA256 of ``body`` under
    ``secret``; compared in constant time. An empty secret verifies nothing."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().lower().encode("utf-8", "replace"))


def parse_github_push(payload: Any, service: str | None) -> list[dict[str, Any]]:
    """Deploy bodies for :func:`record_deploy`, one per commit of a GitHub push event.

    ``files`` is added + removed + modified (risky paths first when a commit lists more than
    MAX_FILES); ``additions`` / ``deletions`` are None unless the commit carries them. The time is
    the push's (``repository.pushed_at``) when present — commits may be authored long before they
    are pushed — else the commit's ``timestamp``. Over-long messages, authors and paths are cut;
    anything of the wrong shape raises PayloadError naming its JSON path. A push without commits
    (a deleted branch, a tag) gives none."""
    obj = need_object(payload, ROOT)
    if obj.get("commits") is None:
        raise PayloadError("commits", "is required")
    commits = need_list(obj["commits"], "commits", MAX_PUSH_COMMITS)
    pushed_at = _pushed_at(obj)
    bodies = []
    for i, raw in enumerate(commits):
        path = index("commits", i)
        commit = need_object(raw, path)
        sha = need_str(commit, "id", path, max_len=64)
        assert sha is not None
        if not re.fullmatch(_SHA, sha):
            raise PayloadError(join(path, "id"), "must be a commit id of 7-64 hex digits")
        message = need_str(commit, "message", path, max_len=1 << 20, required=False, allow_empty=True) or ""
        body: dict[str, Any] = {"sha": sha.lower(), "message": message[:MAX_MESSAGE],
                                "author": _author(commit, path), "files": _files(commit, path),
                                "additions": _count(commit, "additions", path),
                                "deletions": _count(commit, "deletions", path),
                                "time": pushed_at or _commit_time(commit, path)}
        if service is not None:
            body["service"] = service
        bodies.append(body)
    return bodies


def _pushed_at(obj: Mapping[str, Any]) -> str | None:
    repo = obj.get("repository")
    if repo is None:
        return None
    value = need_object(repo, "repository").get("pushed_at")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= LAST_SECOND:
        return utc_timestamp(_dt.datetime.fromtimestamp(value, _dt.timezone.utc))
    if isinstance(value, str) and re.fullmatch(_RFC3339, value) and is_rfc3339(value):
        return value
    raise PayloadError("repository.pushed_at", "must be a Unix time or an RFC 3339 timestamp")


def _commit_time(commit: Mapping[str, Any], path: str) -> str:
    text = need_str(commit, "timestamp", path, max_len=64)
    assert text is not None
    if not re.fullmatch(_RFC3339, text) or not is_rfc3339(text):
        raise PayloadError(join(path, "timestamp"), "must be an RFC 3339 timestamp")
    return text


def _author(commit: Mapping[str, Any], path: str) -> str | None:
    """The author's name (or username); the e-mail address is personal data not needed here."""
    author = commit.get("author")
    if author is None:
        return None
    sub = join(path, "author")
    who = need_object(author, sub)
    for key in ("name", "username"):
        value = need_str(who, key, sub, max_len=1 << 16, required=False, allow_empty=True)
        if value:
            return value[:MAX_AUTHOR]
    return None


def _files(commit: Mapping[str, Any], path: str) -> list[str]:
    files: list[str] = []
    for key in ("added", "removed", "modified"):
        if commit.get(key) is None:
            continue
        sub = join(path, key)
        for j, item in enumerate(need_list(commit[key], sub, 1 << 16)):
            text = check_str(item, index(sub, j), max_len=1 << 16, allow_empty=False)
            files.append(text[:MAX_PATH])
    files = list(dict.fromkeys(files))
    if len(files) > MAX_FILES:
        risky = risky_paths(files)
        chosen = set(risky[:MAX_FILES])
        files = risky[:MAX_FILES] + [f for f in files if f not in chosen][:MAX_FILES - len(chosen)]
    return files


def _count(commit: Mapping[str, Any], key: str, path: str) -> int | None:
    value = commit.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PayloadError(join(path, key), f"must be a whole number of lines, not {type_name(value)}")
    return value
