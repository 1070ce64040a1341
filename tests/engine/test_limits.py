"""Per-provider warm-up caps and rate caps, on every path, on a real redis-server.

Both are counted per provider, atomically, by select.lua: the mirror path hands
such a draw to it, the degraded path leaves the endpoint out for those providers.
Time comes from the injected clock, so the rate window moves only when a test says.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from integration.configs import deep_merge
from integration.redis_server import RedisServer
from smtp_balancer.clock import FixedClock
from smtp_balancer.decision.facts import Decision, EndpointVerdict, Facts
from smtp_balancer.engine import Engine
from tests.ready import started

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
DAY = NOW.strftime("%Y%m%d")
TODAY = NOW.date().isoformat()
DOMAINS = ("gmail.com", "yahoo.com", "example.org")

PROVIDER_CAP = {
    "endpoints": {
        "out3": {
            "warmup": {
                "start": TODAY,
                "schedule": [{"daily": 200, "hourly": 150}],
                "providers": {"google": [30]},
            }
        }
    }
}
RATE_CAP = {"endpoints": {"out2": {"rate_caps": {"google": 60}}}}


def _facts(i: int, domain: str) -> Facts:
    return Facts(sender=f"s{i}@shop.test", recipients=(f"u{i}@{domain}",))


async def _run(engine: Engine, facts: list[Facts]) -> list[tuple[str, str]]:
    out = []
    for f in facts:
        d = await engine.decide(f)
        out.append((f.recipients[0].rsplit("@", 1)[1], d.endpoint or d.outcome))
    return out


@pytest.mark.parametrize("local", [True, False])
async def test_a_provider_cap_spills_that_provider_while_others_fill_the_total(make_config, rdb, local):
    engine = Engine(make_config({"decision": {"local": local}, **PROVIDER_CAP}), FixedClock(NOW))
    engine.planner.rng = random.Random(f"provider-cap-{local}")
    rng = random.Random(1)
    try:
        await started(engine)
        picks = await _run(engine, [_facts(i, rng.choice(DOMAINS)) for i in range(1_000)])
    finally:
        await engine.aclose()
    via_out3 = Counter(domain for domain, ep in picks if ep == "out3")
    assert via_out3["gmail.com"] == 30, via_out3
    # the hour cap (150) binds before the day's 200: other providers keep out3 up to it
    assert via_out3.total() == 150, via_out3
    gmail_elsewhere = sum(1 for domain, ep in picks if domain == "gmail.com" and ep in ("out1", "out2"))
    assert gmail_elsewhere > 200  # spilled, not deferred
    counter = rdb.hgetall(f"{{sb}}:count:out3:day:{DAY}")
    assert counter["google"] == "30" and counter["total"] == "150", counter


async def _out3_verdicts(make_config) -> tuple[EndpointVerdict, EndpointVerdict]:
    """out3's explain verdicts for a gmail and a yahoo message, under PROVIDER_CAP."""
    engine = Engine(make_config(PROVIDER_CAP), FixedClock(NOW))
    try:
        await started(engine)
        gmail = await engine.decide(_facts(1, "gmail.com"), commit=False, explain=True)
        yahoo = await engine.decide(_facts(2, "yahoo.com"), commit=False, explain=True)
    finally:
        await engine.aclose()
    return _verdict(gmail, "out3"), _verdict(yahoo, "out3")


def _verdict(decision: Decision, endpoint: str) -> EndpointVerdict:
    return next(v for v in decision.verdicts if v.endpoint == endpoint)


async def test_explain_names_the_provider_cap(make_config, rdb):
    rdb.hset(f"{{sb}}:count:out3:day:{DAY}", mapping={"total": 40, "google": 30})
    gmail, yahoo = await _out3_verdicts(make_config)
    assert not gmail.eligible and gmail.detail == "google day cap 30/30", gmail
    assert yahoo.eligible


async def test_a_junk_provider_counter_blocks_that_provider_only(make_config, rdb):
    rdb.hset(f"{{sb}}:count:out3:day:{DAY}", mapping={"total": 1, "google": "٣"})
    gmail, yahoo = await _out3_verdicts(make_config)
    assert gmail.detail == "google day cap: counter unreadable"
    assert yahoo.eligible


