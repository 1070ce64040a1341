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
