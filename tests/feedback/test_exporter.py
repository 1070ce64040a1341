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


def test_the_state_round_exports_the_reputation_levels_and_counts_junk(make_config, rdb, caplog) -> None:
    config = make_config()
    rdb.hset("{sb}:reputation:out2:google", "postmaster:ip_reputation:127.0.0.3", "2026-12-05 LOW")
    rdb.hset(
        "{sb}:reputation:out1:microsoft",
        mapping={
            "snds:blocked:127.0.0.2": "2026-12-05 yes why",
            "snds:filter_result:127.0.0.2": "hand-edited",
        },
    )
    junk_before = REGISTRY.get_sample_value("smtp_balancer_state_junk_total", {"kind": "reputation"}) or 0
    with caplog.at_level(logging.WARNING, logger="smtp_balancer.feedback"):
        StateExporter(config, rdb).round()
    level = lambda e, p, s: REGISTRY.get_sample_value(  # noqa: E731
        "smtp_balancer_reputation", {"endpoint": e, "provider": p, "source": s}
    )
    assert level("out2", "google", "postmaster") == 1 and level("out1", "microsoft", "snds") == 0
    assert (
        REGISTRY.get_sample_value("smtp_balancer_state_junk_total", {"kind": "reputation"}) == junk_before + 1
    )
    assert "1 reputation record fields that are not records skipped" in caplog.text
