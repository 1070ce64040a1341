"""Rate-cap slots leased for local decisions, sans I/O.

A rate cap (``endpoints.*.rate_caps``) allows so many messages per endpoint and
provider in any 60 s, fleet-wide. Its window (``state/window.lua``) counts messages
per whole second. ``state/rate_lease.lua`` reserves a few slots at a time, counted
at the second their short validity (``SLOT_S``) ends; local decisions spend them
without a round trip until then. What is left when they expire is given back at
that second (``state/rate_return.lua``), so a daemon that stops sending frees the
capacity at once. When no slot is held, the same draw goes to select.lua
(``NeedRedis``), which counts against the same window.

Thread-safe: the milter's threads take from it while the engine's loop refills it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.decision.choice import NeedRedis
from smtp_balancer.decision.wakeup import WorkSignal
from smtp_balancer.state.keys import RATE_WINDOW_S
from smtp_balancer.state.values import COUNT_DIGITS, parse_int, text_of

SLOT_S = 1.0  # a leased slot must be spent within this long
LEASE_MAX = 2000
EXHAUSTED_RECHECK_S = 0.5  # a full window frees slots as its oldest messages age out


def rate_lease_size(cap: int) -> int:
    """Half a second's worth of the cap (a slot is good for one): a fleet shares a
    small cap finely, and a busy daemon refills every few rounds, not every one."""
    return max(1, min(LEASE_MAX, cap // 120))


def lease_second(wall: float) -> int:
    """The second a lease asked for at ``wall`` (the decider's clock) counts its slots
    at: where their validity ends, so no message is counted before it happened."""
    return math.floor(wall + SLOT_S)


def rate_second(wall: float) -> int:
    """The second select.lua counts a message it routed at ``wall`` at."""
    return math.floor(wall)


def window_count(fields: Mapping[Any, Any], now: float) -> int:
    """The messages a rate cap's window (its hash's fields, as read) holds at ``now``:
    from the seconds themselves, as ``window.lua`` counts them after a hand edit."""
    low = rate_second(now) - RATE_WINDOW_S
    total = 0
    for name, value in fields.items():
        second, count = parse_int(text_of(name), COUNT_DIGITS), parse_int(text_of(value), COUNT_DIGITS)
        if second is not None and count is not None and second >= low:
            total += max(0, count)
    return total


@dataclass
class LeaseBatch:
    expires: float  # monotonic: the end of the slots' validity
    second: int  # the window's second they count at
    unspent: int


@dataclass
class RateLease:
    batches: list[LeaseBatch] = field(default_factory=list)  # granted, oldest first
    exhausted_until: float = 0.0
    asking: bool = False
    cap: int = 0  # as configured, for the next refill
    want: int = 1

    @property
    def slots(self) -> int:
        return sum(b.unspent for b in self.batches)


@dataclass(frozen=True)
class RateRefill:
    endpoint: str
    scope: str  # a provider, or "all"
    want: int
    cap: int
    asked_at: float  # monotonic, when asked: validity counts from the request


@dataclass(frozen=True)
class RateGiveback:
    endpoint: str
    scope: str
    second: int  # the window's second they were counted at
    slots: int


class RateCounter:
    """Rate-cap windows a decision checks and spends: RateBook's leased slots, or
    replay's exact windows (replay/simulate.py). A base class, not a Protocol:
    compiled, a call through it is a native call, where a Protocol's goes through
    Python and parses its arguments."""

    def check(self, endpoint: str, scope: str, cap: int) -> str | None:
        raise NotImplementedError

    def take(self, endpoint: str, scopes: tuple[str, ...]) -> bool:
        raise NotImplementedError


class RateBook(RateCounter):
    def __init__(self, clock: Clock = SYSTEM, signal: WorkSignal | None = None) -> None:
        self.clock = clock
        self.signal = WorkSignal() if signal is None else signal  # raised when work is queued
        self._lock = threading.Lock()
        self._leases: dict[tuple[str, str], RateLease] = {}
        self._refills: list[RateRefill] = []
        self._givebacks: list[RateGiveback] = []

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

    def known_full(self, endpoint: str, scope: str) -> bool:
        """The window was found full and is still held so, with no slot in hand (a look
        for shadow mode: nothing is asked or spent)."""
        now = self.clock.monotonic()
        with self._lock:
            lease = self._leases.get((endpoint, scope))
            return (
                lease is not None
                and not any(b.expires > now and b.unspent for b in lease.batches)
                and lease.exhausted_until > now
            )

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
                batches[0].unspent -= 1
                if not batches[0].unspent:
                    del batches[0]
                if lease.asking:
                    continue
                # ask ahead: the newest batch half spent, or half its validity gone
                newest = batches[-1] if batches else None
                if newest is None or newest.unspent <= lease.want // 2 or newest.expires - now < SLOT_S / 2:
                    self._ask(endpoint, s, lease.cap, lease, now)
        return True

    def _lease(self, scope: tuple[str, str], now: float) -> RateLease:
        lease = self._leases.get(scope)
        if lease is None:
            lease = self._leases[scope] = RateLease()
        batches = lease.batches
        while batches and batches[0].expires <= now:
            gone = batches.pop(0)
            self._givebacks.append(RateGiveback(*scope, gone.second, gone.unspent))
            self.signal.raise_()
        return lease

    def _ask(self, endpoint: str, scope: str, cap: int, lease: RateLease, now: float) -> None:
        if lease.asking:
            return
        lease.asking = True
        lease.want = rate_lease_size(cap)
        self._refills.append(RateRefill(endpoint, scope, lease.want, cap, now))
        self.signal.raise_()

    # -- the engine's loop ---------------------------------------------------------
    def next_expiry(self) -> float | None:
        """When the first held slot expires (monotonic): ``take_work`` gives it back then."""
        with self._lock:
            firsts = [lease.batches[0].expires for lease in self._leases.values() if lease.batches]
        return min(firsts) if firsts else None

    def take_work(self) -> tuple[list[RateRefill], list[RateGiveback]]:
        now = self.clock.monotonic()
        with self._lock:
            for scope in list(self._leases):
                self._lease(scope, now)  # expired slots go back
            refills, self._refills = self._refills, []
            givebacks, self._givebacks = self._givebacks, []
        return refills, givebacks

    def granted(self, refill: RateRefill, units: int, second: int) -> None:
        """``units`` slots granted, counted at ``second`` (``lease_second``)."""
        now = self.clock.monotonic()
        with self._lock:
            lease = self._leases.setdefault((refill.endpoint, refill.scope), RateLease())
            lease.asking = False
            if units <= 0:
                # the window was full when asked, not now: a refusal that took long to
                # arrive (a busy host, a clock moved on) must not hold the endpoint out
                lease.exhausted_until = refill.asked_at + EXHAUSTED_RECHECK_S
                return
            expires = refill.asked_at + SLOT_S
            if expires <= now:  # granted too late to use: straight back
                self._givebacks.append(RateGiveback(refill.endpoint, refill.scope, second, units))
                self.signal.raise_()
                return
            lease.batches.append(LeaseBatch(expires, second, units))
            lease.exhausted_until = 0.0

    def refill_failed(self, refills: Iterable[RateRefill]) -> None:
        with self._lock:
            for refill in refills:
                lease = self._leases.get((refill.endpoint, refill.scope))
                if lease is not None:
                    lease.asking = False

    def give_back(self, endpoint: str, scopes: Iterable[str], second: int) -> None:
        """Take a message out of its windows (one counted at ``second`` for mail that
        left by another route)."""
        with self._lock:
            self._givebacks += [RateGiveback(endpoint, scope, second, 1) for scope in scopes]
            self.signal.raise_()

    def give_back_all(self) -> None:
        with self._lock:
            for scope, lease in self._leases.items():
                for batch in lease.batches:
                    self._givebacks.append(RateGiveback(*scope, batch.second, batch.unspent))
            self._leases.clear()
            self.signal.raise_()
