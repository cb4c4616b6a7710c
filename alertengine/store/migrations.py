"""Schema migrations: small named functions, applied in order and recorded in ``_migrations``."""

from __future__ import annotations

import sqlite3
from typing import Callable

from ..ledger.entry import utc_timestamp

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def _append_only(conn: sqlite3.Connection, table: str) -> None:
    """Refuse UPDATE and DELETE on ``table`` in the database itself."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        conn.execute(f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                     f"$$ BEGIN RAISE EXCEPTION '{table} is append-only' USING ERRCODE = 'integrity_constraint_violation'; "
                     f"END $$")
        for op, each in (("UPDATE", "ROW"), ("DELETE", "ROW"), ("TRUNCATE", "STATEMENT")):
            conn.execute(f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                         f"FOR EACH {each} EXECUTE FUNCTION {table}_append_only()")
        return
    for op in ("UPDATE", "DELETE"):
        conn.execute(
            f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")


@migration
def m001_ledger(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE ledger (
            seq INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            tseq INTEGER NOT NULL,
            incident TEXT,
            kind TEXT NOT NULL,
            ts TEXT NOT NULL,
            body BLOB NOT NULL,
            leaf_hash BLOB NOT NULL
        )""")
    conn.execute("CREATE UNIQUE INDEX ledger_tenant_tseq ON ledger(tenant, tseq)")
    conn.execute("CREATE INDEX ledger_incident ON ledger(incident, tenant) WHERE incident IS NOT NULL")
    _append_only(conn, "ledger")
    # Working state of the Merkle tree (not evidence: rebuilt from leaf hashes if it disagrees).
    conn.execute("CREATE TABLE ledger_head (id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL, "
                 "frontier BLOB NOT NULL)")
    conn.execute("""
        CREATE TABLE checkpoints (
            size INTEGER PRIMARY KEY,
            root BLOB NOT NULL,
            note TEXT NOT NULL,
            reason TEXT NOT NULL,
            created TEXT NOT NULL
        )""")
    _append_only(conn, "checkpoints")


def apply_migrations(conn: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction. Returns their names."""
    # Under the writer's lock, and each step checked again once inside it: appliance nodes sharing
    # one PostgreSQL database may start at the same moment.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("COMMIT")   # another node applied it meanwhile
                continue
            fn(conn)
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, utc_timestamp()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


@migration
def m002_tenancy(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            shadow INTEGER NOT NULL DEFAULT 1,
            created TEXT NOT NULL
        )""")
    conn.execute("""
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            tenant TEXT REFERENCES tenants(id),
            role TEXT NOT NULL,
            name TEXT NOT NULL,
            key_hash BLOB NOT NULL,
            created TEXT NOT NULL,
            created_by TEXT NOT NULL,
            revoked TEXT,
            last_used TEXT
        )""")
    conn.execute("CREATE INDEX api_keys_tenant ON api_keys(tenant)")
    conn.execute("""
        CREATE TABLE services (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL REFERENCES tenants(id),
            name TEXT NOT NULL,
            spec TEXT NOT NULL,
            webhook_secret BLOB NOT NULL,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            UNIQUE (tenant, name)
        )""")
    conn.execute("""
        CREATE TABLE channels (
            tenant TEXT NOT NULL REFERENCES tenants(id),
            kind TEXT NOT NULL,
            config TEXT NOT NULL,
            secrets BLOB,
            updated TEXT NOT NULL,
            PRIMARY KEY (tenant, kind)
        )""")


