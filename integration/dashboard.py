"""Load mta-configs/grafana/build.py (a script, not a package) for the dashboard tests."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

GRAFANA = Path(__file__).resolve().parents[1] / "mta-configs" / "grafana"


@cache
def dashboard_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smtp_balancer_dashboard_build", GRAFANA / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
