"""Seed 003's curl examples, run as written with real curl against a real ``alertengine serve``:
only the host and the keys are ours (``<admin_jwt>`` and ``<jwt_token>`` become a tenant admin's
API key). Some examples send JSON without a Content-Type, as ``curl -d`` does; they work too."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serving import running_appliance

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl (.ci/run installs it)")]

SEED_EXAMPLES = r'''
curl -X POST "https://pilot.owkai.app/api/smart-rules" \
-H "Authorization: Bearer <admin_jwt>" \
-H "Content-Type: application/json" \
-d '{
"name": "High Risk Action Alert",
"is_active": true,
"rule_definition": {
"condition_type": "threshold",
"metric": "risk_score",
"operator": ">=",
"threshold": 80,
"severity": "high"
}
}'
---
curl -X POST "https://pilot.owkai.app/api/smart-rules" \
-H "Authorization: Bearer <admin_jwt>" \
-d '{
"name": "Repeated Denials Alert",
"is_active": true,
"rule_definition": {
"condition_type": "pattern",
"pattern": {
"event": "action.denied",
"count": 5,
"window_minutes": 10
},
"severity": "critical"
}
}'
---
curl -X POST "https://pilot.owkai.app/api/smart-rules" \
-H "Authorization: Bearer <admin_jwt>" \
-d '{
"name": "System CPU Alert",
"is_active": true,
"rule_definition": {
"condition_type": "threshold",
"metric": "system.cpu_percent",
"operator": ">",
"threshold": 90,
"severity": "high"
}
}'
---
curl "https://pilot.owkai.app/api/alerts/active" \
-H "Authorization: Bearer <jwt_token>"
---
curl -X POST "https://pilot.owkai.app/api/alerts/42/acknowledge" \
-H "Authorization: Bearer <jwt_token>" \
-H "X-CSRF-Token: <csrf_token>"
---
curl -X POST "https://pilot.owkai.app/api/alerts/alert_42_1702656000/resolve" \
-H "Authorization: Bearer <jwt_token>" \
-H "X-CSRF-Token: <csrf_token>"
---
curl -X POST "https://pilot.owkai.app/api/alerts/42/escalate" \
-H "Authorization: Bearer <jwt_token>" \
-H "X-CSRF-Token: <csrf_token>"
---
curl "https://pilot.owkai.app/api/alerts/history?days=30" \
-H "Authorization: Bearer <jwt_token>"
---
curl -X POST "https://pilot.owkai.app/api/notifications/channels" \
-H "Authorization: Bearer <admin_jwt>" \
-d '{
"name": "Critical Alerts - PagerDuty",
"channel_type": "slack",
"webhook_url": "https://hooks.slack.com/...",
"subscribed_events": [
"alert.critical",
"alert.high"
],
"min_risk_score": 80
}'
---
curl -X POST "https://pilot.owkai.app/api/alerts/test" \
-H "Authorization: Bearer <admin_jwt>" \
-d '{
"rule_id": 42,
"test_metrics": {"risk_score": 90}
}'
'''


def run(example: str, url: str, key: str, rule: int, alert: str) -> tuple[int, dict]:
    command = (example.replace("https://pilot.owkai.app", url).replace("<admin_jwt>", key)
               .replace("<jwt_token>", key).replace("/alerts/42/", f"/alerts/{rule}/")
               .replace("alert_42_1702656000", alert).replace('"rule_id": 42', f'"rule_id": {rule}'))
    out = subprocess.run(["bash", "-c", command.strip() + ' -s -w "\\n%{http_code}"'], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body) if body else {}


def test_the_seed_examples_work_as_written(tmp_path: Path) -> None:
    examples = [e for e in SEED_EXAMPLES.split("\n---\n")]
    with running_appliance(tmp_path) as app:
        tenant = app.add_tenant("payments")
        _id, key = app.add_key(tenant, "admin", "payments-admin")
        ingest = app.add_integration(tenant, "agents", by=key)
        created = [run(e, app.url, key, 0, "") for e in examples[:3]]
        assert [s for s, _ in created] == [201, 201, 201]
        risk_rule = created[0][1]["id"]
        fired = app.client.post(f"{app.url}/ingest/observations/{ingest}",
                                json={"event": "action.executed", "metrics": {"risk_score": 85}}).json()["alerts"]
        status, active = run(examples[3], app.url, key, risk_rule, "")
        assert status == 200 and [a["id"] for a in active["alerts"]] == fired
        assert active["statistics"]["by_severity"]["high"] == 1
        status, acked = run(examples[4], app.url, key, risk_rule, "")
        assert status == 200 and acked["alert"]["status"] == "acknowledged"
        status, escalated = run(examples[6], app.url, key, risk_rule, "")
        assert status == 200 and escalated["alert"]["severity"] == "critical"     # high, one step up
        assert escalated["incident"]["priority"] == "P0"                           # policy heard it
        status, resolved = run(examples[5], app.url, key, risk_rule, fired[0])
        assert status == 200 and resolved["alert"]["status"] == "resolved"
        second = app.client.post(f"{app.url}/ingest/observations/{ingest}",
                                 json={"event": "action.executed", "metrics": {"risk_score": 95}}).json()["alerts"]
        assert second == []          # within the rule's 5-minute cooldown (its default)
        status, history = run(examples[7], app.url, key, risk_rule, "")
        assert status == 200 and history["total_count"] == 1 and set(history["date_range"]) == {"start", "end"}
        status, sub = run(examples[8], app.url, key, risk_rule, "")
        assert status == 201 and sub["route"]["match"] == {"severity": ["critical", "high"]}
        status, tested = run(examples[9], app.url, key, risk_rule, "")
        assert status == 200 and tested["fired"] is True and tested["alert"]["test"] is True
        status, gone = run(examples[6], app.url, key, risk_rule, "")
        assert status == 404 and gone["error"]["code"] == "not_found"   # rule 42 has no unresolved alert now
