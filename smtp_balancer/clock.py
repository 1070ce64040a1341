"""The one clock every decision reads: wall time for warm-up days and counter
buckets, monotonic time for expiries and timers.

Production uses ``SYSTEM``. Tests inject a ``FixedClock`` so that no test depends
on the date or hour it runs: warm-up ages, counter keys and TTLs all derive from
the clock handed to the engine, the planner, the admin and the CLI.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    def monotonic(self) -> float: ...


class SystemClock:
    __slots__ = ()

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FixedClock:
    """Wall time that stands at a given UTC instant and moves only when told (tests).

    Monotonic time runs as usual (plus what ``advance`` adds), so expiries read
    from Redis TTLs still lapse in a test that waits for them.
    """

    def __init__(self, at: datetime | float) -> None:
        self._wall = at.timestamp() if isinstance(at, datetime) else float(at)
        self._mono_offset = 0.0

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return time.monotonic() + self._mono_offset

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono_offset += seconds

    def set(self, at: datetime) -> None:
        self.advance(at.timestamp() - self._wall)


SYSTEM: Clock = SystemClock()


def utc_now(clock: Clock = SYSTEM) -> datetime:
    return datetime.fromtimestamp(clock.wall(), UTC)
