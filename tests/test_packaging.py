"""pymilter owns `milter` and `Milter`: our milter/ folder must never shadow them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import Milter, milter, smtp_balancer_milter, policyd, smtp_balancer;"
    "assert milter.__file__.endswith('.so'), milter.__file__;"
    "print(Milter.__file__)"
)


def test_milter_folder_is_not_a_package():
    assert not (ROOT / "milter" / "__init__.py").exists()


def test_import_milter_from_repo_root():
    # python -c puts the current directory first on sys.path: the worst case
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_import_milter_from_installed_package(tmp_path: Path):
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_package_is_installed():
    """A non-editable install ships only the packages pyproject lists: a new subpackage
    left out works from the checkout and fails on a mail server (it did, once)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "smtp_balancer").rglob("__init__.py")
    }
    assert found - listed == set()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for folder in {p.parent for p in (ROOT / "smtp_balancer").rglob("*.lua")} | {
        ROOT / "smtp_balancer" / "feedback"
    }:
        package = ".".join(folder.relative_to(ROOT).parts)
        assert package in data, f"{package}: its data files (Lua, YAML) are not installed"
