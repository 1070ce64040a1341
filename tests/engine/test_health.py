"""A Redis stall is one WARNING when it starts and one when it ends, and a metric, in
local mode too (where no decision waits on Redis and nothing else would say so)."""

from __future__ import annotations

import asyncio
import logging
import time

from integration.redis_server import RedisServer
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.engine.health import STALL_AFTER_S
from smtp_balancer.observe import metrics
from tests.ready import READY_S, started, until


def reply_age() -> float:
    return metrics.REDIS_REPLY_AGE.collect()[0].samples[0].value


def _logged(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_a_stall_is_logged_once_with_its_duration_and_measured(
    make_config, redis_server: RedisServer, caplog
):
    caplog.set_level(logging.WARNING, logger="smtp_balancer.engine")
    engine = Engine(make_config({"decision": {"budget_ms": 50}}))  # local decisions: the default
    try:
        await started(engine)
        await asyncio.sleep(1.5)  # idle: the PINGs keep the age low
        assert reply_age() < STALL_AFTER_S  # PINGed every ~1 s: never near a stall
        last_reply = engine.channel.last_reply_at
        with redis_server.stopped():  # until the stall is logged; decisions go on meanwhile
            i = 0
            while not _logged(caplog, "has not answered for"):
                decision = await engine.decide(Facts(recipients=(f"u{i}@example.test",)))
                assert decision.outcome == "route"
                assert time.monotonic() - last_reply < READY_S, "no stall logged"
                i += 1
                await asyncio.sleep(0.05)
            peak = reply_age()
        await until(lambda: _logged(caplog, "answers again"), "the end of the stall")
        longest = time.monotonic() - last_reply  # measured: the stall cannot have lasted longer
        assert peak >= STALL_AFTER_S and reply_age() < STALL_AFTER_S
        began, ended = _logged(caplog, "has not answered for"), _logged(caplog, "answers again")
        assert len(began) == 1 and len(ended) == 1, (began, ended)
        lasted = float(ended[0].split("after ")[1].split("s ")[0])
        assert STALL_AFTER_S <= lasted <= longest + 0.05  # the log rounds to 0.1 s
    finally:
        await engine.aclose()


async def test_degraded_decisions_are_counted_once_redis_answers_again(make_config, rdb, redis_server):
    """Remote mode (every decision a select.lua call): while Redis is stopped, decisions
    degrade; their counts wait in the quota book and reach Redis when it is back."""
    from collections import Counter
    from datetime import UTC, datetime

    from smtp_balancer.clock import FixedClock

    now = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
    engine = Engine(
        make_config({"decision": {"local": False, "budget_ms": 50, "retry_after_ms": 100}}), FixedClock(now)
    )
    sent: Counter[str] = Counter()

    async def decide(i: int) -> bool:
        d = await engine.decide(Facts(recipients=(f"u{i}@gmail.com", f"v{i}@yahoo.com")), now=now)
        assert d.outcome == "route"
        sent[d.endpoint] += 2
        return d.degraded

    def counted() -> dict[str, int]:
        day = "{sb}:count:%s:day:20261124"
        return {ep: int(rdb.hget(day % ep, "total") or 0) for ep in ("out1", "out2", "out3")}

    try:
        await started(engine)
        for i in range(40):  # before
            await decide(i)
        with redis_server.stopped():
            for i in range(40, 80):  # during: every one degraded
                assert await decide(i)
        for i in range(80, 120):  # after: degraded until the breaker lets a call through
            await decide(i)
        # the book's next count round writes what the degraded decisions counted
        await until(lambda: counted() == {ep: sent[ep] for ep in ("out1", "out2", "out3")}, "the counts")
    finally:
        await engine.aclose()
    day = "{sb}:count:%s:day:20261124"
    google = sum(int(rdb.hget(day % ep, "google") or 0) for ep in ("out1", "out2", "out3"))
    assert google == 120  # per provider too
