"""The appliance's own measurements, exposed at ``/metrics`` in the Prometheus text format.

One :class:`Telemetry` per running appliance, with its own registry (never the process-global
one: tests run many appliances in one process). Components take it as an argument and observe
into it on their hot paths: an observation is a lock and an add, cheap enough for every poll and
every write. What is better read from the database at scrape time (outbox depth, dead letters,
open incidents) is collected by the ``/metrics`` endpoint itself, off the event loop.

This module imports nothing of the product (rank 0.5, beside ``schema``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Seconds: from a millisecond to a minute, dense where the budgets are (50 ms, 250 ms, 0.5 s, 5 s).
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Counts per batch or per request.
SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

POLL_OUTCOMES = ("ok", "breach", "failed")


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
        self.polls = Counter("alertengine_polls", "Health polls done, by outcome (ok, breach, failed).",
                             ["outcome"], registry=r)
        self.poll_lateness = Histogram("alertengine_poll_lateness_seconds",
                                       "How late a health poll started after it was due.", buckets=LATENCY, registry=r)
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
        """The registry in the Prometheus text format (version 0.0.4)."""
        return generate_latest(self.registry)
