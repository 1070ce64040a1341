"""Adaptive factors: the bands, hysteresis and minimum sample (pure), then the store
against a real redis-server, and the deciders applying them only where a pool opts in."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest
import redis

from integration.statistics import assert_binomial
from smtp_balancer.clock import FixedClock
from smtp_balancer.config.adaptive import AdaptiveConfig
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.feedback.adaptive import Sample, computed_factor, next_factor
from smtp_balancer.feedback.adaptive_store import AdaptiveRounds, AdaptiveStore
from smtp_balancer.state.keys import KeySchema, minute_bucket
from tests.ready import started

CFG = AdaptiveConfig(window=120, min_attempts=20, floor=0.1, hysteresis=0.1)
KEYS = KeySchema()
NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)


def test_each_signal_maps_through_its_band_and_the_smallest_wins():
    assert computed_factor(Sample(sent=19), CFG) is None  # below the minimum sample
    assert computed_factor(Sample(sent=100, latency_ms=100 * 1000), CFG) == (1.0, "healthy over 100 in 2m")
    # 15% deferred: half way from 5% (1) to 25% (the floor 0.1)
    assert computed_factor(Sample(sent=85, deferred=15), CFG) == (0.55, "deferred 15% of 100 in 2m")
    assert computed_factor(Sample(sent=70, deferred=30), CFG)[0] == 0.1  # past bad: the floor
    factor, cause = computed_factor(Sample(sent=96, deferred=1, bounced=3, blocked=3), CFG)
    assert (factor, cause) == (0.5, "blocked 3.0% of 100 in 2m")  # blocked beats the 1% deferred
    factor, cause = computed_factor(Sample(sent=40, latency_ms=40 * 32_500), CFG)
    assert (factor, cause) == (0.55, "latency 32.5s over 40 sent in 2m")


def test_hysteresis_ignores_small_moves_but_not_a_return_to_one_or_a_fall_to_the_floor():
    assert next_factor(1.0, 0.95, CFG) is None
    assert next_factor(1.0, 0.85, CFG) == 0.85
    assert next_factor(0.55, 0.5, CFG) is None
    assert next_factor(0.55, 0.4, CFG) == 0.4
    assert next_factor(0.15, 0.1, CFG) == 0.1  # the floor is always reached
    assert next_factor(0.9, 1.0, CFG) == 1.0
    assert next_factor(1.0, 1.0, CFG) is None


def _minute(rdb: redis.Redis, ep: str, provider: str, at: float, **fields: int) -> None:
    rdb.hset(KEYS.outcomes(ep, provider, minute_bucket(at)), mapping=fields)


def test_the_store_writes_lowers_keeps_and_lifts_a_factor(rdb: redis.Redis):
    store = AdaptiveStore(rdb, KEYS, CFG)
    now = NOW.timestamp()
    _minute(rdb, "out2", "google", now, sent=7, deferred=3)
    _minute(rdb, "out2", "google", now - 60, sent=7, deferred=3)
    _minute(rdb, "out2", "google", now - 180, sent=0, deferred=500)  # outside the 2m window
    _minute(rdb, "out2", "yahoo", now, sent=30)
    (google, yahoo) = store.evaluate({("out2", "google"), ("out2", "yahoo")}, now)
    assert (google.factor, google.changed, google.sample.attempts) == (0.1, True, 20)
    value = rdb.get(KEYS.adaptive("out2", "google"))
    assert value == "0.1 deferred 30% of 20 in 2m", value
    assert 230 <= rdb.ttl(KEYS.adaptive("out2", "google")) <= 240  # two windows
    assert (yahoo.factor, yahoo.changed) == (1.0, False) and not rdb.exists(KEYS.adaptive("out2", "yahoo"))
    # too few attempts in a later window: left alone, with its cause
    later = now + 300
    _minute(rdb, "out2", "google", later, sent=5)
    (google,) = store.evaluate({("out2", "google")}, later)
    assert (google.factor, google.changed) == (0.1, False) and "too few" not in google.cause
    # healthy again: lifted
    _minute(rdb, "out2", "google", later, sent=40)
    (google,) = store.evaluate({("out2", "google")}, later)
    assert (google.factor, google.changed) == (1.0, True)
    assert not rdb.exists(KEYS.adaptive("out2", "google"))


def test_junk_counts_are_read_as_zero_and_a_junk_factor_as_none(rdb: redis.Redis):
    store = AdaptiveStore(rdb, KEYS, CFG)
    now = NOW.timestamp()
    _minute(rdb, "out1", "google", now, sent=30)
    rdb.hset(KEYS.outcomes("out1", "google", minute_bucket(now)), "deferred", "٣٠")
    rdb.set(KEYS.adaptive("out1", "google"), "0x1 hand-edited", ex=600)
    (res,) = store.evaluate({("out1", "google")}, now)
    assert res.factor == 1.0 and res.sample.deferred == 0


def test_rounds_run_every_interval_for_adaptive_endpoints_only(rdb: redis.Redis):
    clock = FixedClock(NOW)
    rounds = AdaptiveRounds(AdaptiveStore(rdb, KEYS, CFG), {"out2"}, clock)
    _minute(rdb, "out2", "google", clock.wall(), sent=10, deferred=10)
    _minute(rdb, "out1", "google", clock.wall(), sent=10, deferred=10)
    rounds.note({("out2", "google"), ("out1", "google")})
    assert [(r.endpoint, r.factor) for r in rounds.maybe_run()] == [("out2", 0.1)]
    assert rounds.maybe_run() == []  # not due yet
    clock.advance(CFG.interval)
    assert len(rounds.maybe_run()) == 1
    clock.advance(2 * CFG.window + 1)  # not seen for two windows: forgotten
    assert rounds.maybe_run() == []


ADAPTIVE_POOLS = {
    "pools": {
        "main": {
            "endpoints": [{"endpoint": "out1", "weight": 1}, {"endpoint": "out2", "weight": 1}],
            "adaptive": True,
        },
        "plain": {"endpoints": [{"endpoint": "out1", "weight": 1}, {"endpoint": "out2", "weight": 1}]},
    },
    "rules": [
        {"name": "plain", "sender_domain": ["plain.test"], "pool": "plain"},
        {"name": "all", "pool": "main"},
    ],
}


@pytest.mark.parametrize("local", [True, False])
async def test_deciders_apply_the_factor_only_in_adaptive_pools_and_for_its_provider(make_config, rdb, local):
    rdb.set(KEYS.adaptive("out2", "google"), "0.1 deferred 30% of 40 in 5m", ex=600)
    engine = Engine(make_config({"decision": {"local": local}, **ADAPTIVE_POOLS}), FixedClock(NOW))
    engine.planner.rng = random.Random(f"adaptive-{local}")
    seen: Counter[tuple[str, str]] = Counter()
    n = 4_000
    try:
        await started(engine)
        for i in range(n):
            for sender, rcpt in (
                ("a@shop.test", "gmail.com"),
                ("a@shop.test", "yahoo.com"),
                ("a@plain.test", "gmail.com"),
            ):
                d = await engine.decide(Facts(sender=sender, recipients=(f"u{i}@{rcpt}",)))
                seen[(sender + rcpt, d.endpoint)] += 1
        explained = await engine.decide(
            Facts(sender="a@shop.test", recipients=("x@gmail.com",)), commit=False, explain=True
        )
    finally:
        await engine.aclose()
    # out2 keeps 0.1 of its draws for gmail in the adaptive pool: 0.5 x 0.1
    assert_binomial(seen[("a@shop.testgmail.com", "out2")], n, 0.05)
    assert_binomial(seen[("a@shop.testyahoo.com", "out2")], n, 0.5)
    assert_binomial(seen[("a@plain.testgmail.com", "out2")], n, 0.5)
    out2 = next(v for v in explained.verdicts if v.endpoint == "out2")
    assert out2.detail == "eligible, adaptive factor 0.1 (deferred 30% of 40 in 5m)", out2
