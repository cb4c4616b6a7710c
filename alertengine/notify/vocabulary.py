"""Routing's words: severities, priorities, categories, events, channels and receivers."""

from __future__ import annotations

SEVERITIES = ("critical", "high", "medium", "low")   # most severe first
PRIORITY_SEVERITY = {"P0": "critical", "P1": "high", "P2": "medium", "P3": "low"}
SEVERITY_PRIORITY = {v: k for k, v in PRIORITY_SEVERITY.items()}
CATEGORIES = ("health", "alert", "heartbeat", "deploy")
EVENTS = ("detected", "updated", "escalated", "proposed", "dissent", "rejected", "executed", "failed", "not_recovered",
          "expired",
          "recovered", "resolved", "resolve_candidate", "acknowledged", "silence", "escalation", "test")
LOCAL_CHANNELS = ("file", "jsonl")
REMOTE_CHANNELS = ("telegram", "webhook", "slack", "whatsapp", "voice", "email")
RECEIVER_PATTERN = (r"^(responders(:secondary)?|(person|team|schedule):[a-z0-9][a-z0-9_.-]{0,63}|"
                    r"channel:(" + "|".join(LOCAL_CHANNELS + REMOTE_CHANNELS) + "))$")
