"""Serves the quota book: lease refills, give-backs and counter deltas, in batches.

A round sends what the book has queued: a lease.lua call per refill and one
count.lua call for the leases given back and, when due (``COUNT_*`` below), the
counter deltas. What Redis did not take is kept for the next round, except
give-backs, which may have been applied (a lost one only leaves a cap short).

Rounds are at least ``SERVICE_INTERVAL_S`` apart, so that a busy decider's work
goes in batches. Between them the service sleeps until the book signals queued
work (decision/wakeup.py), until counter deltas or a held rate slot fall due, or
for ``IDLE_WAIT_S`` at most: it used to wake 20 times a second to find nothing,
which was over half of an idle daemon's CPU and about 4% of a busy one's.

The deltas are of fields no cap reads (a capped field is leased, and counted in
Redis before its message is decided), so writing them every second or few costs
no exactness, and it cut a fleet's Redis CPU per decision by more than a third
(``make bench-fleet``). A give-back from another process may then reach Redis first;
count.lua's deltas are signed, so the sum is right once both have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.exceptions import RedisError, ResponseError

from smtp_balancer.decision.quota import Giveback, QuotaBook, Refill
from smtp_balancer.decision.rates import SLOT_S, RateGiveback, RateRefill, lease_second
from smtp_balancer.decision.script import StateJunk
from smtp_balancer.engine.breaker import Breaker
from smtp_balancer.engine.junk import JunkReporter
from smtp_balancer.state import arm_book, scripts
from smtp_balancer.state.channel import ScriptChannel
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.scripts import LuaScript
from smtp_balancer.state.values import text_of

log = logging.getLogger("smtp_balancer.engine")

SERVICE_INTERVAL_S = 0.05  # lease refills and give-backs are batched this often
IDLE_WAIT_S = 1.0  # the longest the service sleeps, work or none
# counter deltas of uncapped fields are written at most every COUNT_INTERVAL_S, and at
# least every COUNT_MAX_WAIT_S: a busy decider writes once a second, a quiet one (a few
# messages a second) every few seconds, once COUNT_BATCH decisions have gathered
COUNT_INTERVAL_S = 1.0
COUNT_MAX_WAIT_S = 5.0
COUNT_BATCH = 64


@dataclass(frozen=True, slots=True)
class _Work:
    """One round's share of what the book queued."""

    refills: list[Refill]
    givebacks: list[Giveback]
    counts: dict[str, dict[str, int]]
    rate_refills: list[RateRefill]
    rate_givebacks: list[RateGiveback]
    arms: list[tuple[str, str]]


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
        self._reload = True  # load the scripts first, and again after a NOSCRIPT
        self._counts_sent = float("-inf")  # monotonic: when counter deltas last went
        self._poked = False  # work was signalled since the service last looked
        self._waiter: asyncio.Future[None] | None = None  # the service's sleep, to end early
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        if self._task is None:
            loop = self._loop = asyncio.get_running_loop()
            self._poked = self.book.signal.raised  # queued before the start
            self.book.signal.callback = self._signalled
            self._task = loop.create_task(self._serve(), name="quota-leases")

    async def stop(self) -> None:
        """Let a round in flight finish (a grant Redis made must be recorded), then give
        every lease back."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        self._poke()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout_s):
                await asyncio.gather(task, return_exceptions=True)
        task.cancel()
        if self.book.signal.callback == self._signalled:
            self.book.signal.callback = None
        self.book.give_back_all()
        with contextlib.suppress(TimeoutError, RedisError, OSError):
            async with asyncio.timeout(self.timeout_s):
                # the last chance: an open breaker (one timeout in the last second) must
                # not keep the leased units counted for good
                await self.round(last=True)

    def _signalled(self) -> None:
        """The book's signal: work is queued (any thread: the milter decides in its own)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: no one to wake
                loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> None:
        """Work was queued, or the service stops: end its sleep (the loop's thread)."""
        self._poked = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wait_s(self) -> float:
        """How long to sleep when no work is signalled: until counter deltas fall due,
        or a held rate slot expires (its unspent units go back), at most IDLE_WAIT_S."""
        book = self.book
        now = book.clock.monotonic()
        wait = IDLE_WAIT_S
        if book.counts_pending():
            wait = min(wait, self._counts_due_at() - now)
        expiry = book.rates.next_expiry()
        if expiry is not None:
            wait = min(wait, expiry - now)
        return max(wait, 0.0)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        """Sleep ``seconds``, or until poked: one future and one timer, no task."""
        if self._poked or self._stop.is_set():
            return
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, self._poke)  # cancelled below: never pokes a later sleep
        try:
            await waiter
        finally:
            self._waiter = None
            timer.cancel()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        last_round = float("-inf")  # loop time
        while not self._stop.is_set():
            # a timeout only around a round with work: each asyncio.timeout is a timer,
            # and one that expires a cancellation and an exception
            await self._sleep(loop, self._wait_s())
            gap = last_round + SERVICE_INTERVAL_S - loop.time()
            if gap > 0:  # work comes in batches: a busy decider signals at once again
                await asyncio.sleep(gap)
            # stopping, too: a refill asked for is sent here, where its grant is recorded
            # and then given back by stop(), not in the last round, after the leases went
            last_round = loop.time()
            # cleared before the work is taken: what is queued from now on pokes again
            self._poked = False
            self.book.signal.clear()
            try:
                work = self._take_work(last=False)
                if work is None:
                    continue
                async with asyncio.timeout(self.timeout_s):
                    await self._send_work(work, last=False)
            except (TimeoutError, RedisError, OSError) as exc:
                log.debug("quota round failed: %s", exc)
            except Exception:  # a bug must not end the rounds: counts would stop for good
                log.exception("quota round failed")

    async def round(self, last: bool = False) -> None:
        """Send lease refills, give-backs and counter deltas; keep what Redis did not take.

        Every reply is settled by a callback whenever it arrives, also after this round
        stopped waiting (its timeout): a grant Redis made is recorded or given back,
        never dropped, so a slow reply leaves no unit counted and unused."""
        work = self._take_work(last)
        if work is not None:
            await self._send_work(work, last)

    def _take_work(self, last: bool) -> _Work | None:
        """What the book has queued for Redis (None: nothing)."""
        book = self.book
        refills, givebacks, counts = book.take_work(counts=last or self._counts_due())
        if counts:
            self._counts_sent = book.clock.monotonic()
        rate_refills, rate_givebacks = book.rates.take_work()
        if last and (refills or rate_refills):
            # stopping: every lease has gone back, and a grant now would stay counted
            book.refill_failed(refills)
            book.rates.refill_failed(rate_refills)
            refills, rate_refills = [], []
        arms = book.take_arms()
        if not (refills or givebacks or counts or rate_refills or rate_givebacks or arms):
            return None
        return _Work(refills, givebacks, counts, rate_refills, rate_givebacks, arms)

    async def _send_work(self, work: _Work, last: bool) -> None:
        keys, channel = self.keys, self.channel
        refills, givebacks, counts, arms = work.refills, work.givebacks, work.counts, work.arms
        rate_givebacks = work.rate_givebacks
        rate_refills = self._fresh(work.rate_refills)
        if not (last or self.breaker.allows()):
            self._not_sent(refills, givebacks, counts, rate_refills, arms)
            return
        try:
            await channel.ensure()
            if self._reload:
                for script in scripts.LEASE_ROUND:
                    await channel.load_script(script)
                self._reload = False
        except BaseException:
            self._not_sent(refills, givebacks, counts, rate_refills, arms)
            raise
        sent = [self._send_refill(r) for r in refills]
        count_keys, count_args = encode_counts(keys, givebacks, counts)
        if count_keys:
            settle = partial(self._counted, givebacks, counts)
            sent.append(self._send(scripts.COUNT, count_keys, count_args, settle))
        sent += self._send_rates(rate_refills, rate_givebacks)
        if arms:
            # records a failed round did not write go again with the next: without one a
            # message's outcomes (and a requeued copy's) count in no arm
            arm_keys, arm_args = arm_book.write_call(keys, self.book.clock.wall(), arms)
            sent.append(self._send(scripts.ARMS, arm_keys, arm_args, partial(self._armed, arms)))
        if sent:  # none when every rate refill was stale and nothing else was due
            await asyncio.wait(sent)  # wait, not gather: giving up waiting cancels no reply

    def _counts_due_at(self) -> float:
        """When the counter deltas waiting are due (monotonic): COUNT_INTERVAL_S after the
        last write once COUNT_BATCH decisions gathered, else COUNT_MAX_WAIT_S after it."""
        batch = self.book.counted() >= COUNT_BATCH
        return self._counts_sent + (COUNT_INTERVAL_S if batch else COUNT_MAX_WAIT_S)

    def _counts_due(self) -> bool:
        return self.book.clock.monotonic() >= self._counts_due_at()

    def _fresh(self, refills: list[RateRefill]) -> list[RateRefill]:
        """Rate refills still worth asking: one older than a slot's validity would be
        granted only to be given back, so its slots never stand in the window meanwhile."""
        now = self.book.clock.monotonic()
        stale = [r for r in refills if r.asked_at + SLOT_S <= now]
        if stale:
            self.book.rates.refill_failed(stale)
        return [r for r in refills if r.asked_at + SLOT_S > now]

    def _not_sent(
        self,
        refills: list[Refill],
        givebacks: list[Giveback],
        counts: dict[str, dict[str, int]],
        rate_refills: list[RateRefill],
        arms: list[tuple[str, str]],
    ) -> None:
        self.book.refill_failed(refills)
        self.book.restore(givebacks, counts)
        self.book.rates.refill_failed(rate_refills)
        self.book.restore_arms(arms)

    def _send(
        self, script: LuaScript, keys: list[str], args: list[Any], settle: Callable[[Any], None]
    ) -> asyncio.Future[Any]:
        fut = self.channel.send_script_now(script, keys, args)
        fut.add_done_callback(lambda done: settle(self._outcome(done)))
        return fut

    def _outcome(self, fut: asyncio.Future[Any]) -> Any:
        """A reply, or the exception that ended its wait (a lost connection)."""
        if fut.cancelled():
            return asyncio.CancelledError()
        reply = fut.exception() or fut.result()
        if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
            self._reload = True  # a restarted Redis: load the scripts before the next round
        return reply

    def _send_refill(self, r: Refill) -> asyncio.Future[Any]:
        keys = [self.keys.day_counter(r.endpoint, r.day), self.keys.hour_counter(r.endpoint, r.hour)]
        caps = [-1 if r.day_cap is None else r.day_cap, -1 if r.hour_cap is None else r.hour_cap]
        return self._send(scripts.LEASE, keys, [r.want, *caps, r.field], partial(self._leased, r))

    def _leased(self, refill: Refill, units: Any) -> None:
        book, keys = self.book, self.keys
        if not isinstance(units, int):
            book.refill_failed([refill])
            log.debug("quota lease not granted: %s", units)
            return
        book.granted(refill, units)
        if units < 0:  # -1: the day counter is junk, -2: the hour counter
            junk_key = (keys.day_counter if units == -1 else keys.hour_counter)(
                refill.endpoint, refill.day if units == -1 else refill.hour
            )
            self.junk.report([StateJunk("counter", junk_key)])
            book.counters_junk([junk_key])  # no more leased units spent on it either

    def _counted(self, givebacks: list[Giveback], counts: dict[str, dict[str, int]], written: Any) -> None:
        if isinstance(written, list):
            junk = [text_of(k) or "" for k in written]
            self.junk.report([StateJunk("counter", k) for k in junk])
            self.book.counters_junk(junk)
            self.book.given_back(givebacks)
        elif isinstance(written, ResponseError) and str(written).startswith("NOSCRIPT"):
            self.book.restore(givebacks, counts)  # the script never ran: all of it again
        elif isinstance(written, BaseException):
            # counts are kept for the next round; give-backs are not: a give-back Redis may
            # have applied must not be applied twice, and one lost only leaves a cap short
            self.book.restore((), counts)
            log.debug("writing counters failed: %s", written)

    def _armed(self, arms: list[tuple[str, str]], reply: Any) -> None:
        """Records the script never wrote go again with the next round (no connection,
        no answer, NOSCRIPT); an error Redis answered (an ACL, say) would only repeat."""
        if not isinstance(reply, BaseException):
            return
        if isinstance(reply, ResponseError) and not str(reply).startswith("NOSCRIPT"):
            log.debug("arm records not written: %s", reply)
            return
        log.debug("arm records not written, sent again next round: %s", reply)
        self.book.restore_arms(arms)

    def _send_rates(
        self, refills: list[RateRefill], givebacks: list[RateGiveback]
    ) -> list[asyncio.Future[Any]]:
        """Lease rate-cap slots, a call per refill, and give back the expired ones, one
        call for all (a give-back that fails only leaves the window fuller than it is, for
        at most a minute)."""
        wall = self.book.clock.wall()
        second = lease_second(wall)
        sent = [
            self._send(
                scripts.RATE_LEASE,
                [self.keys.rate(r.endpoint, r.scope), self.keys.slow(r.endpoint, r.scope)],
                [r.want, r.cap, repr(wall * 1000), second],
                partial(self._rate_leased, r, second),
            )
            for r in refills
        ]
        if givebacks:
            keys = [self.keys.rate(g.endpoint, g.scope) for g in givebacks]
            args = [x for g in givebacks for x in (g.second, g.slots)]
            sent.append(self._send(scripts.RATE_RETURN, keys, args, self._rate_returned))
        return sent

    @staticmethod
    def _rate_returned(reply: Any) -> None:
        if isinstance(reply, BaseException):
            log.debug("rate slots not given back: %s", reply)

    def _rate_leased(self, refill: RateRefill, second: int, units: Any) -> None:
        if isinstance(units, int):
            self.book.rates.granted(refill, units, second)
        else:
            self.book.rates.refill_failed([refill])
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
        ttl = keys.ttl_of(key)
        body = " ".join(f"{name} {delta}" for name, delta in fields.items() if delta)
        if body:
            out_keys.append(key)
            out_args.append(f"{ttl} {body}")
    return out_keys, out_args
