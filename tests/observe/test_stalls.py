"""A daemon's own stalls, from the lateness of its watch ticks (sans I/O, then a real loop)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from smtp_balancer.observe import metrics
from smtp_balancer.observe.stalls import INTERVAL_S, StallWatch


def test_a_late_tick_is_a_stall_counted_and_logged_once(caplog):
    watch = StallWatch("policyd")
    stalls, seconds = metrics.STALLS._value.get(), metrics.STALL_SECONDS._value.get()
    with caplog.at_level(logging.WARNING, "smtp_balancer.stalls"):
        assert watch.tick(expected=100.0, now=100.25) == 0.25  # a busy host: lag, no stall
        assert metrics.STALLS._value.get() == stalls and metrics.LOOP_LAG._value.get() == 0.25
        assert watch.tick(expected=100.25, now=102.75) == 2.5
        assert watch.tick(expected=99.0, now=98.0) == 0.0  # a tick early is no lag
    assert metrics.STALLS._value.get() - stalls == 1
    assert metrics.STALL_SECONDS._value.get() - seconds == 2.5
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("policyd stalled for 2.5s")


async def test_a_blocked_event_loop_is_seen_from_the_loop():
    stalls = metrics.STALLS._value.get()
    task = asyncio.create_task(StallWatch("policyd").watch_loop())
    try:
        await asyncio.sleep(0)  # the watch has set its first tick
        time.sleep(INTERVAL_S + 1.2)  # a blocking call: the tick fires over a second late
        while metrics.STALLS._value.get() == stalls:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()


def test_a_thread_watch_stops_with_its_event():
    stop = threading.Event()
    thread = threading.Thread(target=StallWatch("feedback").watch_thread, args=(stop,))
    thread.start()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
