"""The feedback daemon's state round against a real redis-server: gauges and the fleet's complaint totals."""

from __future__ import annotations

import logging
import threading

from prometheus_client import REGISTRY

from smtp_balancer.feedback.checks import HealthChecks


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
    checks = HealthChecks(config, rdb, threading.Event())
    with caplog.at_level(logging.WARNING, logger="smtp_balancer.feedback"):
        checks.state_round()

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


def test_a_dual_stack_endpoint_is_quarantined_when_either_address_is_listed(make_config, rdb) -> None:
    from smtp_balancer.config.feedback import DnsblZone
    from smtp_balancer.feedback.dnsbl import DnsblResult

    config = make_config(
        {
            "endpoints": {"out2": {"public_ip": "192.0.2.2", "public_ip6": "2001:db8::2"}},
            "feedback": {"dnsbl": {"zones": [{"zone": "bl.test"}]}},
        }
    )
    checks = HealthChecks(config, rdb, threading.Event())
    assert checks.targets == {"out2": ("192.0.2.2", "2001:db8::2")}
    listed = {"2001:db8::2"}

    class Checker:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def check(self, ip: str, zone: DnsblZone) -> DnsblResult:
            self.asked.append(ip)
            verdict, codes = ("listed", "127.0.0.2") if ip in listed else ("clean", "")
            return DnsblResult(zone.zone, ip, verdict, codes)

    checks.dnsbl = Checker()  # type: ignore[assignment]
    checks.dnsbl_round()
    assert checks.dnsbl.asked == ["192.0.2.2", "2001:db8::2"]
    state = rdb.hgetall("{sb}:endpoint:out2:state")
    assert state["state"] == "quarantined" and "2001:db8::2 listed on bl.test" in state["reason"]
    assert (
        REGISTRY.get_sample_value("smtp_balancer_dnsbl_listed", {"endpoint": "out2", "zone": "bl.test"}) == 1
    )
    listed.clear()  # delisted: both addresses clean
    checks.dnsbl_round()
    assert rdb.hget("{sb}:endpoint:out2:state", "state") == "active"
    assert (
        REGISTRY.get_sample_value("smtp_balancer_dnsbl_listed", {"endpoint": "out2", "zone": "bl.test"}) == 0
    )
