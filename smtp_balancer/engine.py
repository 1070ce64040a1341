"""The decision engine: one EVALSHA per message, or a local degraded decision.

``Engine`` is the one implementation, on asyncio (the policy daemon runs it
directly). It sends its EVALSHAs through one pipelined ScriptChannel.
``ThreadedEngine`` runs the same Engine on a private event-loop thread for
callers on threads (pymilter callbacks), so threads share that one connection
and never open a connection per message.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime
from importlib import resources
from typing import Any

from redis.exceptions import RedisError, ResponseError

from smtp_balancer import metrics
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.facts import Decision, Facts
from smtp_balancer.mx import MxProviders
from smtp_balancer.providers import domain_of
from smtp_balancer.redis_channel import ScriptChannel
from smtp_balancer.redis_client import describe
from smtp_balancer.selection import Planner, ScriptCall, StateJunk
from smtp_balancer.state.live import LiveState, parse_live_state

log = logging.getLogger("smtp_balancer.engine")

SELECT_LUA = resources.files("smtp_balancer.state").joinpath("select.lua").read_text(encoding="utf-8")
JUNK_LOG_INTERVAL_S = 60.0


class Breaker:
    """After a Redis failure, skip Redis for a while so mail never waits on it."""

    def __init__(self, retry_after_s: float, clock: Any = time.monotonic) -> None:
        self.retry_after_s = retry_after_s
        self.clock = clock
        self.open_until = 0.0

    def allows(self) -> bool:
        return self.clock() >= self.open_until

    def failed(self) -> None:
        self.open_until = self.clock() + self.retry_after_s

    def succeeded(self) -> None:
        self.open_until = 0.0


class Engine:
    def __init__(self, config: BalancerConfig) -> None:
        self.config = config
        self.planner = Planner(config)
        self.mx = self._mx(config)
        self.budget_s = config.decision.budget_ms / 1000
        self.channel = ScriptChannel(config.redis, SELECT_LUA)
        self.live: LiveState | None = None
        self._live_due = 0.0
        self._live_task: asyncio.Task[None] | None = None
        self.breaker = Breaker(config.decision.retry_after_ms / 1000)
        self._junk_logged: dict[StateJunk, float] = {}
        self._redis_where = describe(config.redis)

    async def replace_config(self, config: BalancerConfig) -> None:
        """Adopt a new, already validated config (SIGHUP). The Redis connection is
        kept unless the redis section changed; the live-state snapshot is dropped,
        because pools and endpoints may have changed with it."""
        old_channel = None
        if config.redis != self.config.redis:
            old_channel, self.channel = self.channel, ScriptChannel(config.redis, SELECT_LUA)
            self._redis_where = describe(config.redis)
        self.config = config
        self.planner = Planner(config)
        if self.mx is not None:
            await self.mx.close()
        self.mx = self._mx(config)
        self.budget_s = config.decision.budget_ms / 1000
        self.breaker = Breaker(config.decision.retry_after_ms / 1000)
        self.live, self._live_due = None, 0.0
        if old_channel is not None:
            await old_channel.close()

    async def aclose(self) -> None:
        if self._live_task is not None:
            self._live_task.cancel()
        if self.mx is not None:
            await self.mx.close()
        await self.channel.close()

    async def warm_up(self) -> bool:
        """Open a connection and load the script before the first message.

        A daemon calls this at start so its first decisions do not pay for the
        connection and SCRIPT LOAD inside their budget. Redis being down is not
        fatal: decisions degrade until it is back.
        """
        try:
            async with asyncio.timeout(self.config.redis.admin_timeout_ms / 1000):
                await self.channel.load_script()
                await self.refresh_live_state()
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning(
                "Redis %s not usable at start (%s); deciding from YAML until it is", self._redis_where, exc
            )
            return False
        log.info("Redis %s ready", self._redis_where)
        return True

    async def decide(
        self, facts: Facts, *, commit: bool = True, explain: bool = False, now: datetime | None = None
    ) -> Decision:
        """Decide a route; never raises and never waits longer than the budget."""
        started = time.perf_counter()
        try:
            decision = await self._decide(facts, commit, explain, now)
        except Exception:  # a bug must not stop mail: fail open to the MTA default
            log.exception("decision failed for queue id %s; answering default", facts.queue_id or "-")
            decision = Decision(outcome="default", reason="degraded (internal error)", degraded=True)
            metrics.DEGRADED.labels("internal_error").inc()
        metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
        if commit:
            metrics.record_decision(decision.pool, decision.endpoint, decision.rule, decision.outcome)
        return decision

    def _mx(self, config: BalancerConfig) -> MxProviders | None:
        """The decision-time MX lookup, wired into the planner's provider table."""
        if not config.mx_lookup.enabled:
            return None
        mx = MxProviders(config.mx_lookup, self.planner.providers)
        self.planner.providers.learned = mx.cached
        return mx

    async def _decide(self, facts: Facts, commit: bool, explain: bool, now: datetime | None) -> Decision:
        if self.mx is not None:
            await self.mx.learn({domain_of(r) for r in facts.recipients})
        call = self.planner.prepare(facts, now, commit=commit, explain=explain)
        if isinstance(call, Decision):
            return call
        if not self.breaker.allows():
            return self._degraded(call, "circuit_open")
        try:
            # asyncio.timeout, not wait_for: no extra Task per decision
            async with asyncio.timeout(self.budget_s):
                reply = await self.channel.evalsha(call.keys, call.args)
        except TimeoutError:
            # a silent connection (blackholed Redis) must not keep later callers waiting
            self.channel.reset("decision timed out")
            return self._failed(call, "timeout", f"no answer within {self.config.decision.budget_ms} ms")
        except ResponseError as exc:
            return self._failed(call, "script_error", str(exc))
        except (RedisError, OSError) as exc:
            return self._failed(call, "redis_error", f"{type(exc).__name__}: {exc}")
        self.breaker.succeeded()
        self._schedule_refresh()
        decision, junk = self.planner.interpret(call, reply)
        if junk:
            self._report_junk(junk)
        return decision

    async def refresh_live_state(self) -> LiveState:
        """Read weights, admin states and suspensions (pipelined) for degraded decisions."""
        keys = self.planner.keys
        pools, endpoints = list(self.config.pools), list(self.config.endpoints)
        replies = await asyncio.gather(
            *(self.channel.call("HGETALL", keys.pool_weights(p)) for p in pools),
            *(self.channel.call("HGET", keys.endpoint_state(e), "state") for e in endpoints),
            return_exceptions=True,  # a key of the wrong type is junk, skipped like in select.lua
        )
        suspension_keys: list[bytes] = []
        cursor: bytes = b"0"
        while True:
            cursor, batch = await self.channel.call(
                "SCAN", cursor, "MATCH", keys.suspension_pattern(), "COUNT", 1000
            )
            suspension_keys += batch
            if cursor == b"0":
                break
        pttls = await asyncio.gather(*(self.channel.call("PTTL", k) for k in suspension_keys))
        self.live = parse_live_state(
            keys,
            pools,
            replies[: len(pools)],
            endpoints,
            replies[len(pools) :],
            suspension_keys,
            pttls,
            time.monotonic(),
        )
        return self.live

    def _schedule_refresh(self) -> None:
        now = time.monotonic()
        if now >= self._live_due and (self._live_task is None or self._live_task.done()):
            self._live_due = now + self.config.decision.state_refresh_s
            self._live_task = asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            async with asyncio.timeout(self.config.redis.admin_timeout_ms / 1000):
                await self.refresh_live_state()
        except (TimeoutError, RedisError, OSError) as exc:
            log.debug("live state refresh failed: %s", exc)

    def _failed(self, call: ScriptCall, reason: str, detail: str) -> Decision:
        if self.breaker.allows():
            log.warning(
                "Redis %s unusable (%s: %s); deciding from YAML for %.1fs",
                self._redis_where,
                reason,
                detail,
                self.breaker.retry_after_s,
            )
        self.breaker.failed()
        return self._degraded(call, reason)

    def _degraded(self, call: ScriptCall, reason: str) -> Decision:
        metrics.DEGRADED.labels(reason).inc()
        return self.planner.local_decision(call, reason, self.live)

    def _report_junk(self, junk: list[StateJunk]) -> None:
        now = time.monotonic()
        for item in junk:
            metrics.STATE_JUNK.labels(item.kind).inc()
            if now - self._junk_logged.get(item, -JUNK_LOG_INTERVAL_S) >= JUNK_LOG_INTERVAL_S:
                self._junk_logged[item] = now
                where = f"{item.key} field {item.field}" if item.field else item.key
                log.warning(
                    "ignoring unusable %s value in Redis at %s; using the YAML default", item.kind, where
                )


class ThreadedEngine:
    """The same Engine for threaded callers, on a private event-loop thread."""

    def __init__(self, config: BalancerConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="engine-loop", daemon=True)
        self._thread.start()
        self.engine = Engine(config)

    def decide(self, facts: Facts, timeout_s: float | None = None, **kwargs: Any) -> Decision:
        """Decide from a thread; wait at most ``timeout_s`` (default: a guard well past the budget)."""
        future = asyncio.run_coroutine_threadsafe(self.engine.decide(facts, **kwargs), self._loop)
        try:
            # Engine.decide bounds itself by the budget; the caller may have a shorter deadline
            return future.result(timeout=self.engine.budget_s * 4 + 0.5 if timeout_s is None else timeout_s)
        except TimeoutError:
            future.cancel()
            metrics.DEGRADED.labels("bridge_timeout").inc()
            return Decision(outcome="default", reason="degraded (engine did not answer)", degraded=True)

    def warm_up(self) -> bool:
        """Engine.warm_up, for a threaded daemon's start (the milter)."""
        future = asyncio.run_coroutine_threadsafe(self.engine.warm_up(), self._loop)
        return future.result(timeout=self.engine.config.redis.admin_timeout_ms / 1000 + 1)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.engine.aclose(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
