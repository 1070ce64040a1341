"""Feedback writes against a real redis-server, and the engine honouring them."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis

from integration.statistics import assert_binomial
from smtp_balancer.clock import SYSTEM
from smtp_balancer.config.feedback import ResponseRuleConfig
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.feedback.follower import Position
from smtp_balancer.feedback.processor import Batch, Hit
from smtp_balancer.feedback.responses import ResponseMatcher
from smtp_balancer.state.feedback_store import FeedbackStore, OwnerChanged
from smtp_balancer.state.keys import KeySchema

KEYS = KeySchema()
GMAIL_421 = (
    "host gmail.com[127.0.0.1] said: 421-4.7.28 unusual rate of unsolicited mail (in reply to RCPT TO)"
)


def rule(**kw) -> ResponseRuleConfig:
    base = {"name": "r", "match": "4\\.7\\.28", "duration": 100, "window": 3600, "max_duration": 350}
    return ResponseRuleConfig(**{**base, **kw})


def hit(r: ResponseRuleConfig, uid: str, ep: str = "out2", provider: str = "google") -> Hit:
    compiled = ResponseMatcher([r]).rules[0]
    return Hit(compiled, ep, provider, "deferred", GMAIL_421, uid)


def apply(store: FeedbackStore, hits: list[Hit], offset: int = 0):
    return store.apply(Batch(hits=hits), Position(1, offset, b"").encode())


def test_a_counted_rule_acts_at_exactly_its_nth_match(rdb: redis.Redis) -> None:
    store = FeedbackStore(rdb, KEYS, "t", 3600)
    r = rule(trigger={"count": 3, "period": 60})
    outcomes = [apply(store, [hit(r, f"u{i}")])[0].outcome for i in range(3)]
    assert outcomes == ["counting", "counting", "acted"]
    reason = rdb.get(KEYS.suspension("out2", "google"))
    assert reason.startswith("rule r: out2 deferred by google:") and "421-4.7.28" in reason
    assert 95 <= rdb.ttl(KEYS.suspension("out2", "google")) <= 100


def test_a_replayed_line_does_not_count_twice(rdb: redis.Redis) -> None:
    store = FeedbackStore(rdb, KEYS, "t", 3600)
    r = rule(trigger={"count": 2, "period": 60})
    assert apply(store, [hit(r, "same")])[0].outcome == "counting"
    assert apply(store, [hit(r, "same")])[0].outcome == "counting"
    assert apply(store, [hit(r, "other")])[0].outcome == "acted"


def test_matches_outside_the_period_do_not_count(rdb: redis.Redis) -> None:
    store = FeedbackStore(rdb, KEYS, "t", 3600)
    r = rule(trigger={"count": 2, "period": 1})
    assert apply(store, [hit(r, "a")])[0].outcome == "counting"
    time.sleep(1.1)
    assert apply(store, [hit(r, "b")])[0].outcome == "counting"


def test_in_force_does_not_strike_again_and_repeats_grow_the_duration(rdb: redis.Redis) -> None:
    store = FeedbackStore(rdb, KEYS, "t", 3600)
    r = rule()
    first = apply(store, [hit(r, "1")])[0]
    assert (first.outcome, first.seconds, first.strike) == ("acted", 100, 1)
    assert apply(store, [hit(r, "2")])[0].outcome == "in_force"
    rdb.delete(KEYS.suspension("out2", "google"))  # as if the TTL ran out
    second = apply(store, [hit(r, "3")])[0]
    assert (second.seconds, second.strike) == (200, 2)
    rdb.delete(KEYS.suspension("out2", "google"))
    assert apply(store, [hit(r, "4")])[0].seconds == 350  # capped by max_duration


def test_a_batch_is_known_applied_by_its_own_mark_only(rdb: redis.Redis, redis_server) -> None:
    raw = redis.Redis.from_url(redis_server.url)  # bytes, as the daemon's own client reads them
    store = FeedbackStore(raw, KEYS, "host1", 3600)
    batch, other = Batch(uid="host1:7:0"), Batch(uid="host1:7:0+r1")
    assert not store.applied(batch)
    store.apply(batch, Position(7, 10, b"").encode())
    assert store.applied(batch) and not store.applied(other)
    # the same batch id in another run (a restart) is another batch
    assert not FeedbackStore(raw, KEYS, "host1", 3600).applied(batch)
    # a hand-edited mark: bytes that are not UTF-8, or another type, are not its mark
    rdb.set(KEYS.feedback_batch("host1"), b"\xff\xfe")
    assert not store.applied(batch)
    rdb.delete(KEYS.feedback_batch("host1"))
    rdb.hset(KEYS.feedback_batch("host1"), "x", "1")
    assert not store.applied(batch)
    store.apply(other, Position(7, 20, b"").encode())  # the transaction's SET replaces it
    assert store.applied(other)
    raw.close()


def test_a_watched_batch_is_applied_only_while_the_owner_is_as_it_was_read(rdb: redis.Redis) -> None:
    store = FeedbackStore(rdb, KEYS, "host1", 3600)
    owner = KEYS.feedback_owner("host1")
    rdb.set(owner, "me", px=30_000)
    batch = Batch(hits=[hit(rule(), "1")])
    batch.outcomes[("out1", "google", "202611241030", "sent")] = 5
    with store.watching_owner() as watched:
        assert store.load_position_and_owner(watched) == (None, "me")
        rdb.set(owner, "other", px=30_000)  # another daemon claims the instance meanwhile
        with pytest.raises(OwnerChanged):
            store.apply(batch, Position(7, 10, b"").encode(), watched)
    assert sorted(rdb.keys("*")) == [owner]  # no count, no rule hit, no position, no mark
    with store.watching_owner() as watched:
        assert store.load_position_and_owner(watched) == (None, "other")
        store.apply(batch, Position(7, 10, b"").encode(), watched)  # unchanged since: applied
    assert store.load_position() == Position(7, 10, b"").encode()
    assert rdb.hget(KEYS.outcomes("out1", "google", "202611241030"), "sent") == "5"


def test_apply_moves_the_position_with_the_counts(rdb: redis.Redis) -> None:
    store = FeedbackStore(rdb, KEYS, "host1", 3600)
    batch = Batch()
    batch.outcomes[("out1", "google", "202611241030", "sent")] = 5
    store.apply(batch, Position(7, 1234, b"tail").encode())
    assert rdb.hget(KEYS.outcomes("out1", "google", "202611241030"), "sent") == "5"
    assert store.load_position() == Position(7, 1234, b"tail").encode()


def gmail(i: int) -> Facts:
    return Facts(sender=f"s{i}@shop.test", recipients=(f"u{i}@gmail.com",))


async def test_a_throttle_lowers_the_share_and_only_for_its_provider(make_config, rdb: redis.Redis) -> None:
    engine = Engine(make_config())
    try:
        rdb.set(KEYS.throttle("out2", "google"), "0.25 rule x", ex=60)
        seen: Counter[str] = Counter()
        for i in range(6000):
            seen[(await engine.decide(gmail(i), commit=False)).endpoint] += 1
        # out2 keeps its share (50%) times the factor: 12.5%
        assert_binomial(seen["out2"], 6000, 0.125, seen)
        yahoo: Counter[str] = Counter()
        for i in range(2000):
            f = Facts(sender=f"s{i}@shop.test", recipients=(f"u{i}@yahoo.com",))
            yahoo[(await engine.decide(f, commit=False)).endpoint] += 1
        assert_binomial(yahoo["out2"], 2000, 0.5, yahoo)
    finally:
        await engine.aclose()


async def test_a_rule_quarantine_lifts_itself_at_until(make_config, rdb: redis.Redis) -> None:
    engine = Engine(make_config())
    try:
        state = KEYS.endpoint_state("out2")
        rdb.hset(state, mapping={"state": "quarantined", "reason": "rule", "until": int(SYSTEM.wall()) + 60})
        before = {(await engine.decide(gmail(i), commit=False)).endpoint for i in range(300)}
        assert "out2" not in before
        rdb.hset(state, "until", int(SYSTEM.wall()) - 1)
        after = {(await engine.decide(gmail(i), commit=False)).endpoint for i in range(300)}
        assert "out2" in after
    finally:
        await engine.aclose()


async def test_a_throttle_in_a_sticky_pool_keeps_a_factor_share_of_the_keys(
    make_config, rdb: redis.Redis
) -> None:
    engine = Engine(make_config({"pools": {"main": {"stickiness": "sender"}}}))
    try:
        before: dict[int, str | None] = {}
        for i in range(3000):
            before[i] = (await engine.decide(gmail(i), commit=False)).endpoint
        rdb.set(KEYS.throttle("out2", "google"), "0.25 rule x", ex=60)
        after = {i: (await engine.decide(gmail(i), commit=False)).endpoint for i in range(3000)}
        kept = [i for i in before if before[i] == "out2" and after[i] == "out2"]
        on_out2 = sum(1 for e in before.values() if e == "out2")
        assert_binomial(len(kept), on_out2, 0.25)  # each key's own hash keeps it with p = factor
        # keys that were elsewhere stay where they were: only out2's keys move
        assert all(after[i] == before[i] for i in before if before[i] != "out2")
        assert after == {
            i: (await engine.decide(gmail(i), commit=False)).endpoint for i in range(3000)
        }  # sticky
    finally:
        await engine.aclose()


def test_a_slow_rule_writes_its_factor_with_a_ttl_and_waits_while_in_force(rdb: redis.Redis) -> None:
    store = FeedbackStore(rdb, KEYS, "t", 3600)
    r = rule(action="slow", factor=0.25)
    assert apply(store, [hit(r, "1")])[0].outcome == "acted"
    value = rdb.get(KEYS.slow("out2", "google"))
    assert value.startswith("0.25 rule r: out2 deferred by google:"), value
    assert 95 <= rdb.ttl(KEYS.slow("out2", "google")) <= 100
    assert apply(store, [hit(r, "2")])[0].outcome == "in_force"
    assert not rdb.exists(KEYS.suspension("out2", "google"), KEYS.throttle("out2", "google"))
