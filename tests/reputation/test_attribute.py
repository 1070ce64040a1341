"""Observations to endpoints: one IP, a range, IPv6, NAT; an IP of nobody's counted."""

from __future__ import annotations

import ipaddress
from datetime import date

from integration.configs import deep_merge, topology
from smtp_balancer.config import validate_config
from smtp_balancer.reputation.attribute import Attributor
from smtp_balancer.reputation.exports import Observation, Skipped

IP = ipaddress.ip_address
DAY = date(2026, 12, 5)
CONFIG = validate_config(
    deep_merge(
        {"mx_lookup": {"enabled": False}, **topology()},
        {"endpoints": {"out1": {"bind_address6": "::1"}, "out3": {"public_ip": "203.0.113.9"}}},
    )
)


def test_ips_and_ranges_become_records_of_the_endpoints_sending_from_them():
    skipped = Skipped()
    seen = [
        Observation("postmaster", DAY, "ip_reputation", "BAD", IP("127.0.0.3"), IP("127.0.0.3")),
        Observation("snds", DAY, "blocked", "yes", IP("127.0.0.0"), IP("127.0.0.255"), detail="why"),
        Observation("postmaster", DAY, "ip_reputation", "LOW", IP("::1"), IP("::1")),
        Observation("snds", DAY, "filter_result", "RED", IP("203.0.113.9"), IP("203.0.113.9")),
        Observation("postmaster", DAY, "ip_reputation", "BAD", IP("192.0.2.50"), IP("192.0.2.50")),
        Observation("postmaster", DAY, "spam_ratio", "0.004", domain="shop.test", detail="0.003-0.005"),
    ]
    records = list(Attributor(CONFIG).records(seen, skipped))
    assert [(r.endpoint, r.provider, r.signal, r.subject) for r in records] == [
        ("out2", "google", "ip_reputation", "127.0.0.3"),
        ("out1", "microsoft", "blocked", "127.0.0.2"),
        ("out2", "microsoft", "blocked", "127.0.0.3"),
        ("out3", "microsoft", "blocked", "127.0.0.4"),  # its bind address; the public one is outside
        ("out1", "google", "ip_reputation", "::1"),
        ("out3", "microsoft", "filter_result", "203.0.113.9"),  # behind NAT: the address receivers see
        ("", "google", "spam_ratio", ""),
    ]
    assert records[-1].domain == "shop.test" and records[-1].detail == "0.003-0.005"
    assert skipped.reasons == {"postmaster ip_reputation about an IP no endpoint sends from": 1}
