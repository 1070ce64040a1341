"""The decision engine: a local decision, one EVALSHA, or a degraded decision.

``Engine`` is the one implementation, on asyncio (the policy daemon runs it
directly). Most decisions are made in memory (``local.py``) from a mirror of
the live state that Redis keeps exact by telling us of every change
(``state/tracker.py``), spending warm-up quota leased a few units at a time
(``quota.py``). Whenever that cannot decide, it sends select.lua through one
pipelined ScriptChannel; when Redis cannot answer, it decides degraded.
``ThreadedEngine`` runs the same Engine on a private event-loop thread for
callers on threads (pymilter callbacks); they decide locally in their own
thread when they can, and never open a connection per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from typing import Any

from redis.exceptions import RedisError, ResponseError

from smtp_balancer import metrics
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.facts import Decision, Facts
from smtp_balancer.local import LocalDecider
from smtp_balancer.mx import MxProviders
from smtp_balancer.providers import domain_of
from smtp_balancer.quota import DAY_TTL_S, HOUR_TTL_S, Giveback, QuotaBook
from smtp_balancer.redis_channel import LuaScript, ScriptChannel
from smtp_balancer.redis_client import describe
from smtp_balancer.selection import Planner, ScriptCall, StateJunk
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.live import LiveState, parse_live_state
from smtp_balancer.state.tracker import Tracker
from smtp_balancer.state.values import text_of

log = logging.getLogger("smtp_balancer.engine")


def _lua(name: str) -> str:
    return resources.files("smtp_balancer.state").joinpath(name).read_text(encoding="utf-8")


SELECT_LUA = _lua("select.lua")
LEASE_LUA = LuaScript(_lua("lease.lua"))
COUNT_LUA = LuaScript(_lua("count.lua"))
JUNK_LOG_INTERVAL_S = 60.0
SERVICE_INTERVAL_S = 0.05  # lease refills and counter writes are batched this often
TRACKING_RETRY_S = (0.5, 30.0)


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
        self._live_due = 0.0
        self._live_task: asyncio.Task[None] | None = None
        self.breaker = Breaker(config.decision.retry_after_ms / 1000)
        self._junk_logged: dict[StateJunk, float] = {}
        self._redis_where = describe(config.redis)
        self._local_setup()

    @property
    def live(self) -> LiveState | None:
        """The live state: exact while tracked, else the last known (degraded decisions)."""
        return self.local.mirror

    @live.setter
    def live(self, state: LiveState | None) -> None:
        self.local.mirror = state

    def _local_setup(self) -> None:
        self.book = QuotaBook(self.planner.keys)
        self.local = LocalDecider(self.planner, self.book)
        self._tracker: Tracker | None = None
        self._tracking = False  # the tracker is subscribed and the mirror was loaded after it
        self._dirty: set[bytes] = set()
        self._reload_all = False
        self._reread_task: asyncio.Task[None] | None = None
        self._tracker_task: asyncio.Task[None] | None = None
        self._quota_task: asyncio.Task[None] | None = None
        self._refused_logged = False
        self._attempted = asyncio.Event()  # the first tracking attempt is over, either way
        self._quota_stop = asyncio.Event()

    async def replace_config(self, config: BalancerConfig) -> None:
        """Adopt a new, already validated config (SIGHUP). The Redis connection is
        kept unless the redis section changed; the live-state snapshot is dropped,
        because pools and endpoints may have changed with it, and quota leases are
        given back."""
        await self._stop_local()
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
        self._live_due = 0.0
        self._local_setup()  # a new, empty mirror
        if old_channel is not None:
            await old_channel.close()

    async def aclose(self) -> None:
        await self._stop_local()
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
        self._start_local()
        try:
            async with asyncio.timeout(self.config.redis.admin_timeout_ms / 1000):
                await self.channel.load_script()
                await self.refresh_live_state()
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning(
                "Redis %s not usable at start (%s); deciding from YAML until it is", self._redis_where, exc
            )
            return False
        await self.settle()  # the first decisions can be local
        log.info("Redis %s ready", self._redis_where)
        return True

    async def decide(
        self, facts: Facts, *, commit: bool = True, explain: bool = False, now: datetime | None = None
    ) -> Decision:
        """Decide a route; never raises and never waits longer than the budget."""
        if commit and not explain:
            if self._tracker_task is None:
                self._start_local()
            local = self.decide_now(facts, now)
            if local is not None:
                return local
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

    def decide_now(self, facts: Facts, now: datetime | None = None) -> Decision | None:
        """A local decision, made at once in the caller's thread; None when it needs
        Redis (or a DNS lookup), and the caller should ``decide`` instead."""
        if not self.local.fresh:
            return None
        started = time.perf_counter()
        try:
            if self.mx is not None and not self.mx.knows({domain_of(r) for r in facts.recipients}):
                return None
            call = self.planner.prepare(facts, now)
            decision = call if isinstance(call, Decision) else self.local.decide(call)
        except Exception:  # decide() will try again and fail open if it must
            log.exception("local decision failed for queue id %s", facts.queue_id or "-")
            return None
        if decision is None:
            return None
        metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
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
        keys, args = self.planner.encode(call)
        try:
            # asyncio.timeout, not wait_for: no extra Task per decision
            async with asyncio.timeout(self.budget_s):
                reply = await self.channel.evalsha(keys, args)
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
            *(self.channel.call("HMGET", keys.endpoint_state(e), "state", "until") for e in endpoints),
            return_exceptions=True,  # a key of the wrong type is junk, skipped like in select.lua
        )
        suspension_keys = await self._scan(keys.suspension_pattern())
        throttle_keys = await self._scan(keys.throttle_pattern())
        pttls = await asyncio.gather(*(self.channel.call("PTTL", k) for k in suspension_keys))
        throttles = await asyncio.gather(
            *(self._get_with_pttl(k) for k in throttle_keys),
        )
        live = parse_live_state(
            keys,
            pools,
            replies[: len(pools)],
            endpoints,
            replies[len(pools) :],
            suspension_keys,
            pttls,
            time.monotonic(),
            throttle_keys,
            throttles,
        )
        self.live = live
        self._report_live_junk(live)
        return live

    def _report_live_junk(self, live: LiveState) -> None:
        if live.junk:
            self._report_junk([StateJunk(kind, key, fld) for kind, key, fld in live.junk])

    async def _scan(self, pattern: str) -> list[bytes]:
        found: list[bytes] = []
        cursor: bytes = b"0"
        while True:
            cursor, batch = await self.channel.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            found += batch
            if cursor == b"0":
                return found

    async def _get_with_pttl(self, key: bytes) -> tuple[object, object]:
        value, pttl = await asyncio.gather(
            self.channel.call("GET", key), self.channel.call("PTTL", key), return_exceptions=True
        )
        return value, pttl

    # -- local decisions: the tracked mirror and the quota leases -------------------
    def _start_local(self) -> None:
        if self._tracker_task is not None or not self.config.decision.local:
            return
        loop = asyncio.get_running_loop()
        self._tracker_task = loop.create_task(self._track_forever())
        self._quota_task = loop.create_task(self._serve_quota())

    async def _stop_local(self) -> None:
        tracker_task, quota_task = self._tracker_task, self._quota_task
        self._tracker_task = self._quota_task = None
        self.local.fresh = False
        for task in (tracker_task, self._reread_task):
            if task is not None:
                task.cancel()
        if quota_task is not None:
            self._quota_stop.set()  # let a round in flight finish: a grant Redis made must be recorded
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.redis.admin_timeout_ms / 1000):
                    await asyncio.gather(quota_task, return_exceptions=True)
            quota_task.cancel()
            if tracker_task is not None:
                await asyncio.gather(tracker_task, return_exceptions=True)
            self.book.give_back_all()
            with contextlib.suppress(TimeoutError, RedisError, OSError):
                async with asyncio.timeout(self.config.redis.admin_timeout_ms / 1000):
                    await self._quota_round()
        if self._tracker is not None:
            await self._tracker.close()

    async def settle(self) -> None:
        """Wait until every write Redis took before this call is in the mirror (tests, the CLI)."""
        if self._tracker_task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.redis.admin_timeout_ms / 1000):
                await self._attempted.wait()
        if self._tracker is None or not self._tracking:
            return
        await self._tracker.barrier()
        while self._reread_task is not None and not self._reread_task.done():
            await asyncio.wait([self._reread_task])

    async def _track_forever(self) -> None:
        retry_s = TRACKING_RETRY_S[0]
        while True:
            tracker = self._tracker = Tracker(
                self.config.redis, self.planner.keys.tracked_prefixes(), self._invalidated, self._untracked
            )
            try:
                async with asyncio.timeout(self.config.redis.admin_timeout_ms / 1000):
                    await tracker.start()
                    self._dirty.clear()
                    self._reload_all = False
                    self._tracking = True
                    await self.refresh_live_state()  # loaded after tracking began: no write is missed
                self._maybe_fresh()
                self._attempted.set()
                log.info("deciding locally from Redis-tracked state")
                retry_s = TRACKING_RETRY_S[0]
                await tracker.lost.wait()
                log.warning("Redis tracking connection lost; every decision asks Redis until it is back")
            except ResponseError as exc:
                # an ACL without +client|tracking, or a Redis older than 6: still correct, slower
                if not self._refused_logged:
                    self._refused_logged = True
                    log.warning(
                        "Redis %s refused key tracking (%s); every decision makes a round trip",
                        self._redis_where,
                        exc,
                    )
                retry_s = TRACKING_RETRY_S[1]
            except (TimeoutError, RedisError, OSError) as exc:
                log.debug("Redis tracking not available: %s", exc)
            finally:
                self._untracked()
                self._attempted.set()
                await tracker.close()
            await asyncio.sleep(retry_s)
            retry_s = min(retry_s * 2, TRACKING_RETRY_S[1])

    def _untracked(self) -> None:
        self._tracking = False
        self.local.fresh = False

    def _invalidated(self, keys: list[bytes] | None) -> None:
        """A tracked key changed: stop deciding locally until it is read again."""
        self.local.fresh = False
        if keys is None:
            self._reload_all = True  # FLUSHDB / FLUSHALL
        else:
            self._dirty.update(keys)
        if self._reread_task is None or self._reread_task.done():
            self._reread_task = asyncio.get_running_loop().create_task(self._reread())

    def _maybe_fresh(self) -> None:
        self.local.fresh = (
            self._tracking and self.live is not None and not self._dirty and not self._reload_all
        )

    async def _reread(self) -> None:
        while self._tracking and (self._dirty or self._reload_all):
            try:
                async with asyncio.timeout(self.config.redis.admin_timeout_ms / 1000):
                    if self._reload_all:
                        self._reload_all = False
                        self._dirty.clear()
                        await self.refresh_live_state()
                        continue
                    keys, self._dirty = self._dirty, set()
                    await self._reread_keys(keys)
            except (TimeoutError, RedisError, OSError) as exc:
                log.debug("re-reading changed keys failed: %s", exc)
                self._reload_all = True
                await asyncio.sleep(self.config.decision.retry_after_ms / 1000)
        self._maybe_fresh()

    async def _reread_keys(self, changed: set[bytes]) -> None:
        tracked = [
            (raw, t) for raw in changed if (t := self.planner.keys.tracked_key(raw.decode(errors="replace")))
        ]
        results = await asyncio.gather(*(self._read_tracked(raw, kind) for raw, (kind, _) in tracked))
        live = self.live or LiveState(time.monotonic())
        now = time.monotonic()
        for (key, (kind, scope)), result in zip(tracked, results, strict=True):
            if kind == "weights":
                live = live.with_weights(scope[0], key.decode(errors="replace"), result[0])
                self._report_live_junk(live)
            elif kind == "state":
                live = live.with_state(scope[0], key.decode(errors="replace"), result[0])
                self._report_live_junk(live)
            elif kind == "suspend":
                live = live.with_suspension(scope[0], scope[1], result[0], now)
            else:
                live = live.with_throttle(scope[0], scope[1], result[0], result[1], now)
        self.live = live

    async def _read_tracked(self, key: bytes, kind: str) -> tuple[object, object]:
        """A changed key's new value; errors (a key of the wrong type) come back as values."""
        call = self.channel.call
        if kind == "throttle":
            return await self._get_with_pttl(key)
        command = {"weights": ("HGETALL",), "state": ("HMGET",), "suspend": ("PTTL",)}[kind]
        extra = ("state", "until") if kind == "state" else ()
        value = (await asyncio.gather(call(*command, key, *extra), return_exceptions=True))[0]
        return value, None

    async def _serve_quota(self) -> None:
        while not self._quota_stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SERVICE_INTERVAL_S):
                    await self._quota_stop.wait()
            try:
                async with asyncio.timeout(self.config.redis.admin_timeout_ms / 1000):
                    await self._quota_round()
            except (TimeoutError, RedisError, OSError) as exc:
                log.debug("quota round failed: %s", exc)

    async def _quota_round(self) -> None:
        """Send lease refills, give-backs and counter deltas; keep what Redis did not take."""
        refills, givebacks, counts = self.book.take_work()
        if not (refills or givebacks or counts):
            return
        if not self.breaker.allows():
            self.book.refill_failed(refills)
            self.book.restore(givebacks, counts)
            return
        keys = self.planner.keys
        jobs = [
            self.channel.evalsha(
                [keys.day_counter(r.endpoint, r.day), keys.hour_counter(r.endpoint, r.hour)],
                [r.want, -1 if r.day_cap is None else r.day_cap, -1 if r.hour_cap is None else r.hour_cap],
                LEASE_LUA,
            )
            for r in refills
        ]
        count_keys, count_args = encode_counts(keys, givebacks, counts)
        if count_keys:
            jobs.append(self.channel.evalsha(count_keys, count_args, COUNT_LUA))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for refill, units in zip(refills, results, strict=False):
            if isinstance(units, int):
                self.book.granted(refill, units)
                if units < 0:  # -1: the day counter is junk, -2: the hour counter
                    junk_key = (keys.day_counter if units == -1 else keys.hour_counter)(
                        refill.endpoint, refill.day if units == -1 else refill.hour
                    )
                    self._report_junk([StateJunk("counter", junk_key)])
            else:
                self.book.refill_failed([refill])
        if count_keys and isinstance(results[-1], list):
            self._report_junk([StateJunk("counter", text_of(k) or "") for k in results[-1]])
        if count_keys and isinstance(results[-1], BaseException):
            # counts are kept for the next round; give-backs are not: a give-back Redis may
            # have applied must not be applied twice, and one lost only leaves a cap short
            self.book.restore((), counts)
            log.debug("writing counters failed: %s", results[-1])

    def _schedule_refresh(self) -> None:
        if self._tracking:
            return  # the tracker keeps the mirror current
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