@migration
def m003_engine(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE policies (tenant TEXT PRIMARY KEY REFERENCES tenants(id), source TEXT NOT NULL, "
                 "version TEXT NOT NULL, updated TEXT NOT NULL)")
    conn.execute("CREATE TABLE incident_counters (tenant TEXT PRIMARY KEY, last INTEGER NOT NULL)")
    conn.execute("""
        CREATE TABLE incidents (
            tenant TEXT NOT NULL,
            id TEXT NOT NULL,
            service_id TEXT,
            service_name TEXT,
            fingerprint TEXT NOT NULL,
            source TEXT NOT NULL,
            title TEXT NOT NULL,
            stage TEXT NOT NULL,
            priority TEXT NOT NULL,
            action TEXT,
            is_open INTEGER NOT NULL,
            acknowledged_by TEXT,
            opened_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            closed_at TEXT,
            PRIMARY KEY (tenant, id)
        )""")
    # Exactly one open incident per service and fingerprint, whatever races the writer sees.
    conn.execute("CREATE UNIQUE INDEX incidents_one_open ON incidents(tenant, fingerprint) WHERE is_open = 1")
    conn.execute("CREATE INDEX incidents_by_stage ON incidents(tenant, is_open, opened_at)")
    conn.execute("""
        CREATE TABLE timers (
            id INTEGER PRIMARY KEY,
            tenant TEXT NOT NULL,
            incident TEXT,
            kind TEXT NOT NULL,
            due TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}',
            done TEXT
        )""")
    conn.execute("CREATE INDEX timers_due ON timers(due) WHERE done IS NULL")
    conn.execute("""
        CREATE TABLE integration_keys (
            key_hash BLOB PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL REFERENCES tenants(id),
            name TEXT NOT NULL,
            created TEXT NOT NULL,
            revoked TEXT
        )""")


@migration
def m004_heartbeats(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE heartbeats (
            tenant TEXT NOT NULL REFERENCES tenants(id),
            name TEXT NOT NULL,
            interval REAL NOT NULL,
            last_seen TEXT NOT NULL,
            due TEXT NOT NULL,
            missed INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant, name)
        )""")
    conn.execute("CREATE INDEX heartbeats_due ON heartbeats(due) WHERE missed = 0")


@migration
def m005_approvals(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE approvals (
            jti TEXT PRIMARY KEY,
            ref TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            incident TEXT NOT NULL,
            proposal INTEGER NOT NULL,
            action TEXT NOT NULL,
            choice TEXT,
            recipient TEXT NOT NULL,
            created TEXT NOT NULL,
            expires TEXT NOT NULL,
            used_at TEXT,
            used_by TEXT,
            outcome TEXT
        )""")
    conn.execute("CREATE INDEX approvals_incident ON approvals(tenant, incident)")
    conn.execute("""
        CREATE TABLE dead_letters (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            incident TEXT NOT NULL,
            url TEXT NOT NULL,
            payload TEXT NOT NULL,
            attempts TEXT NOT NULL,
            final_status INTEGER,
            detail TEXT NOT NULL,
            created TEXT NOT NULL,
            retried_at TEXT
        )""")
    conn.execute("CREATE INDEX dead_letters_tenant ON dead_letters(tenant, created)")


@migration
def m006_diagnosis(conn: sqlite3.Connection) -> None:
    # Full prompts and responses of every AI exchange (already redacted); the ledger holds their hashes.
    conn.execute("""
        CREATE TABLE ai_exchanges (
            id INTEGER PRIMARY KEY,
            tenant TEXT NOT NULL,
            incident TEXT,
            model TEXT NOT NULL,
            prompt TEXT NOT NULL,
            response TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            created TEXT NOT NULL
        )""")
    conn.execute("CREATE INDEX ai_exchanges_tenant ON ai_exchanges(tenant, created)")


@migration
def m007_deploys(conn: sqlite3.Connection) -> None:
    # Commit context for diagnosis (deploys.py).
    conn.execute("""
        CREATE TABLE deploys (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            service TEXT,
            sha TEXT NOT NULL,
            message TEXT NOT NULL,
            author TEXT,
            files TEXT NOT NULL,
            additions INTEGER,
            deletions INTEGER,
            deployed_at TEXT NOT NULL,
            source TEXT NOT NULL,
            UNIQUE (tenant, sha, service)
        )""")
    conn.execute("CREATE INDEX deploys_by_time ON deploys(tenant, deployed_at)")
    conn.execute("CREATE UNIQUE INDEX deploys_one_serviceless ON deploys(tenant, sha) WHERE service IS NULL")


@migration
def m008_incident_episodes(conn: sqlite3.Connection) -> None:
    # How many incidents of a fingerprint have closed: an alert's episode (detection.py).
    conn.execute("CREATE INDEX incidents_by_fingerprint ON incidents(tenant, fingerprint, is_open)")


