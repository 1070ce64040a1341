"""The feedback daemon's state exporter against a real redis-server: gauges, the
fleet's complaint totals, reputation levels and tenants' spam rates."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from smtp_balancer.clock import SYSTEM
from smtp_balancer.feedback.exporter import StateExporter
from smtp_balancer.state.keys import hour_bucket


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


def test_the_state_round_exports_each_tenants_spam_rate_over_24_hours(make_config, rdb) -> None:
    config = make_config({"tenants": ["shop.test", "news.test"]})
    now = SYSTEM.wall()

    def hour(ago: int) -> str:
        return hour_bucket(datetime.fromtimestamp(now - 3600 * ago, UTC))

    rdb.hset(f"{{sb}}:tenant:shop.test:{hour(0)}", mapping={"sent": 600, "complained": 2, "deferred": 9})
    rdb.hset(f"{{sb}}:tenant:shop.test:{hour(23)}", mapping={"sent": 400, "complained": 1})
    rdb.hset(f"{{sb}}:tenant:shop.test:{hour(24)}", mapping={"sent": 5000, "complained": 50})  # a day ago
    rdb.hset(f"{{sb}}:tenant:news.test:{hour(3)}", mapping={"sent": "junk", "complained": 1})
    StateExporter(config, rdb).round()

    def sample(name: str, tenant: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"tenant": tenant})

    assert sample("smtp_balancer_tenant_spam_rate", "shop.test") == 3 / 1000
    assert sample("smtp_balancer_tenant_delivered", "shop.test") == 1000
    assert sample("smtp_balancer_tenant_delivered", "news.test") == 0  # a junk count reads as 0
    assert sample("smtp_balancer_tenant_spam_rate", "news.test") is None  # nothing delivered: no rate
    assert sample("smtp_balancer_tenant_delivered", "other") == 0
