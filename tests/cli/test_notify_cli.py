"""The README's "Who hears what" commands, run as a user runs them: real subprocesses on a real
data directory, the routing example taken from the README itself. Bad input is a message and a
non-zero exit, and changes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from alertengine.appliance import init_data_dir
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]


def _readme_routing() -> str:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Who hears what", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    from alertengine.notify.routes import parse_routing
    for block in blocks:          # every routing example in the section is a valid document
        parse_routing(block)
    return blocks[0]


def test_the_readme_routing_flow(tmp_path: Path) -> None:
    data = init_data_dir(tmp_path / "data").path

    def cli(*args: str) -> tuple[int, str, str]:
        result = run_cli(*args, "--data-dir", str(data))
        return result.code, result.stdout, result.stderr

    code, out, err = cli("tenant", "add", "payments")
    assert code == 0, err
    tenant = json.loads(out)["id"]
    code, out, err = cli("person", "set", "--tenant", tenant, "ada", "--name", "Ada Lovelace",
                         "--time-zone", "Europe/Berlin", "--telegram", "5550001")
    assert code == 0 and json.loads(out)["channels"] == ["telegram"], err
    code, out, err = cli("team", "set", "--tenant", tenant, "checkout-oncall", "--name", "Checkout on-call",
                         "--member", "ada")
    assert code == 0 and json.loads(out)["members"] == ["ada"], err

    (tmp_path / "routing.toml").write_text(_readme_routing(), encoding="utf-8")
    code, out, err = cli("route", "set", "--tenant", tenant, str(tmp_path / "routing.toml"))
    assert code == 0 and re.fullmatch(r"routing sha256:[0-9a-f]{12}: 2 rule\(s\)\n", out), (out, err)
    code, out, _ = cli("route", "show", "--tenant", tenant)
    lines = out.splitlines()
    assert lines[0].split() == ["#", "RULE", "MATCHES", "RECEIVERS", "LIMITS", "QUIET", "CONTINUE"]
    assert lines[1].split()[:2] == ["1", "page-checkout-oncall"] and "team:checkout-oncall" in lines[1]
    assert lines[2].split()[:2] == ["2", "payments-channel"] and "below critical, then summary" in lines[2]

    # a critical checkout alert pages Ada; at 23:30 in Berlin a warning of the payments team is held
    code, out, err = cli("route", "test", "--tenant", tenant, "--event",
                         '{"severity": "critical", "service": "checkout"}')
    assert code == 0, err
    plan = json.loads(out)
    assert plan["matched"] == ["page-checkout-oncall"]
    assert [(d["recipient"], d["outcome"]) for d in plan["decisions"]] == [("person:ada", "send")]
    code, out, err = cli("route", "test", "--tenant", tenant, "--severity", "medium", "--event",
                         '{"labels": {"team": "payments"}}', "--at", "2026-12-01T22:30:00Z")
    held = json.loads(out)["decisions"]
    assert [(d["recipient"], d["outcome"], d["release_at_utc"]) for d in held] == [
        ("channel:telegram", "held", "2026-12-02T06:00:00Z")]        # 07:00 in Berlin

    code, out, err = cli("silence", "add", "--tenant", tenant, "--match", 'service="batch"', "--duration", "2h",
                         "--comment", "nightly batch window")
    assert code == 0, err
    silence = json.loads(out)
    assert silence["state"] == "active" and silence["created_by"].startswith("cli:")
    code, out, _ = cli("silence", "list", "--tenant", tenant)
    assert [s["id"] for s in json.loads(out)] == [silence["id"]]
    code, out, _ = cli("route", "test", "--tenant", tenant, "--event",
                       '{"severity": "critical", "service": "batch"}')
    assert json.loads(out)["silenced_by"] == [silence["id"]]
    code, out, _ = cli("route", "stats", "--tenant", tenant)
    assert out.splitlines()[0].split() == ["RULE", "MATCHED", "SENT", "HELD", "SUPPRESSED", "ESCALATED"]
    code, out, _ = cli("notify", "dead-letters", "--tenant", tenant)
    assert code == 0 and json.loads(out) == []
    code, out, err = cli("silence", "expire", "--tenant", tenant, silence["id"])
    assert code == 0 and json.loads(out)["state"] == "expired"

    # bad input: a clear message, a non-zero exit, nothing changed
    for args, exit_code, words in [
        (("silence", "add", "--tenant", tenant, "--match", 'service=~".*"', "--duration", "1h", "--comment", "x"),
         2, "match every incident"),
        (("silence", "add", "--tenant", tenant, "--match", 'service="a"', "--duration", "soon", "--comment", "x"),
         2, "--duration"),
        (("silence", "expire", "--tenant", tenant, silence["id"]), 2, "already expired"),
        (("person", "set", "--tenant", tenant, "bob", "--name", "Bob", "--time-zone", "Mars/Base"), 2, "time zone"),
        (("team", "set", "--tenant", tenant, "t", "--name", "T", "--member", "nobody"), 2, "no person"),
        (("route", "test", "--tenant", tenant, "--event", "{"), 2, "not valid JSON"),
        (("route", "test", "--tenant", tenant, "--at", "9999-12-31T23:30:00Z"), 2, "between the years"),
        (("silence", "add", "--tenant", tenant, "--match", 'service="a"', "--duration", "1h", "--comment", "x",
          "--starts", "tomorrow"), 2, "--starts: must be an RFC 3339 time"),
        (("route", "show", "--tenant", "t_0000000000000000"), 1, "tenant not found"),
        (("route", "stats", "--tenant", "t_0000000000000000"), 1, "tenant not found"),
        (("person", "list", "--tenant", "t_0000000000000000"), 1, "tenant not found"),
        (("notify", "retry", "--tenant", tenant, "12345"), 1, "notification not found"),
    ]:
        before = run_cli("ledger", "verify", "--data-dir", str(data)).json()["entries_checked"]
        code, out, err = cli(*args)
        assert code == exit_code, (args, code, out, err)
        assert words in err, (args, err)
        assert run_cli("ledger", "verify", "--data-dir", str(data)).json()["entries_checked"] == before


def test_schedules_from_the_shell(tmp_path: Path) -> None:
    data = init_data_dir(tmp_path / "data").path

    def cli(*args: str) -> tuple[int, str, str]:
        result = run_cli(*args, "--data-dir", str(data))
        return result.code, result.stdout, result.stderr

    tenant = json.loads(cli("tenant", "add", "payments")[1])["id"]
    for pid in ("ada", "bob"):
        assert cli("person", "set", "--tenant", tenant, pid, "--name", pid.title())[0] == 0
    (tmp_path / "primary.json").write_text(json.dumps({
        "name": "Primary", "time_zone": "Europe/Berlin",
        "layers": [{"start": "2027-03-01T09:00", "length": "weekly", "members": ["ada", "bob"]}]}))
    code, out, err = cli("schedule", "set", "--tenant", tenant, "primary", str(tmp_path / "primary.json"))
    assert code == 0, err
    code, out, _ = cli("schedule", "oncall", "--tenant", tenant, "primary", "--at", "2027-03-09T12:00:00Z")
    assert json.loads(out)["person"] == "bob"
    code, out, err = cli("schedule", "override", "--tenant", tenant, "primary", "--person", "ada",
                         "--starts", "2027-03-09T00:00:00Z", "--ends", "2027-03-10T00:00:00Z")
    assert code == 0, err
    code, out, _ = cli("schedule", "oncall", "--tenant", tenant, "primary", "--at", "2027-03-09T12:00:00Z")
    assert json.loads(out)["person"] == "ada"
    code, out, _ = cli("schedule", "ics", "--tenant", tenant, "primary", "--days", "7")
    assert code == 0 and out.splitlines()[:2] == ["BEGIN:VCALENDAR", "VERSION:2.0"]   # (its first shift is in 2027)
    (tmp_path / "bad.json").write_text("{")
    code, _, err = cli("schedule", "set", "--tenant", tenant, "x", str(tmp_path / "bad.json"))
    assert code == 2 and "not valid JSON" in err
    code, _, err = cli("schedule", "oncall", "--tenant", tenant, "missing")
    assert code == 1 and "schedule not found" in err
