"""Waiting for an engine to reach Redis, for tests that start one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from smtp_balancer.engine import Engine
from smtp_balancer.engine.threaded import ThreadedEngine

READY_S = 60.0  # a bound on a broken Redis, not a guess at a loaded host's speed


async def started(engine: Engine) -> None:
    """``engine.start()`` until it reaches Redis. One attempt gives up after
    ``redis.admin_timeout_ms`` (2 s), which a loaded host can use up before a healthy
    Redis answers (a run beside the 4-process cap test did); the next attempt goes on."""
    deadline = time.monotonic() + READY_S
    while not await engine.start():
        assert time.monotonic() < deadline, f"Redis not usable within {READY_S:.0f}s"


async def until(check: Callable[[], object], what: str, seconds: float = READY_S) -> None:
    """Poll ``check`` on the event loop until it is true; ``seconds`` bounds a hang."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"waited {seconds:.0f}s for {what}"
        await asyncio.sleep(0.01)


async def mirrored(engine: Engine) -> None:
    """``started``, then wait until the mirror is fresh: local decisions may use it.

    ``start()`` waits for the first tracking attempt only ``admin_timeout_ms``; on a
    loaded host that attempt can time out and the next one (0.5 s later) succeeds.
    Until then decisions go to select.lua, which a test of the local path must not
    count as its own (a CI run saw 2,587 of 20,000 decisions go there)."""
    await started(engine)
    await until(lambda: engine.mirror.fresh, "a fresh mirror")


def started_threaded(engine: ThreadedEngine) -> None:
    """``started`` for an engine on its own thread (the milter's)."""
    deadline = time.monotonic() + READY_S
    while not engine.start():
        assert time.monotonic() < deadline, f"Redis not usable within {READY_S:.0f}s"
