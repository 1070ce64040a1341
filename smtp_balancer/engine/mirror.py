"""Keeps the live-state mirror exact while Redis tracks our keys.

``CLIENT TRACKING ... BCAST`` (``state/tracker.py``) names every key written
under our prefixes. While a named key has not been re-read, the mirror is not
fresh and decisions go to select.lua. Re-reads go in bounded batches, one
pipelined round per batch, and each key updates its one entry in place, so a
mass change costs O(changed keys) and never queues more than a batch on Redis.
When tracking is not available the mirror is refreshed now and then, as the
last-known state for degraded decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from redis.exceptions import RedisError, ResponseError

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.script import StateJunk
from smtp_balancer.engine.junk import JunkReporter
from smtp_balancer.observe import metrics
from smtp_balancer.state.channel import ScriptChannel
from smtp_balancer.state.client import describe
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.live import Junk, LiveState
from smtp_balancer.state.live_reads import BATCH as REREAD_BATCH
from smtp_balancer.state.live_reads import read_live_state, reread
from smtp_balancer.state.tracker import Tracker

log = logging.getLogger("smtp_balancer.engine")

TRACKING_RETRY_S = (0.5, 30.0)


class MirrorKeeper:
    def __init__(self, config: BalancerConfig, junk: JunkReporter, clock: Clock = SYSTEM) -> None:
        self.config = config
        self.keys = KeySchema(config.redis.prefix)
        # its own connection: re-read batches never queue ahead of decisions, and a
        # decision that times out (and resets the decision connection) never cuts one
        self.channel = ScriptChannel(config.redis)
        self.junk = junk
        self.clock = clock
        self.live: LiveState | None = None
        self.fresh = False  # the mirror reflects every tracked write: local decisions may use it
        self.tracking = False  # subscribed, and the mirror was loaded after that
        self._tracker: Tracker | None = None
        self._task: asyncio.Task[None] | None = None
        self._reread_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_due = 0.0
        self._dirty: set[bytes] = set()
        self._reload_all = False
        self._refused_logged = False
        self._attempted = asyncio.Event()  # the first tracking attempt is over, either way
        self._timeout_s = config.redis.admin_timeout_ms / 1000
        self.members = {name: [m.endpoint for m in pool.endpoints] for name, pool in config.pools.items()}
        # endpoints whose warm-up step comes from Redis (advance: sending_days, hold_on)
        self.managed = config.managed_warmups
        self.experiments = [x.name for x in config.experiments]

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        if self._task is None and self.config.decision.local:
            self._task = asyncio.get_running_loop().create_task(self._track_forever(), name="mirror-tracking")

    @property
    def started(self) -> bool:
        return self._task is not None

    async def stop(self) -> None:
        self.fresh = False
        for task in (self._task, self._reread_task, self._refresh_task):
            if task is not None:
                task.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        if self._tracker is not None:
            await self._tracker.close()
        await self.channel.close()

    async def settle(self) -> None:
        """Wait until every write Redis took before this call is in the mirror."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout_s):
                await self._attempted.wait()
        if self._tracker is None or not self.tracking:
            return
        await self._tracker.barrier()
        while self._reread_task is not None and not self._reread_task.done():
            await asyncio.wait([self._reread_task])

    # -- the full load ----------------------------------------------------------------
    async def load(self) -> LiveState:
        """Read weights, admin states, suspensions, throttles and adaptive factors (pipelined),
        as one new mirror."""
        junk: Junk = []
        live = await read_live_state(
            self.channel,
            self.keys,
            self.members,
            list(self.config.endpoints),
            self.managed,
            self.experiments,
            self.clock.monotonic(),
            junk,
        )
        self.live = live
        self._report(junk)
        return live

    def refresh_soon(self) -> None:
        """Untracked: refresh the last-known state now and then (after a Redis answer)."""
        if self.tracking:
            return  # the tracker keeps the mirror current
        now = self.clock.monotonic()
        if now >= self._refresh_due and (self._refresh_task is None or self._refresh_task.done()):
            self._refresh_due = now + self.config.decision.state_refresh_s
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self.load()
        except (TimeoutError, RedisError, OSError) as exc:
            log.debug("live state refresh failed: %s", exc)

    def _report(self, junk: Junk) -> None:
        if junk:
            self.junk.report(StateJunk(kind, key, fld) for kind, key, fld in junk)

    # -- tracking -----------------------------------------------------------------------
    async def _track_forever(self) -> None:
        retry_s = TRACKING_RETRY_S[0]
        where = describe(self.config.redis)
        while True:
            tracker = self._tracker = Tracker(
                self.config.redis, self.keys.tracked_prefixes(), self._invalidated, self._untracked
            )
            try:
                async with asyncio.timeout(self._timeout_s):
                    await tracker.start()
                    self._dirty.clear()
                    self._reload_all = False
                    self.tracking = True
                    await self.load()  # loaded after tracking began: no write is missed
                self._maybe_fresh()
                self._attempted.set()
                metrics.KEY_TRACKING_REFUSED.set(0)
                log.info("deciding locally from Redis-tracked state")
                retry_s = TRACKING_RETRY_S[0]
                await tracker.lost.wait()
                log.warning("Redis tracking connection lost; every decision asks Redis until it is back")
            except ResponseError as exc:
                # an ACL without +client|tracking, or a Redis older than 6: still correct, slower
                metrics.KEY_TRACKING_REFUSED.set(1)  # the log line is once; the gauge lasts
                if not self._refused_logged:
                    self._refused_logged = True
                    log.warning(
                        "Redis %s refused key tracking (%s); every decision makes a round trip", where, exc
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
        self.tracking = False
        self.fresh = False

    def _invalidated(self, keys: list[bytes] | None) -> None:
        """A tracked key changed: stop deciding locally until it is read again."""
        self.fresh = False
        if keys is None:
            self._reload_all = True  # FLUSHDB / FLUSHALL
        else:
            self._dirty.update(keys)
        if self._reread_task is None or self._reread_task.done():
            self._reread_task = asyncio.get_running_loop().create_task(self._reread(), name="mirror-reread")

    def _maybe_fresh(self) -> None:
        self.fresh = self.tracking and self.live is not None and not self._dirty and not self._reload_all

    async def _reread(self) -> None:
        while self.tracking and (self._dirty or self._reload_all):
            try:
                async with asyncio.timeout(self._timeout_s):
                    if self._reload_all:
                        self._reload_all = False
                        self._dirty.clear()
                        await self.load()
                        continue
                    batch = [self._dirty.pop() for _ in range(min(REREAD_BATCH, len(self._dirty)))]
                    try:
                        await self._reread_keys(batch)
                    except BaseException:
                        self._dirty.update(batch)
                        raise
            except (TimeoutError, RedisError, OSError) as exc:
                log.debug("re-reading changed keys failed: %s", exc)
                self._reload_all = True
                await asyncio.sleep(self.config.decision.retry_after_ms / 1000)
        self._maybe_fresh()

    async def _reread_keys(self, changed: Iterable[bytes]) -> None:
        """Re-read a batch of changed keys in one pipelined round and update their entries."""
        read = await reread(self.channel, self.keys, self.members, changed)
        live = self.live
        if live is None:
            live = self.live = LiveState(self.clock.monotonic())
        now = self.clock.monotonic()
        junk: Junk = []
        for (name, kind, scope), value, pttl in read:
            if kind == "weights":
                live.set_weights(scope[0], name, self.members[scope[0]], value, junk)
            elif kind == "state":
                live.set_state(scope[0], name, value, junk)
            elif kind == "warmup":
                live.set_warmup(scope[0], name, value, junk)
            elif kind == "experiment":
                live.set_experiment(scope[0], value)
            elif kind == "suspend":
                live.set_suspension(scope[0], scope[1], value, now)
            elif kind == "adaptive":
                live.set_adaptive(scope[0], scope[1], name, value, pttl, now, junk)
            else:
                live.set_throttle(scope[0], scope[1], name, value, pttl, now, junk)
        self._report(junk)
