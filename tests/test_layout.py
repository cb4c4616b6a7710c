"""The package reads like the pipeline: each part imports only the parts below it.

The ranks are written here, independently of the code: a module that starts importing a part
above it (ledger reaching into the store, notify into incidents, anything into web or cli) fails
this test. Every package's ``__init__`` says what it owns and what it may import.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "alertengine"

# Lower rank = lower layer. A unit may import units of a lower rank, and itself.
RANK = {
    "errors": 0, "schema": 0.5, "telemetry": 0.5,
    "ledger": 1, "net": 1,
    "store": 2,
    "tenancy": 3,
    "signals": 4,
    "diagnosis": 5, "notify": 5,   # peers: neither imports the other
    "alerts": 5.5,                 # smart rules and alerts: above notify, below detection
    "incidents": 6,
    "recovery": 7,
    "config": 8,
    "appliance": 9,
    "runtime": 10,
    "web": 11,
    "cli": 12,
    "__main__": 13,
}
# Units that import nothing of the product at all (besides themselves and the version string).
STANDALONE = {"sdk"}
# The ledger format's own code imports only the exception tree; the verifier ships alone as verify.py.
LEDGER_MAY_IMPORT = {"ledger", "errors"}


def unit_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "alertengine"
    return parts[1] if len(parts) > 1 else "alertengine"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every alertengine module a file imports, anywhere in it (also inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "alertengine" or target.startswith("alertengine."):
                if target == "alertengine":  # from alertengine import submodule
                    found += [(node.lineno, f"alertengine.{a.name}") for a in node.names if a.name != "__version__"]
                    if any(a.name == "__version__" for a in node.names):
                        found.append((node.lineno, "alertengine"))
                else:
                    found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("alertengine")]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_top_level_part_has_a_rank() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.is_file() and p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()}
    assert parts - set(RANK) - STANDALONE == set(), "a new part of the package needs a place in RANK"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    me = unit_of(module_name(path))
    bad = []
    for line, target in imports_of(path):
        them = unit_of(target)
        if them in ("alertengine", me):
            continue
        if me in STANDALONE or them in STANDALONE:
            bad.append((line, target))
        elif me == "ledger" and them not in LEDGER_MAY_IMPORT:
            bad.append((line, target))
        elif RANK[them] >= RANK[me]:
            bad.append((line, target))
    assert bad == [], f"{path.relative_to(ROOT)} ({me}) imports above or beside itself: {bad}"


def test_the_standalone_verifier_imports_nothing_of_the_product() -> None:
    path = PACKAGE / "ledger" / "verifier.py"
    assert imports_of(path) == []


@pytest.mark.parametrize("init", sorted(p for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE),
                         ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_each_package_says_what_it_owns_and_may_import(init: Path) -> None:
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc, f"{init} has no docstring"
    if init.parent.parent == PACKAGE:  # top-level parts state their imports
        assert "Owns:" in doc and "May import:" in doc, f"{init} must say what it owns and may import"


OUTSIDE = re.compile(r"\.\./shared|/work/(main|shared|\.library|\.mirror)|(?<![\w.])shared/(spec|fixtures|reference|seeds|hooks)|"
                     r"spec/ledger\.md|protocols\.md|DESIGN\.md|STYLE\.md|lessons\.md")


def test_nothing_reads_or_names_a_path_outside_the_repository() -> None:
    hits = []
    for top in ("alertengine", "tests", "scripts", ".ci"):
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".gz", ".pyc"):
                continue
            if path == Path(__file__).resolve():
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if OUTSIDE.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == []
