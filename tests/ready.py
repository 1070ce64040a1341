"""Waiting for an engine to reach Redis, for tests that start one."""

from __future__ import annotations

import time

from smtp_balancer.engine import Engine

READY_S = 60.0  # a bound on a broken Redis, not a guess at a loaded host's speed


async def started(engine: Engine) -> None:
    """``engine.start()`` until it reaches Redis. One attempt gives up after
    ``redis.admin_timeout_ms`` (2 s), which a loaded host can use up before a healthy
    Redis answers (a run beside the 4-process cap test did); the next attempt goes on."""
    deadline = time.monotonic() + READY_S
    while not await engine.start():
        assert time.monotonic() < deadline, f"Redis not usable within {READY_S:.0f}s"
