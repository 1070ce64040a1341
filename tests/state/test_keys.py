"""The key schema owns every lifetime, window and bucket format: one constant each,
sent to Lua as a prelude, never written as a literal in a script."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources

import pytest
import redis

from smtp_balancer.state import keys as key_module
from smtp_balancer.state import scripts
from smtp_balancer.state.keys import (
    DAY_TTL_S,
    EXPSTATS_TTL_S,
    HOUR_TTL_S,
    KeySchema,
    day_bucket,
    hour_bucket,
    minute_bucket,
)

# integer literals a script may carry: unit conversions and numbers that are no lifetime
NOT_LIFETIMES = {100, 1000, 10000, 1000003}


def lua_sources() -> dict[str, str]:
    out = {}
    for package in ("smtp_balancer.state", "smtp_balancer.feedback"):
        for entry in resources.files(package).iterdir():
            if entry.name.endswith(".lua"):
                out[f"{package}/{entry.name}"] = entry.read_text(encoding="utf-8")
    return out


def test_no_lua_script_carries_a_lifetime_literal() -> None:
    sources = lua_sources()
    assert len(sources) >= 10
    found = []
    for name, text in sources.items():
        for n, line in enumerate(text.splitlines(), 1):
            code = line.split("--", 1)[0]
            # whole integers only: the digits of a decimal (0.999) are not a number of seconds
            for m in re.finditer(r"(?<![\w.])(\d+)(?![\w.])", code):
                if int(m[1]) >= 60 and int(m[1]) not in NOT_LIFETIMES:
                    found.append(f"{name}:{n}: {line.strip()}")
    assert found == []


def test_the_check_finds_a_literal() -> None:
    """The scan above would see the literal this change removed from lease.lua."""
    code = "local ttls = {259200, 172800}"
    assert [m[1] for m in re.finditer(r"(?<![\w.])(\d+)(?![\w.])", code)] == ["259200", "172800"]


def test_every_script_starts_with_the_constants(rdb: redis.Redis) -> None:
    for script in (scripts.SELECT, *scripts.LEASE_ROUND):
        assert script.text.startswith(scripts.CONSTANTS)
    probe = scripts.CONSTANTS + "\nreturn {DAY_TTL_S, HOUR_TTL_S, MINUTE_S, RATE_WINDOW_S}"
    assert rdb.eval(probe, 0) == [DAY_TTL_S, HOUR_TTL_S, 60, key_module.RATE_WINDOW_S]


def test_a_leased_counter_lives_as_long_as_its_constant(rdb: redis.Redis) -> None:
    keys = KeySchema()
    day, hour = keys.day_counter("out1", "20261205"), keys.hour_counter("out1", "2026120510")
    assert rdb.eval(scripts.LEASE.text, 2, day, hour, 5, 100, -1, "total") == 5
    assert DAY_TTL_S - 5 <= rdb.ttl(day) <= DAY_TTL_S
    assert HOUR_TTL_S - 5 <= rdb.ttl(hour) <= HOUR_TTL_S


def test_ttl_of_reads_the_key_structure() -> None:
    keys = KeySchema("fleet")
    assert keys.ttl_of(keys.day_counter("out-day", "20261205")) == DAY_TTL_S
    assert keys.ttl_of(keys.hour_counter("day", "2026120510")) == HOUR_TTL_S  # an endpoint named "day"
    assert keys.ttl_of(keys.expstats("hour", "b")) == EXPSTATS_TTL_S
    for other in (keys.endpoint_state("out1"), keys.pool_weights("day"), "{sb}:count:out1:day:20261205"):
        with pytest.raises(ValueError, match="not a counter key"):
            keys.ttl_of(other)


def test_buckets_are_utc() -> None:
    at = datetime(2026, 12, 5, 23, 59, 30, tzinfo=UTC)
    assert (day_bucket(at), hour_bucket(at), minute_bucket(at.timestamp())) == (
        "20261205",
        "2026120523",
        "202612052359",
    )
