"""Signals in: what the appliance observes before policy decides anything.

Owns: ``model`` (HealthReading, AlertSignal), ``health`` (reading one health answer), ``http1``
and ``healthclient`` (the poller's own HTTP/1.1 keep-alive client), ``poller`` (health polling),
``ingest/`` (Alertmanager, Grafana, PagerDuty and generic event bodies) and ``heartbeats``.
May import: ``store``, ``ledger``, ``net``, ``telemetry``, ``errors``; never incidents, notify or
anything above.
"""

from .model import OUTCOMES, SELF_STATUSES, SEVERITIES, AlertSignal, HealthReading

__all__ = ["OUTCOMES", "SELF_STATUSES", "SEVERITIES", "AlertSignal", "HealthReading"]
