"""Serves the quota book: lease refills, give-backs and counter deltas, in batches.

Every ``SERVICE_INTERVAL_S`` one round sends what the book has queued: a
lease.lua call per refill and one count.lua call for all counter deltas and
leases given back. What Redis did not take is kept for the next round, except
give-backs, which may have been applied (a lost one only leaves a cap short).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from redis.exceptions import RedisError

from smtp_balancer.decision.quota import (
    ARM_RECORD_TTL_S,
    DAY_TTL_S,
    EXPSTATS_TTL_S,
    HOUR_TTL_S,
    Giveback,
    QuotaBook,
)
from smtp_balancer.decision.rates import SLOT_S, RateGiveback, RateRefill
from smtp_balancer.decision.script import StateJunk
from smtp_balancer.engine.breaker import Breaker
from smtp_balancer.engine.junk import JunkReporter
from smtp_balancer.state import scripts
from smtp_balancer.state.channel import ScriptChannel
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.values import text_of

log = logging.getLogger("smtp_balancer.engine")

SERVICE_INTERVAL_S = 0.05  # lease refills and counter writes are batched this often


class LeaseService:
    def __init__(
        self,
        book: QuotaBook,
        channel: ScriptChannel,
        breaker: Breaker,
        junk: JunkReporter,
        timeout_s: float,
    ) -> None:
        self.book = book
        self.keys = book.keys
        self.channel = channel
        self.breaker = breaker
        self.junk = junk
        self.timeout_s = timeout_s
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve(), name="quota-leases")

    async def stop(self) -> None:
        """Let a round in flight finish (a grant Redis made must be recorded), then give
        every lease back."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout_s):
                await asyncio.gather(task, return_exceptions=True)
        task.cancel()
        self.book.give_back_all()
        with contextlib.suppress(TimeoutError, RedisError, OSError):
            async with asyncio.timeout(self.timeout_s):
                await self.round()

    async def _serve(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SERVICE_INTERVAL_S):
                    await self._stop.wait()
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.round()
            except (TimeoutError, RedisError, OSError) as exc:
                log.debug("quota round failed: %s", exc)

    async def round(self) -> None:
        """Send lease refills, give-backs and counter deltas; keep what Redis did not take."""
        book, keys = self.book, self.keys
        refills, givebacks, counts = book.take_work()
        rate_refills, rate_givebacks = book.rates.take_work()
        if rate_refills or rate_givebacks:
            await self.rate_round(rate_refills, rate_givebacks)
        await self.arm_round(book.take_arms())
        if not (refills or givebacks or counts):
            return
        if not self.breaker.allows():
            book.refill_failed(refills)
            book.restore(givebacks, counts)
            return
        jobs = [
            self.channel.evalsha(
                scripts.LEASE,
                [keys.day_counter(r.endpoint, r.day), keys.hour_counter(r.endpoint, r.hour)],
                [
                    r.want,
                    -1 if r.day_cap is None else r.day_cap,
                    -1 if r.hour_cap is None else r.hour_cap,
                    r.field,
                ],
            )
            for r in refills
        ]
        count_keys, count_args = encode_counts(keys, givebacks, counts)
        if count_keys:
            jobs.append(self.channel.evalsha(scripts.COUNT, count_keys, count_args))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for refill, units in zip(refills, results, strict=False):
            if isinstance(units, int):
                book.granted(refill, units)
                if units < 0:  # -1: the day counter is junk, -2: the hour counter
                    junk_key = (keys.day_counter if units == -1 else keys.hour_counter)(
                        refill.endpoint, refill.day if units == -1 else refill.hour
                    )
                    self.junk.report([StateJunk("counter", junk_key)])
            else:
                book.refill_failed([refill])
        if not count_keys:
            return
        written = results[-1]
        if isinstance(written, list):
            self.junk.report([StateJunk("counter", text_of(k) or "") for k in written])
        elif isinstance(written, BaseException):
            # counts are kept for the next round; give-backs are not: a give-back Redis may
            # have applied must not be applied twice, and one lost only leaves a cap short
            book.restore((), counts)
            log.debug("writing counters failed: %s", written)

    async def arm_round(self, arms: list[tuple[str, str]]) -> None:
        """Record which arm each message is in (a lost record only leaves that message's
        outcomes unattributed; its decision is counted with the other counts)."""
        if not arms or not self.breaker.allows():
            return
        try:
            await self.channel.evalsha(
                scripts.ARMS,
                [self.keys.arm_record(qid) for qid, _ in arms],
                [ARM_RECORD_TTL_S, *(value for _, value in arms)],
            )
        except (RedisError, OSError) as exc:
            log.debug("arm records not written: %s", exc)

    async def rate_round(self, refills: list[RateRefill], givebacks: list[RateGiveback]) -> None:
        """Lease rate-cap slots and give back the expired ones (a give-back that fails
        only leaves the window fuller than it is, for at most a minute)."""
        rates, keys = self.book.rates, self.keys
        # a request older than a slot's validity would be granted only to be given back:
        # dropped, so its slots never stand in the window meanwhile
        now = self.book.clock.monotonic()
        stale = [r for r in refills if r.asked_at + SLOT_S <= now]
        if stale:
            rates.refill_failed(stale)
            refills = [r for r in refills if r.asked_at + SLOT_S > now]
        if not self.breaker.allows():
            rates.refill_failed(refills)
            return
        now_ms = self.book.clock.wall() * 1000
        jobs = [
            self.channel.evalsha(
                scripts.RATE_LEASE,
                [keys.rate(r.endpoint, r.scope), keys.slow(r.endpoint, r.scope)],
                [r.want, r.cap, repr(now_ms), int(SLOT_S * 1000), r.name],
            )
            for r in refills
        ]
        jobs += [self.channel.call("ZREM", keys.rate(g.endpoint, g.scope), *g.slots) for g in givebacks]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for refill, units in zip(refills, results, strict=False):
            if isinstance(units, int):
                rates.granted(refill, units)
            else:
                rates.refill_failed([refill])
                log.debug("rate slots not leased: %s", units)


def encode_counts(
    keys: KeySchema, givebacks: Sequence[Giveback], counts: dict[str, dict[str, int]]
) -> tuple[list[str], list[str]]:
    """count.lua's keys and arguments: counter deltas plus leases given back."""
    merged: dict[str, dict[str, int]] = {k: dict(v) for k, v in counts.items()}
    for g in givebacks:
        for key in (keys.day_counter(g.endpoint, g.day), keys.hour_counter(g.endpoint, g.hour)):
            fields = merged.setdefault(key, {})
            fields[g.field] = fields.get(g.field, 0) - g.units
    out_keys, out_args = [], []
    for key, fields in merged.items():
        ttl = EXPSTATS_TTL_S if ":expstats:" in key else DAY_TTL_S if ":day:" in key else HOUR_TTL_S
        body = " ".join(f"{name} {delta}" for name, delta in fields.items() if delta)
        if body:
            out_keys.append(key)
            out_args.append(f"{ttl} {body}")
    return out_keys, out_args
