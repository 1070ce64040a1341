"""The same Engine for callers on threads (pymilter callbacks), on a private event loop.

Threads decide from the mirror in their own thread when they can; otherwise the
message's Draw is settled on the engine's loop. No thread opens a connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.engine.core import Engine
from smtp_balancer.observe import metrics


class Handoff:
    """Whether the thread waiting for a decision still takes it, settled once: the
    engine asks (``taken``) just before it answers a route, the thread gives up at its
    deadline (``give_up``); whichever comes first decides. A route nobody takes is
    given back by the engine, so it counts nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "waiting"  # -> "taken" or "abandoned"

    def taken(self) -> str:
        """The engine's StillWaited: "" when the thread will have the answer."""
        with self._lock:
            if self._state == "waiting":
                self._state = "taken"
            taken = self._state == "taken"
        return "" if taken else "the caller's wait for the engine ran out"

    def give_up(self) -> bool:
        """At the thread's deadline: True when it gave up first; False when the engine
        already handed it a route, which it must then take."""
        with self._lock:
            if self._state == "waiting":
                self._state = "abandoned"
            return self._state == "abandoned"


class ThreadedEngine:
    def __init__(self, config: BalancerConfig, clock: Clock = SYSTEM) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="engine-loop", daemon=True)
        self._thread.start()
        self.engine = Engine(config, clock)

    def decide(self, facts: Facts, timeout_s: float | None = None, **kwargs: Any) -> Decision:
        """Decide from a thread; wait at most ``timeout_s`` (default: a guard well past the budget)."""
        engine = self.engine
        handoff = Handoff()
        if kwargs:
            work = engine.decide(facts, **kwargs, waited=handoff.taken)
        else:
            result = engine.decide_now(facts)  # in this thread: no hand-off to the loop
            if isinstance(result, Decision):
                return result
            work = engine.settle_pending(result, handoff.taken)
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        guard_s = engine.budget_s * 4 + 0.5
        try:
            # the engine bounds itself by the budget; the caller may have a shorter deadline
            return future.result(timeout=guard_s if timeout_s is None else timeout_s)
        except TimeoutError:
            if not handoff.give_up():  # handed over as the wait ran out: it is returning now
                return future.result(timeout=guard_s)
            # not cancelled: a decision that goes on gives back what it counts
            metrics.DEGRADED.labels("bridge_timeout").inc()
            return Decision(outcome="default", reason="degraded (engine did not answer)", degraded=True)

    def spawn(self, coro: Any) -> concurrent.futures.Future[Any]:
        """Run a coroutine on the engine's loop without waiting for it (the watchdog pinger)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Any, timeout_s: float) -> Any:
        """Run a coroutine on the engine's loop and wait for it (start, reload)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout_s)

    def start(self) -> bool:
        """Engine.start, for a threaded daemon's start (the milter)."""
        return bool(self.run(self.engine.start(), self.engine.config.redis.admin_timeout_ms / 1000 + 1))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.engine.aclose(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
