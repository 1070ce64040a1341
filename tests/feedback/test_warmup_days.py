"""Managed warm-ups: the day's judgement (pure), the records in a real redis-server
moved day by day with an injected clock, and the deciders' caps following them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import redis

from smtp_balancer.clock import FixedClock
from smtp_balancer.config.endpoints import WarmupConfig
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.feedback.warmup_days import judge
from smtp_balancer.feedback.warmup_store import WarmupRecords
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.reputation import Record, ReputationStore
from tests.ready import mirrored

SCHEDULE = ((100, None), (200, None), (400, None))
KEYS = KeySchema()
START = date(2026, 11, 24)


def cfg(**kw) -> WarmupConfig:
    return WarmupConfig(start=START, schedule=[100, 200, 400], **kw)


def test_calendar_advance_with_no_rules_always_advances():
    assert judge(1, SCHEDULE, 0, {}, cfg(), "20261124")[0] == 2


def test_sending_days_count_only_when_enough_of_the_cap_was_used():
    managed = cfg(advance="sending_days", min_share=0.5)
    assert judge(2, SCHEDULE, 99, {}, managed, "20261125") == (
        2,
        "held: sent 99 of its cap 200 on 2026-11-25, under 50%",
    )
    assert judge(2, SCHEDULE, 100, {}, managed, "20261125") == (
        3,
        "advanced: sent 100 of its cap 200 on 2026-11-25",
    )
    assert judge(4, SCHEDULE, 0, {}, managed, "20261125") == (4, "warm: the schedule is over")


def test_hold_on_rules_hold_or_step_back_over_their_minimum_sample():
    rules = cfg(
        hold_on=[
            {"measure": "deferred", "above_percent": 10, "min_attempts": 50},
            {"measure": "deferred", "above_percent": 30, "then": "step_back", "min_attempts": 50},
            {"measure": "complained", "above_percent": 0.1, "min_attempts": 100},
        ]
    )
    assert judge(2, SCHEDULE, 200, {"sent": 30, "deferred": 19}, rules, "20261125")[0] == 3  # 49 attempts
    step, why = judge(2, SCHEDULE, 200, {"sent": 80, "deferred": 20}, rules, "20261125")
    assert (step, why) == (2, "held: deferred 20.00% of 100 attempts > 10.0% on 2026-11-25")
    step, why = judge(2, SCHEDULE, 200, {"sent": 60, "deferred": 40}, rules, "20261125")
    assert (step, why) == (1, "stepped back: deferred 40.00% of 100 attempts > 30.0% on 2026-11-25")
    assert judge(1, SCHEDULE, 200, {"sent": 60, "deferred": 40}, rules, "20261125")[0] == 1  # never below 1
    step, why = judge(2, SCHEDULE, 200, {"sent": 1000, "complained": 2}, rules, "20261125")
    assert (step, why) == (2, "held: complained 0.20% of 1000 delivered > 0.1% on 2026-11-25")


MANAGED = {
    "endpoints": {
        "out3": {
            "warmup": {
                "start": START.isoformat(),
                "schedule": [10, 20, 40],
                "advance": "sending_days",
                "min_share": 0.5,
                "hold_on": [{"measure": "deferred", "above_percent": 20, "min_attempts": 10}],
            }
        }
    },
    "pools": {"main": {"endpoints": [{"endpoint": "out3", "weight": 1}]}},
}


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 0, 1, tzinfo=UTC)


def test_records_move_day_by_day(make_config, rdb: redis.Redis):
    records = WarmupRecords(rdb, make_config(MANAGED))
    assert records.judge_days(START - timedelta(days=1)) == []  # before its start: nothing
    (first,) = records.judge_days(START)
    assert (first.step, first.why) == (1, "step 1: the first day of a managed warm-up")
    assert records.judge_days(START) == []  # once a day
    rdb.hset(KEYS.day_counter("out3", "20261124"), "total", 4)  # 4 of 10: under half
    (held,) = records.judge_days(START + timedelta(days=1))
    assert held.step == 1 and held.why.startswith("held: sent 4 of its cap 10")
    rdb.hset(KEYS.day_counter("out3", "20261125"), "total", 10)
    (advanced,) = records.judge_days(START + timedelta(days=2))
    assert advanced.step == 2
    assert rdb.hgetall(KEYS.warmup("out3")) == {
        "step": "2",
        "day": "20261126",
        "why": "advanced: sent 10 of its cap 10 on 2026-11-25",
        "judged": "20261125",
    }
    rdb.hset(KEYS.day_counter("out3", "20261126"), "total", 20)
    rdb.hset(KEYS.daily("out3", "20261126"), mapping={"sent": 15, "deferred": 5})  # 25% > 20%
    (deferred,) = records.judge_days(START + timedelta(days=3))
    assert deferred.step == 2 and deferred.why.startswith("held: deferred 25.00% of 20 attempts")
    rdb.hset(KEYS.warmup("out3"), "step", "٣")  # hand-edited junk: back to step 1, said so
    (again,) = records.judge_days(START + timedelta(days=4))
    assert again.step == 1


def test_an_operators_hold_keeps_the_step_while_the_days_move_on(make_config, rdb: redis.Redis):
    records = WarmupRecords(rdb, make_config(MANAGED))
    first, second = (f"{START + timedelta(days=n):%Y%m%d}" for n in (0, 1))
    records.judge_days(START)
    rdb.hset(KEYS.day_counter("out3", first), "total", 10)  # a full day: it would advance
    rdb.hset(KEYS.warmup("out3"), "hold", 1)  # smtp-balancer warmup hold out3
    (held,) = records.judge_days(START + timedelta(days=1))
    assert (held.step, held.why) == (1, "held by an operator (smtp-balancer warmup release out3)")
    assert rdb.hget(KEYS.warmup("out3"), "day") == second
    rdb.hset(KEYS.day_counter("out3", second), "total", 10)
    rdb.hdel(KEYS.warmup("out3"), "hold")  # released
    (advanced,) = records.judge_days(START + timedelta(days=2))
    assert advanced.step == 2


async def test_deciders_cap_by_the_record_not_the_calendar(make_config, rdb: redis.Redis):
    day = START + timedelta(days=2)  # the calendar says step 3 (cap 40)
    rdb.hset(KEYS.warmup("out3"), mapping={"step": 1, "day": day.strftime("%Y%m%d"), "why": "held"})
    clock = FixedClock(at(day))
    engine = Engine(make_config(MANAGED), clock)
    try:
        await mirrored(engine)
        first = [(await engine.decide(Facts(recipients=(f"a{i}@x.test",)))).endpoint for i in range(30)]
        rdb.hset(KEYS.warmup("out3"), "step", 2)  # the feedback daemon's judgement: tracked
        await engine.settle()
        second = [(await engine.decide(Facts(recipients=(f"b{i}@x.test",)))).endpoint for i in range(30)]
    finally:
        await engine.aclose()
    assert first.count("out3") == 10  # step 1's cap
    assert second.count("out3") == 10  # step 2's cap of 20, 10 already used today


def test_an_ips_verdict_below_medium_holds_the_step_until_a_newer_one(make_config, rdb: redis.Redis):
    config = make_config(
        {**MANAGED, "endpoints": {"out3": {**MANAGED["endpoints"]["out3"], "bind_address": "127.0.0.4"}}}
    )
    records = WarmupRecords(rdb, config)
    store = ReputationStore(rdb, KEYS, 14)
    day = lambda n: START + timedelta(days=n)  # noqa: E731

    def verdict(source: str, signal: str, value: str, on: date) -> None:
        provider = "google" if source == "postmaster" else "microsoft"
        store.write([Record(provider, source, signal, on, value, endpoint="out3", subject="127.0.0.4")])

    records.judge_days(START)
    rdb.hset(KEYS.day_counter("out3", f"{day(0):%Y%m%d}"), "total", 10)  # a full day: it would advance
    verdict("postmaster", "ip_reputation", "LOW", day(0))
    (held,) = records.judge_days(day(1))
    assert (held.step, held.why) == (
        1,
        "held: postmaster ip_reputation LOW for 127.0.0.4 on 2026-11-24, below MEDIUM",
    )
    rdb.hset(KEYS.day_counter("out3", f"{day(1):%Y%m%d}"), "total", 10)
    verdict("postmaster", "ip_reputation", "MEDIUM", day(1))  # Google's newer verdict
    verdict("snds", "filter_result", "GREEN", day(1))
    (advanced,) = records.judge_days(day(2))
    assert advanced.step == 2 and advanced.why.startswith("advanced:")
    rdb.hset(KEYS.day_counter("out3", f"{day(2):%Y%m%d}"), "total", 20)
    verdict("snds", "blocked", "yes", day(2))  # SNDS blocks it: under MEDIUM too
    (blocked,) = records.judge_days(day(3))
    assert (blocked.step, blocked.why) == (
        2,
        "held: snds blocked yes for 127.0.0.4 on 2026-11-26, below MEDIUM",
    )
    # a verdict older than reputation.max_age_days (3) holds nothing
    rdb.hset(KEYS.day_counter("out3", f"{day(3):%Y%m%d}"), "total", 20)
    (later,) = records.judge_days(day(6))
    assert later.step == 3 and later.why.startswith("advanced:")


def test_null_never_holds_and_the_outcomes_own_hold_keeps_its_reason(make_config, rdb: redis.Redis):
    raw = {**MANAGED, "endpoints": {"out3": {**MANAGED["endpoints"]["out3"], "bind_address": "127.0.0.4"}}}
    store = ReputationStore(rdb, KEYS, 14)
    store.write(
        [Record("google", "postmaster", "ip_reputation", START, "BAD", endpoint="out3", subject="127.0.0.4")]
    )
    records = WarmupRecords(rdb, make_config({**raw, "reputation": {"hold_warmup_below": None}}))
    records.judge_days(START)
    rdb.hset(KEYS.day_counter("out3", f"{START:%Y%m%d}"), "total", 10)
    (advanced,) = records.judge_days(START + timedelta(days=1))
    assert advanced.step == 2  # the hold is off
    with_hold = WarmupRecords(rdb, make_config(raw))
    day = f"{START + timedelta(days=1):%Y%m%d}"
    rdb.hset(KEYS.day_counter("out3", day), "total", 20)
    rdb.hset(
        KEYS.daily("out3", day), mapping={"sent": 10, "deferred": 10}
    )  # 50% deferred: holds, by the rule
    (judged,) = with_hold.judge_days(START + timedelta(days=2))
    assert judged.step == 2 and judged.why.startswith("held: deferred 50.00%")  # the outcomes' own reason
