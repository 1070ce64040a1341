"""The Grafana dashboard: built by Grafana's SDK, committed as built, naming only real metrics."""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY

from integration.dashboard import GRAFANA, dashboard_builder, register_daemon_metrics

register_daemon_metrics()


def test_committed_json_is_what_the_sdk_builds() -> None:
    assert (GRAFANA / "smtp-balancer.json").read_text() == dashboard_builder().render(), (
        "regenerate: .venv/bin/python mta-configs/grafana/build.py > mta-configs/grafana/smtp-balancer.json"
    )


def test_every_panel_uses_the_datasource_variable() -> None:
    board = json.loads((GRAFANA / "smtp-balancer.json").read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p[
            "title"
        ]


def test_no_panel_names_a_metric_we_do_not_export() -> None:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {m.name + s for m in REGISTRY.collect() for s in suffixes.get(m.type, ("",))}
    assert "smtp_balancer_decisions_total" in exported
    for title, expr in dashboard_builder().expressions():
        for name in re.findall(r"\bsmtp_balancer_\w+", expr):
            assert name in exported, f"{title}: {name}"
