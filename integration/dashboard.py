"""The dashboard tests' helpers: every daemon's metrics, and mta-configs/grafana/build.py
(a script, not a package) loaded as a module."""

from __future__ import annotations

import importlib
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


# every daemon's metric modules: importing one registers its metrics in the default registry
DAEMON_METRICS = (
    "smtp_balancer.observe.metrics",
    "policyd.metrics",
    "smtp_balancer_milter.metrics",
    "smtp_balancer.feedback.metrics",
    "smtp_balancer.feedback.state_metrics",
    "smtp_balancer.requeue.metrics",
    "smtp_balancer.complaints.metrics",
    "smtp_balancer.reputation.metrics",
)


def register_daemon_metrics() -> None:
    for module in DAEMON_METRICS:
        importlib.import_module(module)