def encode_counts(
    keys: KeySchema, givebacks: Sequence[Giveback], counts: dict[str, dict[str, int]]
) -> tuple[list[str], list[str]]:
    """count.lua's keys and arguments: counter deltas plus leases given back."""
    merged: dict[str, dict[str, int]] = {k: dict(v) for k, v in counts.items()}
    for g in givebacks:
        for key in (keys.day_counter(g.endpoint, g.day), keys.hour_counter(g.endpoint, g.hour)):
            fields = merged.setdefault(key, {})
            fields["total"] = fields.get("total", 0) - g.units
    out_keys, out_args = [], []
    for key, fields in merged.items():
        ttl = DAY_TTL_S if ":day:" in key else HOUR_TTL_S
        body = " ".join(f"{name} {delta}" for name, delta in fields.items() if delta)
        if body:
            out_keys.append(key)
            out_args.append(f"{ttl} {body}")
    return out_keys, out_args


class ThreadedEngine:
    """The same Engine for threaded callers, on a private event-loop thread."""

    def __init__(self, config: BalancerConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="engine-loop", daemon=True)
        self._thread.start()
        self.engine = Engine(config)

    def decide(self, facts: Facts, timeout_s: float | None = None, **kwargs: Any) -> Decision:
        """Decide from a thread; wait at most ``timeout_s`` (default: a guard well past the budget)."""
        if not kwargs:
            local = self.engine.decide_now(facts)  # in this thread: no hand-off to the loop
            if local is not None:
                return local
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
