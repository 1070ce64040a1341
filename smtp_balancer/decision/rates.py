"""Rate-cap slots leased for local decisions, sans I/O.

A rate cap (``endpoints.*.rate_caps``) allows so many messages per endpoint and
provider in any 60 s, fleet-wide. ``state/rate_lease.lua`` reserves a few slots
at a time in the cap's sorted set, each scored at the end of its short validity
(``SLOT_S``); local decisions spend them without a round trip until then. What
is left when they expire is given back (ZREM), so a daemon that stops sending
frees the capacity at once. When no slot is held, the same draw goes to
select.lua (``NeedRedis``), which counts against the same set.

Thread-safe: the milter's threads take from it while the engine's loop refills it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.decision.choice import NeedRedis

SLOT_S = 1.0  # a leased slot must be spent within this long
LEASE_MAX = 2000
EXHAUSTED_RECHECK_S = 0.5  # a full window frees slots as its oldest messages age out


def rate_lease_size(cap: int) -> int:
    """Half a second's worth of the cap (a slot is good for one): a fleet shares a
    small cap finely, and a busy daemon refills every few rounds, not every one."""
    return max(1, min(LEASE_MAX, cap // 120))


@dataclass
class RateLease:
    # granted batches, oldest first: [end of validity (monotonic), unspent slot names]
    batches: list[tuple[float, list[str]]] = field(default_factory=list)
    exhausted_until: float = 0.0
    asking: bool = False
    cap: int = 0  # as configured, for the next refill
    want: int = 1

    @property
    def slots(self) -> int:
        return sum(len(names) for _, names in self.batches)


@dataclass(frozen=True)
class RateRefill:
    endpoint: str
    scope: str  # a provider, or "all"
    want: int
    cap: int
    name: str  # the prefix of the slots' names
    asked_at: float  # monotonic, when asked: validity counts from the request


@dataclass(frozen=True)
class RateGiveback:
    endpoint: str
    scope: str
    slots: tuple[str, ...]


class RateBook:
    def __init__(self, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._leases: dict[tuple[str, str], RateLease] = {}
        self._refills: list[RateRefill] = []
        self._givebacks: list[RateGiveback] = []
        self._id = os.urandom(4).hex()
        self._seq = 0

    def check(self, endpoint: str, scope: str, cap: int) -> str | None:
        """None when a slot is held; why not when the window is known full. Raises
        NeedRedis when only Redis can tell, and asks for slots."""
        now = self.clock.monotonic()
        with self._lock:
            lease = self._lease((endpoint, scope), now)
            lease.cap = cap
            if lease.batches:
                return None
            if lease.exhausted_until > now:
                return f"{scope} rate cap reached (rate lease)"
            self._ask(endpoint, scope, cap, lease, now)
        raise NeedRedis(endpoint)

    def take(self, endpoint: str, scopes: tuple[str, ...]) -> bool:
        """Spend one slot per scope; False (nothing spent) when one ran out or expired."""
        now = self.clock.monotonic()
        with self._lock:
            leases = [self._lease((endpoint, s), now) for s in scopes]
            for lease in leases:
                if not lease.batches:
                    return False
            for s, lease in zip(scopes, leases, strict=True):
                batches = lease.batches
                names = batches[0][1]
                names.pop()
                if not names:
                    del batches[0]
                if lease.asking:
                    continue
                # ask ahead: the newest batch half spent, or half its validity gone
                if not batches or len(batches[-1][1]) <= lease.want // 2 or batches[-1][0] - now < SLOT_S / 2:
                    self._ask(endpoint, s, lease.cap, lease, now)
        return True

    def _lease(self, scope: tuple[str, str], now: float) -> RateLease:
        lease = self._leases.get(scope)
        if lease is None:
            lease = self._leases[scope] = RateLease()
        batches = lease.batches
        while batches and batches[0][0] <= now:
            self._givebacks.append(RateGiveback(*scope, tuple(batches.pop(0)[1])))
        return lease

    def _ask(self, endpoint: str, scope: str, cap: int, lease: RateLease, now: float) -> None:
        if lease.asking:
            return
        lease.asking = True
        lease.want = rate_lease_size(cap)
        self._seq += 1
        name = f"{self._id}.{self._seq}"
        self._refills.append(RateRefill(endpoint, scope, lease.want, cap, name, now))

    # -- the engine's loop ---------------------------------------------------------
    def take_work(self) -> tuple[list[RateRefill], list[RateGiveback]]:
        now = self.clock.monotonic()
        with self._lock:
            for scope in list(self._leases):
                self._lease(scope, now)  # expired slots go back
            refills, self._refills = self._refills, []
            givebacks, self._givebacks = self._givebacks, []
        return refills, givebacks

    def granted(self, refill: RateRefill, units: int) -> None:
        now = self.clock.monotonic()
        with self._lock:
            lease = self._leases.setdefault((refill.endpoint, refill.scope), RateLease())
            lease.asking = False
            names = [f"{refill.name}:{i}" for i in range(1, units + 1)]
            if units <= 0:
                # the window was full when asked, not now: a refusal that took long to
                # arrive (a busy host, a clock moved on) must not hold the endpoint out
                lease.exhausted_until = refill.asked_at + EXHAUSTED_RECHECK_S
                return
            expires = refill.asked_at + SLOT_S
            if expires <= now:  # granted too late to use: straight back
                self._givebacks.append(RateGiveback(refill.endpoint, refill.scope, tuple(names)))
                return
            lease.batches.append((expires, names))
            lease.exhausted_until = 0.0

    def refill_failed(self, refills: Iterable[RateRefill]) -> None:
        with self._lock:
            for refill in refills:
                lease = self._leases.get((refill.endpoint, refill.scope))
                if lease is not None:
                    lease.asking = False

    def give_back(self, endpoint: str, scopes: Iterable[str], name: str) -> None:
        """Take a message's entry out of its windows (one counted for mail that left
        by another route)."""
        with self._lock:
            self._givebacks += [RateGiveback(endpoint, scope, (name,)) for scope in scopes]

    def give_back_all(self) -> None:
        with self._lock:
            for scope, lease in self._leases.items():
                for _, names in lease.batches:
                    self._givebacks.append(RateGiveback(*scope, tuple(names)))
            self._leases.clear()