@migration
def m009_witnesses(conn: sqlite3.Connection) -> None:
    # The newest checkpoint each witness cosigned, and every cosignature received (publish.py).
    conn.execute("CREATE TABLE witness_state (witness TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, "
                 "cosigned_at INTEGER NOT NULL)")
    conn.execute("CREATE TABLE cosignatures (size INTEGER NOT NULL, witness TEXT NOT NULL, line TEXT NOT NULL, "
                 "cosigned_at INTEGER NOT NULL, PRIMARY KEY (size, witness))")


@migration
def m010_notify(conn: sqlite3.Connection) -> None:
    # An incident's labels (an alert's, when it came from one): what routing rules, silences and
    # inhibition rules match on (incidents/engine.py writes them, notify/ reads them).
    conn.execute("ALTER TABLE incidents ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'")
    # People and teams a tenant routes notifications to (notify/people.py).
    conn.execute("CREATE TABLE people (tenant TEXT NOT NULL REFERENCES tenants(id), id TEXT NOT NULL, "
                 "spec TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (tenant, id))")
    conn.execute("CREATE TABLE teams (tenant TEXT NOT NULL REFERENCES tenants(id), id TEXT NOT NULL, "
                 "spec TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (tenant, id))")
    # The tenant's routing document (routes, inhibition, defaults), versioned by content (notify/routes.py).
    conn.execute("CREATE TABLE routing (tenant TEXT PRIMARY KEY REFERENCES tenants(id), source TEXT NOT NULL, "
                 "version TEXT NOT NULL, updated TEXT NOT NULL)")
    # Silences and maintenance windows (notify/silences.py).
    conn.execute("""
        CREATE TABLE silences (
            tenant TEXT NOT NULL REFERENCES tenants(id),
            id TEXT NOT NULL,
            spec TEXT NOT NULL,
            starts_at TEXT NOT NULL,
            ends_at TEXT,
            created_by TEXT NOT NULL,
            created TEXT NOT NULL,
            expired_at TEXT,
            told TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (tenant, id)
        )""")
    # The durable outbox: one row per notification, recipient and message (notify/outbox.py).
    conn.execute("""
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            tenant TEXT NOT NULL,
            incident TEXT,
            recipient TEXT NOT NULL,
            event TEXT NOT NULL,
            body TEXT NOT NULL,
            sealed BLOB,
            route TEXT,
            state TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            channel_index INTEGER NOT NULL DEFAULT 0,
            channel_failures INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at REAL NOT NULL,
            deadline REAL NOT NULL,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            channel TEXT
        )""")
    conn.execute("CREATE INDEX outbox_pending ON outbox(next_at) WHERE state IN ('queued', 'sending', 'held')")
    conn.execute("CREATE INDEX outbox_by_recipient ON outbox(tenant, recipient, id) "
                 "WHERE state IN ('queued', 'sending', 'held')")
    conn.execute("CREATE INDEX outbox_by_state ON outbox(tenant, state, id)")
    # Per-rule counters: rate limits and escalate_after windows, and route statistics.
    conn.execute("CREATE TABLE route_hits (tenant TEXT NOT NULL, rule TEXT NOT NULL, at REAL NOT NULL)")
    conn.execute("CREATE INDEX route_hits_by_rule ON route_hits(tenant, rule, at)")
    conn.execute("CREATE TABLE route_stats (tenant TEXT NOT NULL, rule TEXT NOT NULL, what TEXT NOT NULL, "
                 "count INTEGER NOT NULL, PRIMARY KEY (tenant, rule, what))")


@migration
def m011_notify_groups(conn: sqlite3.Connection) -> None:
    # Alertmanager-style groups of notifications (notify/grouping.py): one message per group and flush.
    conn.execute("""
        CREATE TABLE notify_groups (
            tenant TEXT NOT NULL,
            key TEXT NOT NULL,
            rule TEXT NOT NULL,
            recipient TEXT NOT NULL,
            labels TEXT NOT NULL,
            next_flush REAL,
            last_sent REAL,
            wait REAL NOT NULL,
            interval REAL NOT NULL,
            repeat REAL NOT NULL,
            members TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (tenant, key)
        )""")
    conn.execute("CREATE INDEX notify_groups_due ON notify_groups(next_flush) WHERE next_flush IS NOT NULL")
    conn.execute("ALTER TABLE outbox ADD COLUMN group_key TEXT")
    conn.execute("CREATE INDEX outbox_grouped ON outbox(tenant, group_key) WHERE state = 'grouped'")


