"""Health checks against a real redis-server: DNSBL listings of either address of an endpoint."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY

from smtp_balancer.feedback.checks import HealthChecks


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
