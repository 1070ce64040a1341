"""Counters take signed deltas (count.lua): a give-back from another process that
reaches Redis before the batched count it undoes leaves the sum exact; readers take
a count below zero as 0, and the scripts that count a capped field start it again
from 0. Real Redis, the real scripts."""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from smtp_balancer.state import scripts
from smtp_balancer.state.keys import DAY_TTL_S, HOUR_TTL_S, KeySchema, day_bucket, hour_bucket
from smtp_balancer.state.values import parse_count

KEYS = KeySchema()
AT = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)  # the counters' buckets; the scripts read no clock
DAY = KEYS.day_counter("out1", day_bucket(AT))
HOUR = KEYS.hour_counter("out1", hour_bucket(AT))


def count(rdb: redis.Redis, key: str, body: str) -> list[str]:
    return rdb.eval(scripts.COUNT.text, 1, key, f"{DAY_TTL_S} {body}")


def test_a_give_back_that_lands_before_its_count_leaves_the_sum_exact(rdb: redis.Redis) -> None:
    assert count(rdb, DAY, "total -2 google -2") == []  # the requeue daemon's, first
    assert rdb.hgetall(DAY) == {"total": "-2", "google": "-2"}
    assert 0 < rdb.ttl(DAY) <= DAY_TTL_S  # a counter it created lives as any other
    assert count(rdb, DAY, "total 5 google 3") == []  # the decider's batch, a second later
    assert rdb.hgetall(DAY) == {"total": "3", "google": "1"}


def test_a_count_below_zero_reads_as_0_and_junk_stays_junk() -> None:
    assert parse_count("-2") == 0
    assert parse_count("-0") == 0
    assert parse_count("7") == 7
    assert parse_count(None) == 0
    for junk in ("--2", "-", "- 2", "+2", "2-"):
        assert parse_count(junk) is None, junk


def test_count_lua_reports_a_junk_total_but_not_one_below_zero(rdb: redis.Redis) -> None:
    assert count(rdb, DAY, "total -1") == []
    rdb.hset(HOUR, "total", "lots")
    assert rdb.eval(scripts.COUNT.text, 1, HOUR, f"{HOUR_TTL_S} google 1") == [HOUR]
    assert rdb.eval(scripts.COUNT.text, 1, HOUR, f"{HOUR_TTL_S} total 1") == [HOUR]  # not a number
    rdb.hset(DAY, "total", "9" * 15)  # HINCRBY takes it; our 15 digits do not
    assert count(rdb, DAY, "total 1") == [DAY]
    assert count(rdb, DAY, "google 1") == [DAY]


def test_lease_lua_starts_a_capped_field_below_zero_again_from_0(rdb: redis.Redis) -> None:
    # a reset by hand while leases were out: their give-backs took it below zero
    rdb.hset(DAY, mapping={"total": -40, "google": -3})
    assert rdb.eval(scripts.LEASE.text, 2, DAY, HOUR, 100, 60, -1, "total") == 60  # not 100
    assert rdb.hget(DAY, "total") == "60"
    assert rdb.eval(scripts.LEASE.text, 2, DAY, HOUR, 10, 5, -1, "google") == 5
    assert rdb.hget(DAY, "google") == "5"
