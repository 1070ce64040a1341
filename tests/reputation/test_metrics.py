"""The reputation levels: the worse address of the newest day per source; junk counted."""

from __future__ import annotations

from prometheus_client import generate_latest

from smtp_balancer.reputation.metrics import GAUGES, levels

ENDPOINTS = frozenset({"out1", "out2"})


def test_levels_per_endpoint_provider_and_source():
    records = {
        ("out2", "google"): {
            "postmaster:ip_reputation:127.0.0.3": "2026-12-05 BAD one of 3 IPs",
            "postmaster:ip_reputation:::3": "2026-12-05 HIGH",  # its IPv6 address: the worse counts
        },
        ("out1", "google"): {
            "postmaster:ip_reputation:127.0.0.2": "2026-12-05 HIGH",
            "postmaster:ip_reputation:::2": "2026-12-01 BAD",  # an older day, no longer sampled
        },
        ("out2", "microsoft"): {
            "snds:filter_result:127.0.0.3": "2026-12-05 YELLOW",
            "snds:complaint_rate:127.0.0.3": "2026-12-05 0.1",  # a number: no level
            "snds:blocked:127.0.0.3": "2026-12-05 yes Blocked due to user complaints",
        },
        ("out1", "microsoft"): {"snds:filter_result:127.0.0.2": "junk"},
        ("gone", "google"): {"postmaster:ip_reputation:127.0.0.9": "2026-12-05 HIGH"},
    }
    assert levels(records, ENDPOINTS) == {
        ("out2", "google", "postmaster"): 0,
        ("out1", "google", "postmaster"): 3,
        ("out2", "microsoft", "snds"): 0,  # blocked
        ("", "", "junk"): 2,  # the junk value, and the endpoint no longer configured
    }


def test_the_gauge_exports_them():
    assert (
        GAUGES.update(
            {("out2", "google"): {"postmaster:ip_reputation:127.0.0.3": "2026-12-05 LOW"}}, ENDPOINTS
        )
        == 0
    )
    text = generate_latest().decode()
    assert 'smtp_balancer_reputation{endpoint="out2",provider="google",source="postmaster"} 1.0' in text
    GAUGES.update({}, ENDPOINTS)
    assert "smtp_balancer_reputation{" not in generate_latest().decode()
