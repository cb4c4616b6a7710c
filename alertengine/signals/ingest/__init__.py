"""Ingest: monitoring tools' decoded JSON bodies (Alertmanager, Grafana, PagerDuty, generic events) into AlertSignal values."""

from .alertmanager import parse_alertmanager
from .common import PayloadError
from .events import parse_event
from .grafana import parse_grafana
from .pagerduty import parse_change, parse_pagerduty

__all__ = ["PayloadError", "parse_alertmanager", "parse_change", "parse_event", "parse_grafana", "parse_pagerduty"]
