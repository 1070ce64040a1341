"""A daemon notices its own stalls: a timer that should fire every ``INTERVAL_S`` and
fires late says the process did not run meanwhile (SIGSTOP, a VM pause, a starved
CPU, a blocking call on the event loop).

Every request the daemon held waited as long, and nothing else would tell: systemd's
watchdog only restarts a daemon that stays frozen, and not at all outside systemd.
The lateness of each tick is a gauge (``smtp_balancer_loop_lag_seconds``); a tick
later than ``STALL_S`` is a stall, counted and logged once when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from smtp_balancer.observe import metrics

log = logging.getLogger("smtp_balancer.stalls")

INTERVAL_S = 0.25
STALL_S = 1.0  # a tick this late is a stall (a busy host delays ticks by far less)


class StallWatch:
    """Sans I/O: ``tick`` is told when a timer set for ``expected`` fired."""

    def __init__(self, daemon: str, stall_s: float = STALL_S) -> None:
        self.daemon = daemon
        self.stall_s = stall_s

    def tick(self, expected: float, now: float) -> float:
        """The tick's lateness (seconds); a stall is counted and logged."""
        late = max(0.0, now - expected)
        metrics.LOOP_LAG.set(late)
        if late >= self.stall_s:
            metrics.STALLS.inc()
            metrics.STALL_SECONDS.inc(late)
            log.warning(
                "%s stalled for %.1fs: its timers fired late (stopped, starved of CPU, or a"
                " blocking call); requests it held waited as long",
                self.daemon,
                late,
            )
        return late

    async def watch_loop(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Tick from this event loop for as long as it runs (a blocked loop is late)."""
        while True:
            expected = clock() + INTERVAL_S
            await asyncio.sleep(INTERVAL_S)
            self.tick(expected, clock())

    def watch_thread(self, stop: threading.Event, clock: Callable[[], float] = time.monotonic) -> None:
        """Tick from a thread of its own until ``stop`` (a threaded daemon's process)."""
        while True:
            expected = clock() + INTERVAL_S
            if stop.wait(INTERVAL_S):
                return
            self.tick(expected, clock())
