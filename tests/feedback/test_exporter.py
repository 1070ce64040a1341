"""The feedback daemon's state exporter against a real redis-server: gauges and the
fleet's complaint totals."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY

from smtp_balancer.feedback.exporter import StateExporter


def test_the_state_round_exports_the_complaint_totals_and_names_junk(make_config, rdb, caplog) -> None:
    config = make_config({"tenants": ["shop.test"]})
    rdb.hset(
        "{sb}:fbl:totals",
        mapping={
            "report:complaint": 4,
            "report:malformed": 1,
            "complaint:out2:yahoo:shop.test": 3,
            "complaint:out1:microsoft:other": 1,
            "complaint:gone:yahoo:other": 7,  # not a configured endpoint
            "report:malformed-ish": "x",
        },
    )
    exporter = StateExporter(config, rdb)
    with caplog.at_level(logging.WARNING, logger="smtp_balancer.feedback"):
        exporter.round()

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    def complaints(endpoint: str, provider: str, tenant: str) -> float | None:
        labels = {"endpoint": endpoint, "provider": provider, "tenant": tenant}
        return sample("smtp_balancer_complaints_total", **labels)

    assert sample("smtp_balancer_fbl_reports_total", result="complaint") == 4
    assert sample("smtp_balancer_fbl_reports_total", result="too_large") == 0
    assert complaints("out2", "yahoo", "shop.test") == 3
    assert complaints("out3", "yahoo", "other") == 0  # every reporting series starts at 0
    assert complaints("gone", "yahoo", "other") is None
    assert "2 junk fields in the complaint totals hash skipped" in caplog.text
    # and the state gauges, from the same round
    assert sample("smtp_balancer_endpoint_state", endpoint="out1", state="active") == 1
