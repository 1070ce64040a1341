"""Tenant holds and moves on real Redis: one at a time, released, listed with their time left."""

from __future__ import annotations

from smtp_balancer.state.audit import AuditTrail
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.tenant_holds import TenantHolds

KEYS = KeySchema()


def test_hold_release_and_list(rdb):
    holds = TenantHolds(rdb, KEYS, AuditTrail(rdb, KEYS))
    assert holds.hold("shop.test", 3600, "complaints at 1%", "cli")
    assert not holds.hold("shop.test", 60, "again", "cli")  # the standing hold is left as it is
    left, reason = holds.holds()["shop.test"]
    assert reason == "complaints at 1%" and 3590 <= left <= 3600  # Redis counts down in real time
    rdb.set(KEYS.tenant_hold("news.test"), "forever, by hand")  # redis-cli without a TTL
    assert holds.holds()["news.test"] == (-1, "forever, by hand")
    assert holds.release("shop.test") and not holds.release("shop.test")
    assert set(holds.holds()) == {"news.test"}
    verbs = [(e.verb, e.target) for e in AuditTrail(rdb, KEYS).read()]
    assert verbs == [("tenant hold", "shop.test"), ("tenant release", "shop.test")]


def test_move_release_and_list_and_the_deciders_read(rdb):
    holds = TenantHolds(rdb, KEYS, AuditTrail(rdb, KEYS))
    assert holds.move("shop.test", "quarantine", 3600, "spam rate 0.2%", "cli")
    assert not holds.move("shop.test", "slow", 60, "again", "cli")  # the standing move is left as it is
    left, pool, reason = holds.moves()["shop.test"]
    assert (pool, reason) == ("quarantine", "spam rate 0.2%") and 3590 <= left <= 3600
    holds.hold("news.test", 60, "complaints", "cli")
    assert holds.guard("shop.test") == (None, ("quarantine", "spam rate 0.2%"))
    assert holds.guard("news.test") == ("complaints", None)
    assert holds.release("shop.test") and not holds.release("shop.test")
    assert holds.moves() == {} and set(holds.holds()) == {"news.test"}
    verbs = [e.verb for e in AuditTrail(rdb, KEYS).read()]
    assert verbs == ["tenant move", "tenant hold", "tenant release"]
