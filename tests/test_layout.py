"""Tests mirror the package layout (DESIGN.md, "Where each module is tested"): each
module has tests/<package>/test_<module>.py, or a row in DESIGN.md naming the tests
that cover it. Checked both ways, so the table cannot go stale."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Where each module is tested"
ROW = re.compile(r"^\| `(?P<module>[^`]+)` \| (?P<tests>.+) \|$")


def modules() -> list[str]:
    found = []
    for base in ("smtp_balancer", "policyd", "milter"):
        found += [str(p.relative_to(ROOT)) for p in (ROOT / base).rglob("*.py") if p.name != "__init__.py"]
    return sorted(found)


def mirrored(module: str) -> Path:
    parts = Path(module).parts
    package = parts[1:-1] if parts[0] == "smtp_balancer" else parts[:-1]
    return ROOT / "tests" / Path(*package) / f"test_{Path(module).stem}.py"


def table() -> dict[str, list[str]]:
    text = (ROOT / "DESIGN.md").read_text()
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in body.splitlines():
        m = ROW.match(line)
        if m:
            rows[m["module"]] = re.findall(r"`([^`]+)`", m["tests"])
    return rows


def test_every_module_has_its_test_file_or_a_row_naming_its_tests() -> None:
    rows = table()
    unaccounted = [m for m in modules() if not mirrored(m).exists() and m not in rows]
    assert not unaccounted, f"no tests/<package>/test_<module>.py and no row in DESIGN.md: {unaccounted}"


def test_every_row_names_a_module_and_test_files_that_exist() -> None:
    rows = table()
    assert rows, f"no table under {SECTION!r} in DESIGN.md"
    known = set(modules())
    assert not [m for m in rows if m not in known], "rows for modules that do not exist"
    missing = [t for tests in rows.values() for t in tests if not (ROOT / t).is_file()]
    assert not missing, f"rows name test files that do not exist: {missing}"
    assert all(rows.values()), "a row names no test file"
    redundant = [m for m in rows if mirrored(m).exists()]
    assert not redundant, f"rows for modules with a test file of their own: {redundant}"