@migration
def m012_route_hits_sent(conn: sqlite3.Connection) -> None:
    # Whether a rule's match sent anything: rate limits count only what was sent (notify/router.py).
    conn.execute("ALTER TABLE route_hits ADD COLUMN sent INTEGER NOT NULL DEFAULT 1")


@migration
def m013_escalations(conn: sqlite3.Connection) -> None:
    # Each open incident's escalation chain: where it stands and when its next step is due (notify/escalation.py).
    conn.execute("""
        CREATE TABLE escalations (
            tenant TEXT NOT NULL,
            incident TEXT NOT NULL,
            chain TEXT NOT NULL,
            routing_version TEXT NOT NULL,
            step INTEGER NOT NULL,
            round INTEGER NOT NULL,
            round_start REAL NOT NULL,
            due REAL,
            state TEXT NOT NULL,
            updated TEXT NOT NULL,
            PRIMARY KEY (tenant, incident)
        )""")
    conn.execute("CREATE INDEX escalations_due ON escalations(due) WHERE due IS NOT NULL")


@migration
def m014_alert_occurrences(conn: sqlite3.Connection) -> None:
    # Every firing alert for an open incident, repeats included: what priority escalation counts (detection.py).
    conn.execute("CREATE TABLE alert_occurrences (tenant TEXT NOT NULL, incident TEXT NOT NULL, at REAL NOT NULL)")
    conn.execute("CREATE INDEX alert_occurrences_by_incident ON alert_occurrences(tenant, incident, at)")


@migration
def m015_schedules(conn: sqlite3.Connection) -> None:
    # On-call schedules and their overrides (notify/schedules.py).
    conn.execute("CREATE TABLE schedules (tenant TEXT NOT NULL REFERENCES tenants(id), id TEXT NOT NULL, "
                 "spec TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (tenant, id))")
    conn.execute("CREATE TABLE schedule_overrides (tenant TEXT NOT NULL, schedule TEXT NOT NULL, id TEXT NOT NULL, "
                 "person TEXT NOT NULL, starts_at TEXT NOT NULL, ends_at TEXT NOT NULL, created_by TEXT NOT NULL, "
                 "created TEXT NOT NULL, PRIMARY KEY (tenant, id))")
    conn.execute("CREATE INDEX schedule_overrides_by_schedule ON schedule_overrides(tenant, schedule, starts_at)")


@migration
def m016_chat_channels(conn: sqlite3.Connection) -> None:
    # Messages and calls a provider accepted (notify/deliveries.py): their delivery reports, and what
    # a reply to one of them is about.
    conn.execute("CREATE TABLE deliveries (tenant TEXT NOT NULL, provider_id TEXT NOT NULL, outbox INTEGER NOT NULL, "
                 "incident TEXT, recipient TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL, "
                 "status TEXT NOT NULL, error_code TEXT, created REAL NOT NULL, updated REAL NOT NULL, "
                 "PRIMARY KEY (tenant, provider_id))")
    conn.execute("CREATE INDEX deliveries_by_incident ON deliveries(tenant, incident)")
    # Each incident's reply code (notify/replies.py).
    conn.execute("CREATE TABLE reply_codes (tenant TEXT NOT NULL, incident TEXT NOT NULL, code TEXT NOT NULL, "
                 "PRIMARY KEY (tenant, incident), UNIQUE (tenant, code))")
    # When each person last wrote to the appliance on a chat channel: WhatsApp's 24-hour session.
    conn.execute("CREATE TABLE chat_sessions (tenant TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL, "
                 "last_inbound REAL NOT NULL, PRIMARY KEY (tenant, channel, address))")


