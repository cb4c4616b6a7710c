"""Alerts: smart rules, the alerts every source raises with their lifecycle, and the live stream.

Owns:
  ``rules``     smart rules' definitions (threshold, pattern, anomaly), validation, pure judgement
  ``store``     smart rules and alerts as stored: ledgered rule changes with a diff; an alert's
                lifecycle (active → acknowledged → resolved, escalated), statistics and history
  ``metrics``   what rules measure: the host, deliveries and approvals, polls, observed events
  ``evaluator`` rules at work on polls, observations, ingested alerts and rounds; cooldowns and
                hourly caps; test alerts
  ``stream``    the live stream's hub: bounded per-subscriber queues, slow subscribers dropped
A smart rule that fires is an alert *signal*: detection (``incidents``), that is policy, decides
whether it is an incident. This package hands signals over through a callable it is given.
May import: ``notify``, ``signals``, ``tenancy``, ``store``, ``ledger``, ``net``, ``schema``,
``errors``; never ``incidents``, ``recovery``, ``web`` or ``cli``.
"""
