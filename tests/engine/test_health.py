"""A Redis stall is one WARNING when it starts and one when it ends, and a metric, in
local mode too (where no decision waits on Redis and nothing else would say so)."""

from __future__ import annotations

import asyncio
import logging
import threading

import redis

from integration.redis_server import RedisServer
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.engine.health import STALL_AFTER_S
from smtp_balancer.observe import metrics
from tests.ready import started


def reply_age() -> float:
    return metrics.REDIS_REPLY_AGE.collect()[0].samples[0].value


async def test_a_stall_is_logged_once_with_its_duration_and_measured(
    make_config, redis_server: RedisServer, caplog
):
    caplog.set_level(logging.WARNING, logger="smtp_balancer.engine")
    engine = Engine(make_config({"decision": {"budget_ms": 50}}))  # local decisions: the default
    try:
        await started(engine)
        await asyncio.sleep(1.5)  # idle: the PINGs keep the age low
        assert reply_age() < STALL_AFTER_S  # PINGed every ~1 s: never near a stall
        sleeper = redis.Redis(unix_socket_path=str(redis_server.socket))
        stall = STALL_AFTER_S + 1.5  # DEBUG SLEEP over 5 s hangs its own client for a minute
        blocker = threading.Thread(target=lambda: sleeper.execute_command("DEBUG", "SLEEP", str(stall)))
        blocker.start()
        peak = 0.0
        for i in range(int(stall * 10)):  # decisions go on meanwhile, locally or degraded
            decision = await engine.decide(Facts(recipients=(f"u{i}@example.test",)))
            assert decision.outcome == "route"
            peak = max(peak, reply_age())
            await asyncio.sleep(0.1)
        blocker.join()
        await asyncio.sleep(1.5)
        assert peak >= STALL_AFTER_S and reply_age() < STALL_AFTER_S
        lines = [r.getMessage() for r in caplog.records]
        began = [m for m in lines if "has not answered for" in m]
        ended = [m for m in lines if "answers again" in m]
        assert len(began) == 1 and len(ended) == 1, lines
        lasted = float(ended[0].split("after ")[1].split("s ")[0])
        assert STALL_AFTER_S <= lasted <= stall + 1.5
    finally:
        await engine.aclose()


async def test_degraded_decisions_are_counted_once_redis_answers_again(make_config, rdb, redis_server):
    """Remote mode (every decision a select.lua call): while Redis sleeps, decisions
    degrade; their counts wait in the quota book and reach Redis when it is back."""
    from collections import Counter
    from datetime import UTC, datetime

    from smtp_balancer.clock import FixedClock

    now = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
    engine = Engine(
        make_config({"decision": {"local": False, "budget_ms": 50, "retry_after_ms": 100}}), FixedClock(now)
    )
    sent: Counter[str] = Counter()
    degraded = 0
    try:
        await started(engine)
        sleeper = redis.Redis(unix_socket_path=str(redis_server.socket))
        blocker = threading.Thread(target=lambda: sleeper.execute_command("DEBUG", "SLEEP", "2"))
        blocker.start()
        for i in range(120):  # about 3 s of mail: before, during and after the sleep
            d = await engine.decide(Facts(recipients=(f"u{i}@gmail.com", f"v{i}@yahoo.com")), now=now)
            assert d.outcome == "route"
            sent[d.endpoint] += 2
            degraded += d.degraded
            await asyncio.sleep(0.025)
        blocker.join()
        await asyncio.sleep(0.5)  # the next count rounds
    finally:
        await engine.aclose()
    assert degraded >= 20  # the outage was real
    counted = {
        ep: int(rdb.hget(f"{{sb}}:count:{ep}:day:20261124", "total") or 0) for ep in ("out1", "out2", "out3")
    }
    assert counted == {ep: sent[ep] for ep in counted}, (counted, sent, degraded)
    google = sum(int(rdb.hget(f"{{sb}}:count:{ep}:day:20261124", "google") or 0) for ep in counted)
    assert google == 120  # per provider too
