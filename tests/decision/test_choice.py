"""choice.py picks exactly what select.lua picks: checked against the real script in Redis."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

import pytest

from integration.statistics import assert_binomial
from smtp_balancer.decision.choice import NeedRedis, Stage, choose
from smtp_balancer.decision.draw import Draw
from smtp_balancer.decision.eligibility import Eligibility
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.quota import QuotaBook
from smtp_balancer.engine import Engine
from smtp_balancer.state import scripts
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.live import LiveState

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
ENDPOINTS = [f"e{i}" for i in range(6)]


class Fixed(Eligibility):
    def __init__(self, out: set[str] = frozenset(), throttles: dict[str, float] | None = None) -> None:
        self.out, self.throttles = out, throttles or {}

    def weight(self, pool: str, endpoint: str, yaml_weight: int) -> int:
        return yaml_weight

    def why_not(self, endpoint: str, ignore_caps: bool) -> str | None:
        if endpoint == "ask":
            raise NeedRedis(endpoint)
        return "out of service" if endpoint in self.out else None

    def throttle(self, endpoint: str, adaptive: bool) -> float:
        return self.throttles.get(endpoint, 1.0)


def test_weighted_draw_redraws_among_the_eligible():
    stage = Stage("p", (("a", 1), ("b", 2), ("c", 1)), "", 1, False)
    rng = random.Random(5)
    picks = [choose([stage], [None], rng.random(), Fixed({"b"})) for _ in range(4000)]
    assert all(p and p[1] != "b" for p in picks)
    assert_binomial(sum(p[1] == "a" for p in picks if p), len(picks), 0.5)  # a and c at 1:1 once b is out


def test_throttle_keeps_its_factor_of_the_share():
    stage = Stage("p", (("a", 1), ("b", 1)), "", 1, False)
    rng = random.Random(6)
    picks = [choose([stage], [None], rng.random(), Fixed(throttles={"a": 0.25}))[1] for _ in range(8000)]
    # a keeps 0.25 of its half; what it sheds redraws to b
    assert_binomial(picks.count("a"), 8000, 0.125)


def test_overflow_to_the_next_stage_and_none_when_all_are_out():
    first = Stage("p", (("a", 1),), "", 1, False)
    second = Stage("q", (("b", 1),), "", 1, False)
    assert choose([first, second], [None, None], 0.3, Fixed({"a"})) == (1, "b", 1)
    assert choose([first, second], [None, None], 0.3, Fixed({"a", "b"})) is None


def test_need_redis_propagates():
    stage = Stage("p", (("ask", 1),), "", 1, False)
    with pytest.raises(NeedRedis):
        choose([stage], [None], 0.5, Fixed())


def _random_config(rng: random.Random) -> dict:
    members = rng.sample(ENDPOINTS, rng.randint(2, 6))
    overflow_members = [e for e in ENDPOINTS if e not in members] or ENDPOINTS[:1]
    return {
        "endpoints": {e: {"bind_address": f"127.0.0.{i + 2}"} for i, e in enumerate(ENDPOINTS)},
        "pools": {
            "p": {
                "endpoints": [{"endpoint": e, "weight": rng.randint(1, 5)} for e in members],
                "stickiness": rng.choice(["none", "sender", "sender_domain"]),
                "spread": rng.randint(1, 3),
                "overflow": "pool:q",
            },
            "q": {"endpoints": [{"endpoint": e, "weight": 1} for e in overflow_members], "overflow": "defer"},
        },
        "rules": [{"name": "all", "pool": "p"}],
    }


def _random_state(rdb, rng: random.Random) -> None:
    rdb.flushdb()
    for e in ENDPOINTS:
        roll = rng.random()
        if roll < 0.15:
            rdb.hset(f"{{sb}}:endpoint:{e}:state", "state", "drained")
        elif roll < 0.25:
            rdb.set(f"{{sb}}:suspend:{e}:{rng.choice(['all', 'google', 'yahoo'])}", "test", ex=600)
        elif roll < 0.4:
            provider = rng.choice(["all", "google"])
            rdb.set(f"{{sb}}:throttle:{e}:{provider}", f"{rng.choice([0.1, 0.5, 0.9])} test", ex=600)
        if rng.random() < 0.3:
            rdb.hset("{sb}:pool:p:weights", e, rng.randint(0, 7))


@pytest.mark.parametrize("seed", range(12))
async def test_python_choice_equals_select_lua(make_config, rdb, seed):
    rng = random.Random(seed)
    _random_state(rdb, rng)
    engine = Engine(make_config(replace=_random_config(rng)))
    try:
        live = await engine.mirror.load()
        book = QuotaBook(KeySchema())
        compared = 0
        for i in range(150):
            facts = Facts(sender=f"u{i % 17}@d{i % 5}.test", recipients=(f"x{i}@gmail.com",))
            call = engine.planner.prepare(facts, NOW, commit=False)
            assert isinstance(call, Draw)
            keys, args = engine.codec.encode(call)
            reply = await engine.channel.evalsha(scripts.SELECT, keys, args)
            lua = None if reply[0] == b"none" else (int(reply[1]) - 1, reply[2].decode(), int(reply[3]))
            local = choose(
                call.plan.stages,
                call.hashes,
                call.r,
                Eligibility(call, live, book, time.monotonic()),
            )
            assert local == lua, (seed, i, call.r)
            compared += 1
        assert compared == 150
    finally:
        await engine.aclose()


def test_mirror_reads_throttles_and_quarantine_until():
    live = LiveState(
        0.0,
        out_of_service={"a": 100.0},
        throttles={("b", "google"): (0.5, 10.0), ("b", "all"): (0.8, 10.0)},
    )
    assert live.is_out_of_service("a", 99.0) and not live.is_out_of_service("a", 100.0)
    assert live.throttle("b", ["google"], 5.0) == 0.5
    assert live.throttle("b", ["yahoo"], 5.0) == 0.8
    assert live.throttle("b", ["google"], 11.0) == 1.0  # expired
