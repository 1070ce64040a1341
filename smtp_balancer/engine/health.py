"""Is Redis answering? A stall or an outage is one WARNING when it starts and one when
it ends, with its duration, whatever the decision mode.

With local decisions a stalled Redis costs no decision anything, so nothing else
would say so: the leases and count batches only fail quietly. A PING goes out
whenever the connection has been quiet for ``PING_AFTER_S``; the age of the
last reply is a metric (``smtp_balancer_redis_last_reply_age_seconds``), and
the shipped alert fires when it passes 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from smtp_balancer.engine.tasks import stop_task
from smtp_balancer.observe import metrics
from smtp_balancer.state.channel import ScriptChannel

log = logging.getLogger("smtp_balancer.engine")

PING_AFTER_S = 1.0  # quiet this long: ask
STALL_AFTER_S = 3.0  # silent this long: a stall, logged


class RedisHealth:
    def __init__(
        self,
        channel: Callable[[], ScriptChannel],
        where: str,
        *,
        stall_after_s: float = STALL_AFTER_S,
        ping_after_s: float = PING_AFTER_S,
    ) -> None:
        """``channel``: the engine's current channel (a reload may replace it)."""
        self.channel = channel
        self.where = where
        self.stall_after_s = stall_after_s
        self.ping_after_s = ping_after_s
        self.stalled_since: float | None = None  # time.monotonic() of the last reply before it
        self._task: asyncio.Task[None] | None = None
        metrics.observe(metrics.REDIS_REPLY_AGE, self.age)

    def age(self) -> float:
        return max(0.0, time.monotonic() - self.channel().last_reply_at)

    def check(self, why: str = "") -> None:
        """Start or end an episode from the age of the last reply."""
        age = self.age()
        if self.stalled_since is None and age >= self.stall_after_s:
            self.stalled_since = self.channel().last_reply_at
            log.warning(
                "Redis %s has not answered for %.1fs%s; deciding without it until it does",
                self.where,
                age,
                f" ({why})" if why else "",
            )
        elif self.stalled_since is not None and age < self.stall_after_s:
            lasted = self.channel().last_reply_at - self.stalled_since
            self.stalled_since = None
            log.warning("Redis %s answers again, after %.1fs without an answer", self.where, lasted)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _watch(self) -> None:
        step = min(self.ping_after_s, self.stall_after_s) / 2
        while True:
            why = ""
            if self.age() >= self.ping_after_s:
                try:
                    async with asyncio.timeout(step):
                        await self.channel().ping()
                except TimeoutError:
                    why = "no answer to PING"
                except (RedisError, OSError) as exc:
                    why = f"{type(exc).__name__}: {exc}"
            self.check(why)
            await asyncio.sleep(step)
