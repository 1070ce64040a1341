"""explain and the deciders agree on hostile Redis content (#32): every key family
the deciders read, each holding each kind of junk byte string, against a real
redis-server. explain (select.lua with explain on) names the eligible endpoints;
decisions through select.lua and through the local mirror pick exactly those, and
none of the three degrades."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis

from smtp_balancer.clock import FixedClock
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.engine import Engine
from smtp_balancer.state.keys import KeySchema
from tests.ready import started

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
DAY = f"{NOW:%Y%m%d}"
K = KeySchema()
# each eligible endpoint has at least a quarter of the weight (1:2:1): missed in all
# DRAWS picks with probability 0.75**80 < 1e-9, about 1e-7 over the whole matrix
DRAWS = 80

JUNK = {
    "non-utf8": b"\xff\xfe",
    "nul": b"1\x00",
    "esc": b"\x1b[31m5",
    "over-long": b"9" * 5000,
    "arabic-indic digit": "\u0663".encode(),
    "fullwidth digit": "\uff10".encode(),
}


def _pair(key: str, field: str, **others: str) -> Callable[[redis.Redis, bytes], None]:
    return lambda rdb, junk: rdb.hset(key, mapping={**others, field: junk})


def _string(key: str) -> Callable[[redis.Redis, bytes], None]:
    return lambda rdb, junk: rdb.set(key, junk, ex=600)


# family -> how junk is written there (out2 for admin state and factors, out3 warming)
FAMILIES: dict[str, Callable[[redis.Redis, bytes], None]] = {
    "weight": _pair(K.pool_weights("main"), "out2"),
    "state": _pair(K.endpoint_state("out2"), "state"),
    "quarantine until": _pair(K.endpoint_state("out2"), "until", state="quarantined"),
    "drain reason": _pair(K.endpoint_state("out2"), "reason", state="drained"),
    "suspension reason": _string(K.suspension("out2", "google")),
    "throttle": _string(K.throttle("out2", "google")),
    "adaptive": _string(K.adaptive("out2", "google")),
    "slow": _string(K.slow("out2", "google")),
    "warm-up step": _pair(K.warmup("out3"), "step", day=DAY),
    "warm-up day": _pair(K.warmup("out3"), "day", step="2"),
    "day counter": _pair(K.day_counter("out3", DAY), "total"),
    "provider counter": _pair(K.day_counter("out3", DAY), "google", total="3"),
}

CONFIG = {
    "endpoints": {
        "out2": {"rate_caps": {"google": 10_000}},
        "out3": {
            "warmup": {
                "start": NOW.date().isoformat(),
                "schedule": [10_000, 20_000],
                "advance": "sending_days",
                "providers": {"google": [10_000, 20_000]},
            }
        },
    }
}


# what the README's junk rules leave out: a suspension or drain stands whatever its
# reason says, a quarantine with a junk `until` does not lift, a junk counter is a
# full one; every other junk value is ignored (active state, YAML weight, no factor,
# step 1)
LEFT_OUT = {
    "suspension reason": {"out2"},
    "quarantine until": {"out2"},
    "drain reason": {"out2"},
    "day counter": {"out3"},
    "provider counter": {"out3"},
}


def gmail(i: int) -> Facts:
    return Facts(sender=f"s{i}@shop.test", recipients=(f"u{i}@gmail.com",))


def _not_degraded(decision: Decision) -> None:
    assert not decision.degraded and "internal error" not in decision.reason, decision


@pytest.mark.parametrize("junk", list(JUNK), ids=list(JUNK))
@pytest.mark.parametrize("family", list(FAMILIES), ids=list(FAMILIES))
async def test_explain_and_the_deciders_agree_on_junk(make_config, rdb, family: str, junk: str):
    config = make_config(CONFIG)
    FAMILIES[family](rdb, JUNK[junk])
    for local in (False, True):
        engine = Engine(
            config.model_copy(update={"decision": config.decision.model_copy(update={"local": local})}),
            FixedClock(NOW),
        )
        try:
            await started(engine)
            await engine.settle()
            explained = await engine.decide(gmail(0), now=NOW, commit=False, explain=True)
            _not_degraded(explained)
            named = {v.endpoint for v in explained.verdicts if v.eligible and v.weight > 0}
            assert named == {"out1", "out2", "out3"} - LEFT_OUT.get(family, set()), (
                local,
                explained.verdicts,
            )
            eligible = named
            picked: set[str] = set()
            for i in range(DRAWS):
                decision = await engine.decide(gmail(i), now=NOW)
                _not_degraded(decision)
                picked.add(decision.endpoint or decision.outcome)
            assert picked == eligible, (local, picked, explained.verdicts)
        finally:
            await engine.aclose()
