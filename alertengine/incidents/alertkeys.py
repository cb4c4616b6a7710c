"""The keys of ingested alerts: which incident an alert belongs to (its incident fingerprint), the
event id that makes a repeat of it a no-op, and the redaction of its text for the ledger.

Pure functions of the alert (and, for the event id, of its incident's episode). The costly ones —
a uuid5, and redacting the same label values alert after alert — are remembered in small bounded
tables: senders repeat the same alerts, and a group's alerts share most of their labels."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any, Mapping

from ..ledger.entry import redact
from ..signals import AlertSignal
from .engine import Incident

_ALERT_NS = uuid.UUID("5d7d1f0e-6a63-4c55-9a52-2f5c3c6b1a10")  # event ids of alert deliveries, for idempotency

# Sources whose own key already names the incident (PagerDuty's dedup_key; a heartbeat's name):
# their follow-ups (acknowledge, resolve) carry nothing else to group by.
KEYED_SOURCES = frozenset({"pagerduty", "heartbeat"})

_REMEMBERED = 8192                     # entries of each table below before it is emptied
_event_ids: dict[str, str] = {}        # uuid5 input -> event id
_redacted_text: dict[str, str] = {}    # text -> redact(text)
_redacted_pair: dict[tuple[str, str], str] = {}   # (key, value) -> redact({key: value})[key]


def health_fingerprint(service_id: str) -> str:
    return f"health:{service_id}"


def episode(conn: sqlite3.Connection, tenant: str, fingerprint: str) -> int:
    """How many incidents of this fingerprint have closed: alerts repeat within an episode only."""
    return conn.execute("SELECT count(*) FROM incidents WHERE tenant = ? AND fingerprint = ? AND is_open = 0",
                        (tenant, fingerprint)).fetchone()[0]


def redact_text(text: str) -> str:
    """``redact(text)``, remembered."""
    done = _redacted_text.get(text)
    if done is None:
        done = redact(text)
        if type(text) is str:
            if len(_redacted_text) >= _REMEMBERED:
                _redacted_text.clear()
            _redacted_text[text] = done
    return done


def redact_map(value: Mapping[str, Any]) -> dict[str, Any]:
    """``redact(dict(value))``: entry by entry (redact treats each on its own), text entries remembered."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if type(key) is str and type(item) is str:
            pair = (key, item)
            done = _redacted_pair.get(pair)
            if done is None:
                done = redact({key: item})[key]
                if len(_redacted_pair) >= _REMEMBERED:
                    _redacted_pair.clear()
                _redacted_pair[pair] = done
            out[key] = done
        else:
            out[key] = redact({key: item})[key]
    return out


def incident_fingerprint(signal: AlertSignal) -> str:
    """:func:`alert_fingerprint` of the alert as the ledger will hold it: the fields that name its
    incident are redacted first (the rest is redacted only if the alert is news)."""
    if signal.source in KEYED_SOURCES:
        return alert_fingerprint(signal)
    if signal.source == "smart" and signal.labels.get("rule_id"):
        return f"smart:{signal.service or '-'}:rule:{redact_text(signal.labels['rule_id'])}"
    name = signal.labels.get("alertname")
    return f"{signal.source}:{signal.service or '-'}:{redact_text(name) if name else redact_text(signal.title)}"


def alert_fingerprint(signal: AlertSignal) -> str:
    """The incident an alert belongs to. Alertmanager, Grafana and generic alerts of one service and
    one rule group into one incident, whatever instance fired."""
    if signal.source in KEYED_SOURCES:
        return f"{signal.source}:{signal.fingerprint}"
    if signal.source == "smart" and signal.labels.get("rule_id"):   # by the rule, whatever it is named now
        return f"smart:{signal.service or '-'}:rule:{signal.labels['rule_id']}"
    rule = signal.labels.get("alertname") or signal.title
    return f"{signal.source}:{signal.service or '-'}:{rule}"


def alert_event_id(tenant: str, signal: AlertSignal, current: Incident | None, episode: int) -> str:
    """The alert's ``alert.received`` event id: a repeat is the same alert, in the same state, in
    the same episode of its fingerprint (how many of its incidents have closed so far). A trigger
    after a resolve is a new episode, so it opens a new incident (as PagerDuty does) even with the
    same dedup_key and no timestamp; a resolve (or acknowledge) is told apart by whether it has an
    open incident to act on, so a repeated one about the old incident never swallows the one about
    the new incident."""
    mark = str(episode)
    if signal.status != "firing":   # a resolve or an acknowledge acts only on an open incident
        mark = f"{mark}:{'open' if current is not None else 'idle'}"
    name = f"{tenant}|{signal.source}|{signal.fingerprint}|{signal.status}|{signal.starts_at}|{mark}"
    found = _event_ids.get(name)
    if found is None:
        found = str(uuid.uuid5(_ALERT_NS, name))
        if len(_event_ids) >= _REMEMBERED:
            _event_ids.clear()
        _event_ids[name] = found
    return found


def source_actor(source: str) -> str:
    """Who an alert of ``source`` acts as: smart rules are the tenant's policy; the rest is ingest."""
    return "policy" if source == "smart" else f"ingest:{source}"


def chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