@pytest.mark.parametrize("local", [True, False])
async def test_a_rate_cap_holds_in_any_minute_and_a_slow_lowers_it(make_config, rdb, local):
    clock = FixedClock(NOW)
    engine = Engine(make_config({"decision": {"local": local}, **RATE_CAP}), clock)
    engine.planner.rng = random.Random(f"rate-{local}")

    async def burst(n: int, domain: str = "gmail.com") -> Counter[str]:
        return Counter(ep for _, ep in await _run(engine, [_facts(i, domain) for i in range(n)]))

    try:
        await started(engine)
        first = await burst(300)
        clock.advance(30)
        half_minute = await burst(300)
        yahoo = await burst(400, "yahoo.com")  # not capped: out2 keeps its weight share
        # the first burst left the window: 62 s on, not 61, because a leased slot counts
        # at the second after its decision (decision/rates.lease_second), and whether a
        # burst's last message had a lease or went to select.lua is the loop's timing
        clock.advance(32)
        second = await burst(300)
        rdb.set("{sb}:slow:out2:google", "0.5 rule test: 421", ex=3600)
        clock.advance(62)
        slowed = await burst(300)
        rdb.set("{sb}:slow:out2:google", "0x1 junk", ex=3600)  # junk: ignored, counted
        clock.advance(62)
        junk_slow = await burst(300)
    finally:
        await engine.aclose()
    assert first["out2"] == 60 and half_minute["out2"] == 0, (first, half_minute)
    assert yahoo["out2"] > 120  # about half of 400
    assert second["out2"] == 60
    assert slowed["out2"] == 30
    assert junk_slow["out2"] == 60
    # the rest spilled to the others, none deferred
    assert all(set(c) <= {"out1", "out2", "out3"} for c in (first, half_minute, second, slowed))


async def test_explain_shows_a_rate_cap_and_counts_nothing(make_config, rdb):
    engine = Engine(make_config(RATE_CAP), FixedClock(NOW))
    try:
        await started(engine)
        for i in range(60):
            await engine.decide(Facts(recipients=(f"u{i}@gmail.com",)), commit=False, explain=True)
        rdb.set("{sb}:slow:out2:google", "0.25 rule test: 421", ex=3600)
        before = rdb.exists("{sb}:ratesec:out2:google")
        d = await engine.decide(_facts(1, "gmail.com"), commit=False, explain=True)
    finally:
        await engine.aclose()
    assert before == 0
    out2 = _verdict(d, "out2")
    assert out2.eligible  # nothing counted: the cap is not reached
    rdb.hset("{sb}:ratesec:out2:google", int(NOW.timestamp()) - 1, 15)
    engine = Engine(make_config(RATE_CAP), FixedClock(NOW))
    try:
        await started(engine)
        d = await engine.decide(_facts(1, "gmail.com"), commit=False, explain=True)
    finally:
        await engine.aclose()
    out2 = _verdict(d, "out2")
    assert out2.detail == "google rate cap 15/15 a minute (slowed to 0.25)", out2


async def test_degraded_leaves_out_what_it_cannot_count(make_config, rdb, redis_server: RedisServer):
    engine = Engine(make_config(deep_merge(RATE_CAP, PROVIDER_CAP)), FixedClock(NOW))
    engine.planner.rng = random.Random("degraded")
    seen: Counter[tuple[str, str]] = Counter()
    try:
        await started(engine)
        redis_server.stop()
        for i in range(600):
            domain = DOMAINS[i % 3]
            d = await engine.decide(_facts(i, domain))
            if d.degraded:
                seen[(domain, d.endpoint or d.outcome)] += 1
    finally:
        await engine.aclose()
    assert sum(seen.values()) > 500
    # out3 is warming: never without Redis; out2 is rate-capped for google only
    assert not [k for k in seen if k[1] == "out3"]
    assert seen[("gmail.com", "out2")] == 0 and seen[("yahoo.com", "out2")] > 0, seen


def test_slow_needs_a_rate_cap(make_config):
    from smtp_balancer.config.loader import ConfigInvalid

    rule = {"name": "slow-421", "match": "421", "action": "slow", "providers": ["yahoo"]}
    with pytest.raises(ConfigInvalid, match="slow lowers a rate cap"):
        make_config({**RATE_CAP, "feedback": {"response_rules": [rule]}})
    make_config({**RATE_CAP, "feedback": {"response_rules": [{**rule, "providers": ["google"]}]}})
