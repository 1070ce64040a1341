"""The reputation levels: the worse address of the newest day per source; junk counted."""

from __future__ import annotations

from datetime import date

from prometheus_client import generate_latest

from smtp_balancer.decision.tenants import TenantTable
from smtp_balancer.reputation.metrics import GAUGES, levels, reported_spam

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


def test_a_tenants_reported_spam_rate_is_its_domains_newest_recent_day():
    records = {
        ("shop.test", "google"): {
            "postmaster:spam_ratio": "2026-12-05 0.0041 0.0035-0.0047",
            "postmaster:domain_reputation": "2026-12-05 LOW",
        },
        ("news.shop.test", "google"): {
            "postmaster:spam_ratio": "2026-12-04 0.009"
        },  # older: shop.test's newer
        ("old.test", "google"): {"postmaster:spam_ratio": "2026-11-20 0.02"},  # past max_age_days
        ("junk.test", "google"): {"postmaster:spam_ratio": "2026-12-05 lots"},
        ("stranger.test", "google"): {"postmaster:spam_ratio": "2026-12-05 0.5"},  # no tenant
    }
    tenants = TenantTable(["shop.test", "old.test", "junk.test"])
    assert reported_spam(records, tenants, date(2026, 12, 5), 3) == {("shop.test", "google"): 0.0041}
    GAUGES.update_tenants({("shop.test", "google"): 0.0041})
    text = generate_latest().decode()
    assert 'smtp_balancer_tenant_reported_spam_rate{provider="google",tenant="shop.test"} 0.0041' in text
