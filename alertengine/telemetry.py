"""The appliance's own measurements, exposed at ``/metrics`` in the Prometheus text format.

One :class:`Telemetry` per running appliance, with its own registry (never the process-global
one: tests run many appliances in one process). Components take it as an argument and observe
into it on their hot paths: an observation is a lock and an add, cheap enough for every poll and
every write. What is better read from the database at scrape time (outbox depth, dead letters,
open incidents) is collected by the ``/metrics`` endpoint itself, off the event loop.

This module imports nothing of the product (rank 0.5, beside ``schema``).
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# The classic text format (0.0.4), which every Prometheus 2 and 3 scrapes. prometheus_client's own
# CONTENT_TYPE_LATEST now names 1.0.0, which older scrapers do not know.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("counter", "gauge", "histogram", "untyped")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# Seconds: from a millisecond to a minute, dense where the budgets are (50 ms, 250 ms, 0.5 s, 5 s).
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Counts per batch or per request.
SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

POLL_OUTCOMES = ("ok", "failed")   # answered readably, or not; breaches are policy's (below)


class Telemetry:
    """Every metric the appliance observes as it runs. Names carry the ``alertengine_`` prefix."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # the store
        self.writer_batch = Histogram("alertengine_writer_batch_writes", "Writes committed per writer transaction.",
                                      buckets=SIZES, registry=r)
        self.writer_commit = Histogram("alertengine_writer_commit_seconds",
                                       "Time of one writer transaction, BEGIN to durable COMMIT.",
                                       buckets=LATENCY, registry=r)
        # signals in
        self.polls = Counter("alertengine_polls", "Health polls done, by outcome: ok (answered readably) or failed.",
                             ["outcome"], registry=r)
        self.poll_lateness = Histogram("alertengine_poll_lateness_seconds",
                                       "How late a health poll started after it was due.", buckets=LATENCY, registry=r)
        self.breaches = Counter("alertengine_breaching_polls", "Health polls that policy judged breaching.",
                                registry=r)
        self.ingest_alerts = Counter("alertengine_ingest_alerts", "Alerts ingested, by source and whether they were "
                                     "news (new) or a repeat of a known state (repeat).", ["source", "result"],
                                     registry=r)
        self.ingest_request = Histogram("alertengine_ingest_request_seconds",
                                        "Time to judge and durably record one ingest request.", ["source"],
                                        buckets=LATENCY, registry=r)
        self.ingest_batch = Histogram("alertengine_ingest_request_alerts", "Alerts per ingest request.", ["source"],
                                      buckets=SIZES, registry=r)
        # incidents
        self.detection = Histogram("alertengine_detection_latency_seconds",
                                   "From the first signal of an incident to policy opening it.", ["source"],
                                   buckets=LATENCY, registry=r)
        # notify
        self.deliveries = Counter("alertengine_deliveries", "Notification delivery attempts, by channel and outcome.",
                                  ["channel", "outcome"], registry=r)
        self.delivery_latency = Histogram("alertengine_delivery_seconds",
                                          "From a notification entering the outbox to its delivery.", ["channel"],
                                          buckets=LATENCY, registry=r)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (version 0.0.4), without ``_created`` series."""
        return generate_latest(_WithoutCreated(self.registry))


class _WithoutCreated(Collector):
    """The registry's families minus their ``_created`` samples. prometheus_client adds one per
    counter and histogram child (when it was made); Prometheus 2 stores each as a gauge series of
    its own, doubling the series for a timestamp nobody queries. Filtered here rather than with
    ``disable_created_metrics()``, which would change every registry of the process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():   # fresh objects on every collect: ours to trim
            metric.samples = [s for s in metric.samples if s.name != metric.name + "_created"]
            yield metric


# --- what is read at scrape time ------------------------------------------------------------------
# Families written by hand, for figures read from the database or the running parts when Prometheus
# asks. Whole numbers stay whole (``400``, not prometheus_client's ``400.0``): what /metrics served
# before this module existed, and what dashboards and tests match.

def family(name: str, kind: str, help_text: str,
           samples: Iterable[tuple[Mapping[str, str], int | float]]) -> list[str]:
    """One metric family: ``# HELP``, ``# TYPE`` and a line per sample (labels in the order given).
    A family with no samples is still declared, so a scraper sees the metric exists."""
    if not _NAME.fullmatch(name) or kind not in KINDS:
        raise ValueError(f"bad metric family {name!r} of kind {kind!r}")
    help_line = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    lines = [f"# HELP {name} {help_line}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        if not all(_LABEL.fullmatch(k) and not k.startswith("__") for k in labels):
            raise ValueError(f"bad label name in {sorted(labels)} of {name}")
        inner = ",".join(f'{k}="{label_value(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{inner}}} {number(value)}" if inner else f"{name} {number(value)}")
    return lines


def label_value(value: str) -> str:
    """A label value escaped as the text format wants: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def number(value: int | float) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a sample value must be a number, got {value!r}")
    return str(value) if isinstance(value, int) else floatToGoString(value)
