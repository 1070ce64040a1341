"""A rate cap's per-second window (window.lua) on real Redis, through the scripts that
use it: rate_lease.lua grants, rate_return.lua gives back."""

from __future__ import annotations

import redis

from smtp_balancer.decision.rates import window_count
from smtp_balancer.state import scripts
from smtp_balancer.state.keys import RATE_WINDOW_S, KeySchema

KEYS = KeySchema()
WINDOW = KEYS.rate("out2", "google")
SLOW = KEYS.slow("out2", "google")


def lease(rdb: redis.Redis, want: int, cap: int, now: float, at: int | None = None) -> int:
    at = int(now) + 1 if at is None else at
    return rdb.eval(scripts.RATE_LEASE.text, 2, WINDOW, SLOW, want, cap, repr(now * 1000), at)


def give_back(rdb: redis.Redis, *seconds_and_counts: tuple[int, int]) -> int:
    n = len(seconds_and_counts)
    args = [x for pair in seconds_and_counts for x in pair]
    return rdb.eval(scripts.RATE_RETURN.text, n, *[WINDOW] * n, *args)


def test_a_lease_is_granted_up_to_the_cap_and_no_further(rdb: redis.Redis) -> None:
    assert lease(rdb, 40, 100, 1000.0) == 40
    assert lease(rdb, 40, 100, 1000.5) == 40
    assert lease(rdb, 40, 100, 1001.0) == 20
    assert lease(rdb, 1, 100, 1001.2) == 0
    assert window_count(rdb.hgetall(WINDOW), 1001.2) == 100
    assert 0 < rdb.ttl(WINDOW) <= 2 * RATE_WINDOW_S + 2


def test_seconds_leave_the_window_a_minute_later(rdb: redis.Redis) -> None:
    assert lease(rdb, 30, 60, 1000.0) == 30  # counted at 1001
    assert lease(rdb, 30, 60, 1010.0) == 30  # at 1011
    assert lease(rdb, 1, 60, 1061.0) == 0  # 1001 is still in: 1001..1061
    assert lease(rdb, 10, 60, 1062.0) == 10  # 1001 left
    assert rdb.hget(WINDOW, "1001") is None  # dropped, not kept
    assert rdb.hget(WINDOW, "sum") == "40"


def test_a_give_back_frees_its_slots_and_one_out_of_the_window_frees_nothing(rdb: redis.Redis) -> None:
    assert lease(rdb, 10, 10, 1000.0) == 10
    assert give_back(rdb, (1001, 4), (1001, 100)) == 10  # never more than the second held
    assert lease(rdb, 10, 10, 1000.5) == 10
    assert lease(rdb, 1, 10, 1100.0) == 1  # the others left the window
    assert give_back(rdb, (1001, 3)) == 0
    assert window_count(rdb.hgetall(WINDOW), 1100.0) == 1


def test_a_decider_whose_clock_is_behind_counts_at_the_oldest_second_held(rdb: redis.Redis) -> None:
    assert lease(rdb, 1, 100, 1100.0) == 1  # the window now holds 1040 on
    assert lease(rdb, 5, 100, 1030.0, at=1031) == 5  # a clock 70 s behind: counted at 1040
    assert rdb.hget(WINDOW, "1040") == "5"
    assert lease(rdb, 100, 100, 1100.0) == 94
    assert lease(rdb, 1, 100, 1100.5) == 0
    assert lease(rdb, 10, 100, 1101.0) == 5  # 1040 left the window: its 5 with it


def test_a_hand_edited_window_is_counted_from_its_seconds(rdb: redis.Redis) -> None:
    junk = {"sum": "junk", "low": "x", "1000": "7", "990": "nine", "oops": "3", "900": "50"}
    rdb.hset(WINDOW, mapping=junk)
    assert lease(rdb, 10, 10, 1000.0) == 3  # 7 counted; junk and seconds out of the window ignored
    assert rdb.hget(WINDOW, "900") is None
    assert rdb.hget(WINDOW, "sum") == "10"


def test_a_window_stays_small_however_large_the_cap(rdb: redis.Redis) -> None:
    cap = 1_000_000
    now = 1000.0
    granted = 0
    for i in range(3000):  # 300 s of leases, 10 a second
        now = 1000.0 + i / 10
        granted += lease(rdb, 50, cap, now)
    assert granted == 3000 * 50
    assert rdb.hlen(WINDOW) <= RATE_WINDOW_S + 4  # the seconds of one minute, sum and low
    assert window_count(rdb.hgetall(WINDOW), now) == int(rdb.hget(WINDOW, "sum"))


def test_a_check_of_an_empty_window_writes_nothing(rdb: redis.Redis) -> None:
    assert lease(rdb, 0, 10, 1000.0) == 0
    assert not rdb.exists(WINDOW)
