"""The one clock every decision reads: wall time for warm-up days and counter
buckets, monotonic time for expiries and timers.

Production uses ``SYSTEM``. Unit tests inject a ``FixedClock`` so that no test
depends on the date or hour it runs: warm-up ages, counter keys and quarantine
ends all derive from the clock handed to the engine, the planner, the admin and
the CLI. The integration tests start real daemons, which read ``SYSTEM``: there
``SMTP_BALANCER_TEST_TIME`` (ISO 8601 with a zone) makes ``SYSTEM`` start at that
instant and tick from there. Daemons log a warning when it is set.
"""

from __future__ import annotations

import logging
import os
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


class ShiftedClock:
    """Real time moved to start at a given instant (``SMTP_BALANCER_TEST_TIME``)."""

    def __init__(self, at: datetime) -> None:
        self.offset = at.timestamp() - time.time()

    def wall(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


TEST_TIME_ENV = "SMTP_BALANCER_TEST_TIME"


def _system() -> Clock:
    pinned = os.environ.get(TEST_TIME_ENV)
    if not pinned:
        return SystemClock()
    try:
        at = datetime.fromisoformat(pinned)
        if at.tzinfo is None:
            raise ValueError("no time zone")
    except ValueError as exc:
        logging.getLogger("smtp_balancer").error(
            "ignoring %s=%r (%s): the real clock applies", TEST_TIME_ENV, pinned, exc
        )
        return SystemClock()
    return ShiftedClock(at)


SYSTEM: Clock = _system()


def test_time_note() -> str | None:
    """A warning for a daemon's start log when the clock is shifted, else None."""
    if isinstance(SYSTEM, ShiftedClock):
        return f"{TEST_TIME_ENV} is set: this process's clock starts at {os.environ[TEST_TIME_ENV]}"
    return None


def utc_now(clock: Clock = SYSTEM) -> datetime:
    return datetime.fromtimestamp(clock.wall(), UTC)
