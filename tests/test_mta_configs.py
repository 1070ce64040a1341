"""The shipped Prometheus alert rules and every metric exposition, checked by promtool itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from integration.dashboard import register_daemon_metrics

register_daemon_metrics()

PROMETHEUS = Path(__file__).resolve().parents[1] / "mta-configs" / "prometheus"


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
    return subprocess.run(
        ["promtool", *args],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        cwd=PROMETHEUS,
        timeout=120,
    )


def test_alert_rules_are_valid() -> None:
    out = promtool("check", "rules", "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 21 rules found" in out.stdout


def test_every_alert_has_a_firing_and_a_quiet_case_and_they_pass() -> None:
    rules = (PROMETHEUS / "alerts.yml").read_text()
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    for name in [line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line]:
        blocks = tests.split(f"alertname: {name}")[1:]
        assert any("exp_alerts: []" in b.split("alertname:")[0] for b in blocks), f"{name}: no quiet case"
        assert any("exp_labels" in b.split("alertname:")[0] for b in blocks), f"{name}: no firing case"
    out = promtool("test", "rules", "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_metrics_of_every_daemon_pass_promtool_check_metrics() -> None:
    exposition = generate_latest(REGISTRY)
    assert (
        b"smtp_balancer_deliveries_total" in exposition and b"smtp_balancer_policy_connections" in exposition
    )
    out = promtool("check", "metrics", stdin=exposition)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_metrics_does_catch_a_bad_name() -> None:
    from prometheus_client import Gauge

    registry = CollectorRegistry()
    Gauge("smtp_balancer_bad_total", "a gauge must not end in _total", registry=registry).set(1)
    out = promtool("check", "metrics", stdin=generate_latest(registry))
    assert out.returncode != 0 and 'should not have "_total" suffix' in out.stdout + out.stderr