@migration
def m017_smart_alerts(conn: sqlite3.Connection) -> None:
    # Smart rules (alerts/rules.py): part of the tenant's policy version, every change ledgered.
    conn.execute("CREATE TABLE smart_rules (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(id), "
                 "name TEXT NOT NULL, is_active INTEGER NOT NULL, definition TEXT NOT NULL, created TEXT NOT NULL, "
                 "created_by TEXT NOT NULL, updated TEXT NOT NULL, deleted TEXT)")
    conn.execute("CREATE INDEX smart_rules_by_tenant ON smart_rules(tenant, id) WHERE deleted IS NULL")
    # Alerts with their lifecycle (alerts/store.py): smart rules' and every ingest source's.
    conn.execute("""
        CREATE TABLE alerts (
            tenant TEXT NOT NULL,
            id TEXT NOT NULL,
            rule_id INTEGER,
            rule_name TEXT NOT NULL,
            source TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            service TEXT,
            severity TEXT NOT NULL,
            message TEXT NOT NULL,
            triggered REAL NOT NULL,
            status TEXT NOT NULL,
            metrics_snapshot TEXT NOT NULL DEFAULT '{}',
            test INTEGER NOT NULL DEFAULT 0,
            incident TEXT,
            acknowledged_by TEXT, acknowledged REAL,
            resolved_by TEXT, resolved REAL,
            escalated_by TEXT, escalated REAL,
            updated REAL NOT NULL,
            PRIMARY KEY (tenant, id)
        )""")
    conn.execute("CREATE INDEX alerts_unresolved ON alerts(tenant, source, fingerprint) WHERE status != 'resolved'")
    conn.execute("CREATE INDEX alerts_by_time ON alerts(tenant, triggered)")
    conn.execute("CREATE INDEX alerts_by_rule ON alerts(tenant, rule_id, triggered)")


@migration
def m018_list_indexes(conn: sqlite3.Connection) -> None:
    # Lists the API offers, newest first, without sorting a tenant's whole history (issue 16):
    # incidents by opening time, and the ledger by kind.
    conn.execute("CREATE INDEX incidents_by_opened ON incidents(tenant, opened_at, id)")
    conn.execute("CREATE INDEX ledger_by_kind ON ledger(tenant, kind, tseq)")


@migration
def m019_shadow_fold(conn: sqlite3.Connection) -> None:
    # The shadow report maintained incrementally from the ledger (issue 16): a projection, never
    # evidence — it is rebuilt from the ledger when dropped. ``upto`` is the next ledger seq to fold.
    conn.execute("CREATE TABLE shadow_fold (id INTEGER PRIMARY KEY CHECK (id = 1), upto INTEGER NOT NULL)")
    conn.execute("INSERT INTO shadow_fold (id, upto) VALUES (1, 0)")
    conn.execute("CREATE TABLE shadow_tenant (tenant TEXT PRIMARY KEY, state TEXT NOT NULL)")
    conn.execute("CREATE TABLE shadow_incident (tenant TEXT NOT NULL, incident TEXT NOT NULL, seq INTEGER NOT NULL, "
                 "latency REAL NOT NULL, row TEXT NOT NULL, PRIMARY KEY (tenant, incident))")
    # listed in ledger order of detection: seq of the incident.detected entry, the paging cursor
    conn.execute("CREATE UNIQUE INDEX shadow_incident_order ON shadow_incident(tenant, seq)")
    conn.execute("CREATE INDEX shadow_incident_latency ON shadow_incident(tenant, latency)")


@migration
def m020_leader_lease(conn: sqlite3.Connection) -> None:
    # One leader among appliance nodes sharing a PostgreSQL database (issue 17, store/lease.py):
    # the node holding the lease, the URL the others forward to, the fencing token (raised at every
    # acquisition) and when the lease ends, in seconds since the epoch on the database's clock.
    conn.execute("CREATE TABLE leader_lease (id INTEGER PRIMARY KEY CHECK (id = 1), node TEXT NOT NULL, "
                 "url TEXT NOT NULL, token INTEGER NOT NULL, expires REAL NOT NULL, acquired TEXT NOT NULL)")
    conn.execute("INSERT INTO leader_lease (id, node, url, token, expires, acquired) VALUES (1, '', '', 0, 0, '')")


@migration
def m021_timer_settled(conn: sqlite3.Connection) -> None:
    # A claimed timer is settled once whoever acts on it has finished. One claimed but never settled
    # (the process died in between, or the leader changed) is claimed again: timers fire at least
    # once, and every handler is guarded by the state it changes (incidents/timers.py).
    conn.execute("ALTER TABLE timers ADD COLUMN settled INTEGER NOT NULL DEFAULT 1")
    conn.execute("CREATE INDEX timers_unsettled ON timers(id) WHERE settled = 0")
