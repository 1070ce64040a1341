"""Rate rules against real Redis: rate.lua trips, stays tripped and re-arms."""

from __future__ import annotations

import time

import redis

from smtp_balancer.config.feedback import RateRuleConfig
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.rates import evaluate_rates

KEYS = KeySchema()


def test_rate_rule_trips_stays_tripped_and_re_arms_below_recovery(rdb: redis.Redis) -> None:
    rr = RateRuleConfig(
        name="defer-rate",
        above_percent=50,
        recover_below_percent=20,
        min_attempts=10,
        window=120,
        duration=60,
    )
    now = time.time()
    minute = time.strftime("%Y%m%d%H%M", time.gmtime(now))
    key = KEYS.outcomes("out1", "yahoo", minute)

    rdb.hset(key, mapping={"sent": 6, "deferred": 3})  # 9 attempts: below min_attempts
    assert evaluate_rates(rdb, KEYS, [rr], {("out1", "yahoo")}, now)[0].outcome == "quiet"
    rdb.hset(key, mapping={"sent": 4, "deferred": 6})  # 60% of 10: trips
    res = evaluate_rates(rdb, KEYS, [rr], {("out1", "yahoo")}, now)[0]
    assert (res.outcome, res.rate_percent, res.attempts) == ("tripped", 60.0, 10)
    assert "rate rule defer-rate" in rdb.get(KEYS.suspension("out1", "yahoo"))
    rdb.hset(key, mapping={"sent": 7, "deferred": 3})  # 30%: below trip, above recovery
    assert evaluate_rates(rdb, KEYS, [rr], {("out1", "yahoo")}, now)[0].outcome == "still_tripped"
    rdb.hset(key, mapping={"sent": 9, "deferred": 1})  # 10%: recovers
    assert evaluate_rates(rdb, KEYS, [rr], {("out1", "yahoo")}, now)[0].outcome == "recovered"
