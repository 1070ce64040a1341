"""Warm-up quota leases and batched counters for local decisions, sans I/O.

A capped (warming) endpoint's quota is reserved from its Redis counters a few
units at a time (``state/lease.lua``): the lease adds to the counter's total at
once, so every daemon in the fleet sees it as used, and a cap can never be
overrun, only left a few units short when a daemon dies holding a lease. Local
decisions then spend the lease without a round trip. What a decision spends is
added to per-provider deltas that the engine writes in batches
(``state/count.lua``), with the totals of uncapped endpoints, which need no lease.

Thread-safe: the milter's threads take from it while the engine's loop refills
and drains it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.decision.choice import NeedRedis
from smtp_balancer.state.keys import KeySchema

DAY_TTL_S = 259_200  # as select.lua: day counters kept 3 days, hour counters 2
HOUR_TTL_S = 172_800
LEASE_MAX = 100
EXHAUSTED_RECHECK_S = 30.0  # another daemon may give back units it leased


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


@dataclass(frozen=True)
class Giveback:
    endpoint: str
    day: str
    hour: str
    units: int


class QuotaBook:
    def __init__(self, keys: KeySchema, clock: Clock = SYSTEM) -> None:
        self.keys = keys
        self.clock = clock
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        self._caps: dict[str, tuple[int | None, int | None]] = {}
        self._refills: list[Refill] = []
        self._givebacks: list[Giveback] = []
        # counter key -> field -> delta; bounded by endpoints x providers x live buckets
        self._counts: dict[str, dict[str, int]] = {}

    # -- decisions (any thread) ---------------------------------------------------
    def check(
        self, endpoint: str, n: int, day: str, hour: str, day_cap: int | None, hour_cap: int | None
    ) -> str | None:
        """None when the lease covers ``n``; why not when the cap is known reached.

        Raises NeedRedis when only Redis can tell, and asks for a refill.
        """
        with self._lock:
            lease = self._current(endpoint, day, hour, day_cap, hour_cap)
            if lease.remaining >= n:
                return None
            if lease.exhausted_until > self.clock.monotonic():
                return "cap reached (quota lease)"
            self._ask(endpoint, lease, n)
        raise NeedRedis(endpoint)

    def take(
        self, endpoint: str, n: int, providers: Iterable[tuple[str, int]], day: str, hour: str, leased: bool
    ) -> bool:
        """Spend a decision: ``n`` from the lease when ``leased``, and count it; False if
        another thread spent the lease meanwhile."""
        day_key, hour_key = self.keys.day_counter(endpoint, day), self.keys.hour_counter(endpoint, hour)
        with self._lock:
            if leased:
                lease = self._leases.get(endpoint)
                if lease is None or lease.day != day or lease.hour != hour or lease.remaining < n:
                    return False
                lease.remaining -= n
                if lease.remaining < lease.want // 2 + 1:
                    self._ask(endpoint, lease, n)  # refill before it runs out
            for key in (day_key, hour_key):
                fields = self._counts.setdefault(key, {})
                if not leased:  # a lease was added to the total when it was granted
                    fields["total"] = fields.get("total", 0) + n
                for provider, count in providers:
                    fields[provider] = fields.get(provider, 0) + count
        return True

    def _current(
        self, endpoint: str, day: str, hour: str, day_cap: int | None, hour_cap: int | None
    ) -> Lease:
        lease = self._leases.get(endpoint)
        if (
            lease is None
            or lease.day != day
            or lease.hour != hour
            or self._caps.get(endpoint)
            != (
                day_cap,
                hour_cap,
            )
        ):
            if lease is not None and lease.remaining:
                # the hour (or the caps) moved on: what is left goes back to its own bucket
                self._givebacks.append(Giveback(endpoint, lease.day, lease.hour, lease.remaining))
            lease = self._leases[endpoint] = Lease(day, hour)
            self._caps[endpoint] = (day_cap, hour_cap)
        return lease

    def _ask(self, endpoint: str, lease: Lease, n: int) -> None:
        if lease.asking:
            return
        day_cap, hour_cap = self._caps.get(endpoint, (None, None))
        lease.want = lease_size(day_cap, hour_cap, n)
        lease.asking = True
        self._refills.append(Refill(endpoint, lease.day, lease.hour, lease.want, day_cap, hour_cap))

    # -- the engine's loop ---------------------------------------------------------
    def take_work(self) -> tuple[list[Refill], list[Giveback], dict[str, dict[str, int]]]:
        """What to send to Redis now: refills, givebacks and counter deltas."""
        with self._lock:
            refills, self._refills = self._refills, []
            givebacks, self._givebacks = self._givebacks, []
            counts, self._counts = self._counts, {}
        return refills, givebacks, counts

    def granted(self, refill: Refill, units: int) -> None:
        """A refill's answer: units reserved (0 or less: the cap is reached or unreadable)."""
        with self._lock:
            lease = self._leases.get(refill.endpoint)
            if lease is None or (lease.day, lease.hour) != (refill.day, refill.hour):
                if units > 0:  # the hour moved on while we asked
                    self._givebacks.append(Giveback(refill.endpoint, refill.day, refill.hour, units))
                return
            lease.asking = False
            if units > 0:
                lease.remaining += units
                lease.exhausted_until = 0.0
            else:
                lease.exhausted_until = self.clock.monotonic() + EXHAUSTED_RECHECK_S

    def refill_failed(self, refills: Iterable[Refill]) -> None:
        with self._lock:
            for refill in refills:
                lease = self._leases.get(refill.endpoint)
                if lease is not None:
                    lease.asking = False

    def restore(self, givebacks: Iterable[Giveback], counts: dict[str, dict[str, int]]) -> None:
        """Put back work Redis did not take (it was down), to send with the next batch."""
        with self._lock:
            self._givebacks.extend(givebacks)
            for key, fields in counts.items():
                mine = self._counts.setdefault(key, {})
                for name, delta in fields.items():
                    mine[name] = mine.get(name, 0) + delta

    def give_back_all(self) -> None:
        """Release every lease (shutdown, config change): unused units return to their buckets."""
        with self._lock:
            for endpoint, lease in self._leases.items():
                if lease.remaining:
                    self._givebacks.append(Giveback(endpoint, lease.day, lease.hour, lease.remaining))
            self._leases.clear()

    def leased(self) -> int:
        """Units held and not yet spent (the ``smtp_balancer_quota_leased_units`` gauge)."""
        with self._lock:
            return sum(lease.remaining for lease in self._leases.values())
