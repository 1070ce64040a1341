"""Tenants: sender domains to a bounded label (sans I/O)."""

from __future__ import annotations

from smtp_balancer.decision.tenants import TenantTable

TENANTS = TenantTable(["shop.test", "news.example"])


def test_a_tenant_is_the_nearest_configured_parent_domain() -> None:
    assert TENANTS.of("a@shop.test") == "shop.test"
    assert TENANTS.of("bounce+x=y@mail.bounces.SHOP.test.") == "shop.test"
    assert TENANTS.of("a@notshop.test") == "other"
    assert TENANTS.of("") == "other"  # the null sender of a bounce
    assert TENANTS.of("news.example") == "news.example"  # a bare domain works too
    assert not TenantTable([])
