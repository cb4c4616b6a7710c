"""Grafana unified alerting webhook bodies (``version`` "1") into AlertSignal values."""

from __future__ import annotations

from .. import AlertSignal
from .alertmanager import parse_group

# Grafana's per-alert links, best first. Its extra fields (values, valueString, silenceURL,
# imageURL, ruleUID, orgId, enrichments, and top-level title/message/state/orgId) are not read.
GRAFANA_URL_KEYS = ("panelURL", "dashboardURL", "generatorURL")


def parse_grafana(body: object) -> list[AlertSignal]:
    """A Grafana webhook body: Alertmanager's group shape with ``version`` "1"; one signal per alert."""
    return parse_group(body, version="1", source="grafana", url_keys=GRAFANA_URL_KEYS)
