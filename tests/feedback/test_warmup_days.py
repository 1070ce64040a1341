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
from tests.ready import started

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
        await started(engine) and engine.mirror.fresh
        first = [(await engine.decide(Facts(recipients=(f"a{i}@x.test",)))).endpoint for i in range(30)]
        rdb.hset(KEYS.warmup("out3"), "step", 2)  # the feedback daemon's judgement: tracked
        await engine.settle()
        second = [(await engine.decide(Facts(recipients=(f"b{i}@x.test",)))).endpoint for i in range(30)]
    finally:
        await engine.aclose()
    assert first.count("out3") == 10  # step 1's cap
    assert second.count("out3") == 10  # step 2's cap of 20, 10 already used today
