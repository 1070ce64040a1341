"""The milter sits in the adapters' layer beside policyd and the feedback daemon
(pyproject.toml's layers contract, which lint-imports cannot apply to a namespace
package): it imports only from the layers below, and only the CLI imports it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# what the adapters' layer may not import: its siblings and the layers above
ABOVE_OR_BESIDE = ("smtp_balancer.cli", "smtp_balancer.requeue", "smtp_balancer.feedback", "policyd")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_the_milter_imports_only_downward() -> None:
    files = sorted((ROOT / "milter").glob("*.py"))
    assert len(files) >= 3
    wrong = {
        f"{path.name}: {module}"
        for path in files
        for module in imported_modules(path)
        if any(module == p or module.startswith(p + ".") for p in ABOVE_OR_BESIDE)
    }
    assert wrong == set()


def test_only_the_cli_imports_the_milter() -> None:
    importers = {
        str(path.relative_to(ROOT))
        for folder in ("smtp_balancer", "policyd")
        for path in (ROOT / folder).rglob("*.py")
        if any(m.split(".")[0] == "smtp_balancer_milter" for m in imported_modules(path))
    }
    assert importers and all(p.startswith("smtp_balancer/cli/") for p in importers), importers


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from smtp_balancer.feedback.daemon import run\nimport policyd.server\n")
    assert imported_modules(bad) == {"smtp_balancer.feedback.daemon", "policyd.server"}
