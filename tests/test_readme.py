"""The README stays true: it documents every setting the appliance has, and every command it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import click

from alertengine.cli import cli
from alertengine.config import SETTINGS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert documented == {s.name for s in SETTINGS}


def test_every_alertengine_command_the_readme_names_exists() -> None:
    named = set(re.findall(r"(?m)(?:^|\$ |`)alertengine ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", README))
    assert {"serve", "ledger verify", "bundle verify"} <= named
    for words in sorted(named):
        first, _, second = words.partition(" ")
        assert first in cli.commands, f"the README names `alertengine {first}`, which does not exist"
        group = cli.commands[first]
        if isinstance(group, click.Group) and second:
            assert second in group.commands, f"the README names `alertengine {words}`, which does not exist"
