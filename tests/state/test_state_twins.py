"""select.lua and state/live.py read an endpoint's state hash alike: every pairing of
`state` and `until` values (hand-edited junk included), decided in Redis-script mode
(select.lua) and in local mode (the mirror, state/live.py), gives the verdict
``returns_at`` gives, which status and requeue read too."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import redis

from smtp_balancer.clock import FixedClock
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.state.live import returns_at

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
WALL = int(NOW.timestamp())
STATES = [None, "active", "drained", "quarantined", "asleep", "", "QUARANTINED", " drained"]
UNTILS = [None, str(WALL - 60), str(WALL + 60), f"{WALL - 60}.5", "soon", "0x10", "1e3", "-5", ""]
KEY = "{sb}:endpoint:out2:state"


async def verdict(engine: Engine) -> bool:
    decision = await engine.decide(
        Facts(sender="a@shop.test", recipients=("b@gmail.com",)), commit=False, explain=True
    )
    return next(v.eligible for v in decision.verdicts if v.endpoint == "out2")


async def test_select_lua_and_the_mirror_read_state_as_returns_at(make_config, rdb: redis.Redis) -> None:
    clock = FixedClock(NOW)
    script = Engine(make_config({"decision": {"local": False, "state_refresh_s": 3600}}), clock)
    local = Engine(make_config({"decision": {"local": True, "state_refresh_s": 3600}}), clock)
    checked = 0
    try:
        for state, until in itertools.product(STATES, UNTILS):
            rdb.delete(KEY)
            fields = {k: v for k, v in (("state", state), ("until", until)) if v is not None}
            if fields:
                rdb.hset(KEY, mapping=fields)
            back = returns_at(state, until)
            expected = back is None or back <= WALL
            await local.mirror.load()
            got = (await verdict(script), await verdict(local))
            assert got == (expected, expected), (state, until, got)
            checked += 1
    finally:
        await script.aclose()
        await local.aclose()
    assert checked == len(STATES) * len(UNTILS)
