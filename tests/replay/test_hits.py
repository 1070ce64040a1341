"""The replay's hit book against hit.lua on a real redis-server: the same matches get
the same answers (counting, acted with its duration and strike, in force, skipped)."""

from __future__ import annotations

import redis

from smtp_balancer.config.feedback import ResponseRuleConfig
from smtp_balancer.replay.hits import ACTED, COUNTING, IN_FORCE, SKIPPED, HitBook
from smtp_balancer.state.feedback_store import HIT_LUA
from smtp_balancer.state.keys import KeySchema

KEYS = KeySchema()
CODES = {0: COUNTING, 1: ACTED, 2: IN_FORCE, 3: SKIPPED}


def rule(**kw) -> ResponseRuleConfig:
    base = {"name": "r", "match": "4.7.28", "trigger": {"count": 3, "period": 60}, "duration": 100}
    return ResponseRuleConfig.model_validate({**base, "growth": 2, "window": 1000, "max_duration": 150, **kw})


def lua_hit(rdb: redis.Redis, r: ResponseRuleConfig, endpoint: str, provider: str, uid: int) -> tuple:
    """hit.lua as the feedback store calls it: (answer, seconds, strike)."""
    code, seconds, strike = rdb.eval(
        HIT_LUA, 1, KEYS.hits(r.name, endpoint, provider), KEYS.base, r.name, endpoint, provider,
        f"u{uid}", r.trigger.count, r.trigger.period, r.action, r.duration, r.growth, r.window,
        r.max_duration, r.factor, "test",
    )  # fmt: skip
    return CODES[int(code)], int(seconds), int(strike)


def test_counting_acting_in_force_and_a_grown_second_strike_agree(rdb: redis.Redis):
    r = rule()
    book, now, uid = HitBook(), 1000.0, 0
    seen_lua, seen_book = [], []

    def both() -> None:
        nonlocal uid
        uid += 1
        seen_lua.append(lua_hit(rdb, r, "out2", "google", uid))
        answer, fired = book.hit(r, "out2", "google", now + uid)
        seen_book.append((answer, fired.seconds if fired else None, fired.strike if fired else None))

    for _ in range(4):  # two counted, the third acts, the fourth finds it in force
        both()
    assert [a for a, _, _ in seen_lua] == [COUNTING, COUNTING, ACTED, IN_FORCE]
    # the suspension runs out: Redis by its TTL (deleted here), the book by its clock
    rdb.delete(KEYS.suspension("out2", "google"))
    now += 101
    for _ in range(3):
        both()
    assert seen_lua[-1] == (ACTED, 150, 2)  # 100 x 2, held to max_duration 150
    assert [a for a, _, _ in seen_lua] == [a for a, _, _ in seen_book]
    acted = [(s, k) for (a, s, k) in seen_lua if a == ACTED]
    assert acted == [(s, k) for (a, s, k) in seen_book if a == ACTED] == [(100, 1), (150, 2)]


def test_a_drained_endpoint_is_never_quarantined(rdb: redis.Redis):
    r = rule(action="quarantine", trigger={"count": 1, "period": 60})
    rdb.hset(KEYS.endpoint_state("out3"), mapping={"state": "drained"})
    book = HitBook(drained={"out3"})
    assert lua_hit(rdb, r, "out3", "google", 1)[0] == SKIPPED
    assert book.hit(r, "out3", "google", 1.0) == (SKIPPED, None)
    assert lua_hit(rdb, r, "out2", "google", 2)[0] == ACTED
    assert book.hit(r, "out2", "google", 1.0)[0] == ACTED
