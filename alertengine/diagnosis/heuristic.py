"""A deterministic diagnosis from the signals and the commit context, for when the AI is unavailable."""

from __future__ import annotations

from typing import Any

from .theory import Theory

# Breach kind -> (category, sentence). Deterministic, so replay and audit can reproduce it.
_BY_SIGNAL = {
    "unreachable": ("network", "The service does not accept connections: it is down or unreachable."),
    "timeout": ("network", "The service does not answer in time: it is overloaded, hung or cut off."),
    "http_error": ("code_deploy", "The service answers with HTTP errors."),
    "bad_payload": ("config", "The service's health answer cannot be read."),
    "errors": ("code_deploy", "A high share of requests fail."),
    "latency": ("database", "Requests are slow while they mostly succeed: a saturated dependency is likely."),
    "health_score": ("unknown", "The service's own health score is low."),
    "anomaly": ("unknown", "The service behaves unlike its usual self."),
    "no_data": ("unknown", "The service reports no traffic."),
}


def heuristic_theory(context: dict[str, Any]) -> Theory:
    kinds = [b["kind"] for b in context.get("breaches", [])]
    deploy = context.get("deploy")
    if deploy and (deploy.get("risky") or kinds):
        risky = ", ".join(deploy.get("risky", [])[:3])
        cause = f"A deploy ({deploy.get('sha', '')[:10]}) shortly before the incident" + (
            f" changed risky paths ({risky})" if risky else "") + " and is the most likely cause."
        return Theory(cause, "code_deploy", 55 if risky else 45, context.get("action"),
                      (f"deploy {deploy.get('sha', '')[:10]} at {deploy.get('deployed_at')}",),
                      ("the deploy's diff", "application error logs since the deploy"), "system")
    if kinds:
        category, sentence = _BY_SIGNAL.get(kinds[0], ("unknown", "The service breaches its policy."))
        return Theory(sentence, category, 35, context.get("action"),
                      tuple(f"{b['kind']}: {b.get('value')} (threshold {b.get('threshold')})"
                            for b in context.get("breaches", [])[:5]),
                      ("service logs around the detection time",), "system")
    title = context.get("incident", {}).get("title", "the alert")
    return Theory(f"Reported by the monitoring tool: {title}.", "unknown", 25, context.get("action"),
                  (), ("the alert's source dashboard",), "system")
