"""Warm-up quota leases and batched counters for local decisions, sans I/O.

A capped (warming) endpoint's quota is reserved from its Redis counters a few
units at a time (``state/lease.lua``): the lease adds to the counter's total at
once, so every daemon in the fleet sees it as used, and a cap can never be
overrun, only left a few units short when a daemon dies holding a lease. Local
decisions then spend the lease without a round trip. What a decision spends is
added to per-provider deltas that the engine writes in batches
(``state/count.lua``), with the totals of uncapped endpoints, which need no lease.

A provider's warm-up cap is leased the same way from that provider's field of
the same counters: a lease per (endpoint, field), ``total`` or a provider.

Thread-safe: the milter's threads take from it while the engine's loop refills
and drains it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.decision.choice import NeedRedis
from smtp_balancer.decision.rates import RateBook, RateCounter
from smtp_balancer.decision.wakeup import WorkSignal
from smtp_balancer.state.keys import KeySchema

LEASE_MAX: Final = 100
ARMS_MAX: Final = 100_000  # arm records kept for Redis while it is away: one per experiment message
EXHAUSTED_RECHECK_S: Final = 30.0  # another daemon may give back units it leased
TOTAL: Final = "total"
BUCKET_KEYS_MAX: Final = 4096  # endpoints x the hours a process lives through, cleared when full


class Counters:
    """What a decision on the mirror path counts against: QuotaBook's leases in the
    daemons, or replay's exact in-memory counters (replay/simulate.py). A base class,
    not a Protocol, for native calls (see rates.RateCounter)."""

    def rate_counter(self) -> RateCounter:
        raise NotImplementedError

    def check(
        self,
        endpoint: str,
        n: int,
        day: str,
        hour: str,
        day_cap: int | None,
        hour_cap: int | None,
        field: str = TOTAL,
    ) -> str | None:
        raise NotImplementedError

    def take(
        self,
        endpoint: str,
        n: int,
        providers: Iterable[tuple[str, int]],
        day: str,
        hour: str,
        leased: bool,
        leased_providers: frozenset[str] = frozenset(),
    ) -> bool:
        raise NotImplementedError


def lease_size(day_cap: int | None, hour_cap: int | None, n: int) -> int:
    """Units to ask for at once: about 2% of the smaller cap, so a fleet shares it finely."""
    caps = [c for c in (day_cap, hour_cap) if c is not None]
    return max(n, min(LEASE_MAX, max(1, min(caps) // 50))) if caps else n


@dataclass
class Lease:
    day: str
    hour: str
    remaining: int = 0
    want: int = 1
    exhausted_until: float = 0.0  # monotonic: the cap was reached when last asked
    asking: bool = False  # a refill is queued or in flight


@dataclass(frozen=True)
class Refill:
    endpoint: str
    day: str
    hour: str
    want: int
    day_cap: int | None
    hour_cap: int | None
    field: str = TOTAL  # the counter field leased from: total, or a provider


@dataclass(frozen=True)
class Giveback:
    endpoint: str
    day: str
    hour: str
    units: int
    field: str = TOTAL


class QuotaBook(Counters):
    def __init__(self, keys: KeySchema, clock: Clock = SYSTEM) -> None:
        self.keys = keys
        self.clock = clock
        # raised when a refill, give-back or arm record is queued (decision/wakeup.py)
        self.signal = WorkSignal()
        self.rates = RateBook(clock, self.signal)  # rate-cap slots, served by the same loop
        self._lock = threading.Lock()
        self._leases: dict[tuple[str, str], Lease] = {}  # (endpoint, field)
        self._caps: dict[tuple[str, str], tuple[int | None, int | None]] = {}
        self._refills: list[Refill] = []
        self._givebacks: list[Giveback] = []
        # counter key -> field -> delta; bounded by endpoints x providers x live buckets
        self._counts: dict[str, dict[str, int]] = {}
        self._counted = 0  # decisions in _counts, for when to write them
        self._arms: list[tuple[str, str]] = []  # (queue id, "<experiment> <arm>") to record
        # (endpoint, day, hour) -> its day and hour counter keys: made once, not per message
        self._bucket_keys: dict[tuple[str, str, str], tuple[str, str]] = {}

    # -- decisions (any thread) ---------------------------------------------------
    def rate_counter(self) -> RateCounter:
        return self.rates

    def check(
        self,
        endpoint: str,
        n: int,
        day: str,
        hour: str,
        day_cap: int | None,
        hour_cap: int | None,
        field: str = TOTAL,
    ) -> str | None:
        """None when the lease of ``field`` covers ``n``; why not when the cap is known reached.

        Raises NeedRedis when only Redis can tell, and asks for a refill.
        """
        with self._lock:
            lease = self._current((endpoint, field), day, hour, day_cap, hour_cap)
            if lease.remaining >= n:
                return None
            if lease.exhausted_until > self.clock.monotonic():
                return "cap reached (quota lease)" if field == TOTAL else f"{field} cap reached (quota lease)"
            self._ask((endpoint, field), lease, n)
        raise NeedRedis(endpoint)

    def known_full(self, endpoint: str, day: str, hour: str, field: str = TOTAL) -> bool:
        """The cap of ``field`` was found reached for this hour, and is still held so
        (a look for shadow mode: nothing is asked or spent)."""
        with self._lock:
            lease = self._leases.get((endpoint, field))
            return (
                lease is not None
                and (lease.day, lease.hour) == (day, hour)
                and lease.remaining <= 0
                and lease.exhausted_until > self.clock.monotonic()
            )

    def _counter_keys(self, endpoint: str, day: str, hour: str) -> tuple[str, str]:
        keys = self._bucket_keys.get((endpoint, day, hour))
        if keys is None:
            if len(self._bucket_keys) >= BUCKET_KEYS_MAX:  # past hours': start again
                self._bucket_keys.clear()
            keys = self._bucket_keys[(endpoint, day, hour)] = (
                self.keys.day_counter(endpoint, day),
                self.keys.hour_counter(endpoint, hour),
            )
        return keys

    def take(
        self,
        endpoint: str,
        n: int,
        providers: Iterable[tuple[str, int]],
        day: str,
        hour: str,
        leased: bool,
        leased_providers: frozenset[str] = frozenset(),
    ) -> bool:
        """Spend a decision: ``n`` from the total's lease when ``leased``, each provider's
        recipients from its lease when in ``leased_providers``, and count it; False if
        another thread spent a lease meanwhile (nothing is spent then)."""
        day_key, hour_key = self._counter_keys(endpoint, day, hour)
        providers = tuple(providers)
        spend = [(TOTAL, n)] if leased else []
        if leased_providers:
            spend += [(p, c) for p, c in providers if p in leased_providers]
        with self._lock:
            leases = []
            for field, units in spend:
                lease = self._leases.get((endpoint, field))
                if lease is None or lease.day != day or lease.hour != hour or lease.remaining < units:
                    return False
                leases.append((field, lease, units))
            for field, lease, units in leases:
                lease.remaining -= units
                if lease.remaining < lease.want // 2 + 1:
                    self._ask((endpoint, field), lease, units)  # refill before it runs out
            self._counted += 1
            if not self._counts:  # the first since a write: the service times when they are due
                self.signal.raise_()
            for key in (day_key, hour_key):
                fields = self._counts.setdefault(key, {})
                if not leased:  # a lease was added to the total when it was granted
                    fields[TOTAL] = fields.get(TOTAL, 0) + n
                for provider, count in providers:
                    if provider not in leased_providers:
                        fields[provider] = fields.get(provider, 0) + count
        return True

    def _current(
        self, scope: tuple[str, str], day: str, hour: str, day_cap: int | None, hour_cap: int | None
    ) -> Lease:
        lease = self._leases.get(scope)
        if (
            lease is None
            or lease.day != day
            or lease.hour != hour
            or self._caps.get(scope) != (day_cap, hour_cap)
        ):
            if lease is not None and lease.remaining:
                # the hour (or the caps) moved on: what is left goes back to its own bucket
                self._givebacks.append(Giveback(scope[0], lease.day, lease.hour, lease.remaining, scope[1]))
                self.signal.raise_()
            lease = self._leases[scope] = Lease(day, hour)
            self._caps[scope] = (day_cap, hour_cap)
        return lease

    def _ask(self, scope: tuple[str, str], lease: Lease, n: int) -> None:
        if lease.asking:
            return
        day_cap, hour_cap = self._caps.get(scope, (None, None))
        lease.want = lease_size(day_cap, hour_cap, n)
        lease.asking = True
        self._refills.append(Refill(scope[0], lease.day, lease.hour, lease.want, day_cap, hour_cap, scope[1]))
        self.signal.raise_()

    def note_arm(self, queue_id: str, experiment: str, arm: str, wall: float) -> None:
        """A message decided in an experiment's arm at ``wall`` (epoch seconds): count it,
        and record its queue id so the feedback daemon can attribute its delivery
        outcomes (the time: a run reset after it does not count them)."""
        key = self.keys.expstats(experiment, arm)
        with self._lock:
            if not self._counts:
                self.signal.raise_()
            fields = self._counts.setdefault(key, {})
            fields["decided"] = fields.get("decided", 0) + 1
            if queue_id:
                self._arms.append((queue_id, f"{experiment} {arm} {int(wall)}"))
                self.signal.raise_()

    def take_arms(self) -> list[tuple[str, str]]:
        with self._lock:
            arms, self._arms = self._arms, []
        return arms

    def restore_arms(self, arms: list[tuple[str, str]]) -> None:
        """Put back arm records Redis did not take, to send again (writing one twice is
        harmless); past ARMS_MAX, while Redis stays away, the oldest are dropped."""
        with self._lock:
            self._arms[:0] = arms
            del self._arms[: max(0, len(self._arms) - ARMS_MAX)]
            if arms:
                self.signal.raise_()

    # -- the engine's loop ---------------------------------------------------------
    def take_work(
        self, counts: bool = True
    ) -> tuple[list[Refill], list[Giveback], dict[str, dict[str, int]]]:
        """What to send to Redis now: refills, givebacks and (with ``counts``) counter deltas."""
        with self._lock:
            refills, self._refills = self._refills, []
            givebacks, self._givebacks = self._givebacks, []
            deltas: dict[str, dict[str, int]] = {}
            if counts:
                deltas, self._counts = self._counts, {}
                self._counted = 0
        return refills, givebacks, deltas

    def counts_pending(self) -> bool:
        """Counter deltas wait to be written (also ones put back after a failed round)."""
        with self._lock:
            return bool(self._counts)

    def counted(self) -> int:
        """Decisions whose counts wait to be written."""
        with self._lock:
            return self._counted

    def granted(self, refill: Refill, units: int) -> None:
        """A refill's answer: units reserved (0 or less: the cap is reached or unreadable)."""
        with self._lock:
            lease = self._asked_by(refill)
            if lease is None:
                if units > 0:  # the hour (or the caps) moved on while we asked
                    self._givebacks.append(
                        Giveback(refill.endpoint, refill.day, refill.hour, units, refill.field)
                    )
                    self.signal.raise_()
                return
            lease.asking = False
            if units > 0:
                lease.remaining += units
                lease.exhausted_until = 0.0
            elif units == 0:
                lease.exhausted_until = self.clock.monotonic() + EXHAUSTED_RECHECK_S
            # below 0, a junk counter: no hold, so each decision asks select.lua, which
            # leaves the endpoint out while the junk lasts and counts again once it is fixed

    def given_back(self, givebacks: Iterable[Giveback]) -> None:
        """Give-backs Redis applied: a lease held as exhausted for their scope asks again
        at its next decision, since the cap it saw reached has room now (a late reply's
        unit, given back, must not keep the endpoint out for EXHAUSTED_RECHECK_S)."""
        with self._lock:
            for g in givebacks:
                lease = self._leases.get((g.endpoint, g.field))
                if lease is not None and (lease.day, lease.hour) == (g.day, g.hour):
                    lease.exhausted_until = 0.0

    def counters_junk(self, keys: Iterable[str]) -> None:
        """Counters found junk while writing deltas: their leases are spent no more, so
        the next decision for the endpoint asks Redis, as select.lua sees the junk."""
        junk = set(keys)
        with self._lock:
            for (endpoint, _), lease in self._leases.items():
                day = self.keys.day_counter(endpoint, lease.day)
                if day in junk or self.keys.hour_counter(endpoint, lease.hour) in junk:
                    lease.remaining = 0
                    lease.exhausted_until = 0.0

    def refill_failed(self, refills: Iterable[Refill]) -> None:
        with self._lock:
            for refill in refills:
                lease = self._asked_by(refill)
                if lease is not None:
                    lease.asking = False

    def _asked_by(self, refill: Refill) -> Lease | None:
        """The lease ``refill`` was asked for, if it is still the current one. A lease
        replaced since (a new hour, or new caps: a managed warm-up's next step, a
        reload) is not: a refill refused under the old cap must not mark the new lease
        exhausted, nor clear the asking of a refill of its own."""
        scope = (refill.endpoint, refill.field)
        lease = self._leases.get(scope)
        if lease is None or (lease.day, lease.hour) != (refill.day, refill.hour):
            return None
        return lease if self._caps.get(scope) == (refill.day_cap, refill.hour_cap) else None

    def restore(self, givebacks: Iterable[Giveback], counts: dict[str, dict[str, int]]) -> None:
        """Put back work Redis did not take (it was down), to send with the next batch."""
        with self._lock:
            self._givebacks.extend(givebacks)
            if self._givebacks:
                self.signal.raise_()
            for key, fields in counts.items():
                mine = self._counts.setdefault(key, {})
                for name, delta in fields.items():
                    mine[name] = mine.get(name, 0) + delta

    def give_back(
        self, endpoint: str, n: int, providers: Iterable[tuple[str, int]], day: str, hour: str
    ) -> None:
        """Undo what select.lua counted for a message that then left by another route
        (its reply came after the decision had gone on without it)."""
        with self._lock:
            self._givebacks.append(Giveback(endpoint, day, hour, n))
            self._givebacks += [Giveback(endpoint, day, hour, count, p) for p, count in providers]
            self.signal.raise_()

    def give_back_all(self) -> None:
        """Release every lease (shutdown, config change): unused units return to their buckets."""
        self.rates.give_back_all()
        with self._lock:
            for (endpoint, field), lease in self._leases.items():
                if lease.remaining:
                    self._givebacks.append(Giveback(endpoint, lease.day, lease.hour, lease.remaining, field))
            self._leases.clear()
            self.signal.raise_()

    def leased(self) -> int:
        """Units held and not yet spent (the ``smtp_balancer_quota_leased_units`` gauge)."""
        with self._lock:
            return sum(lease.remaining for lease in self._leases.values())
