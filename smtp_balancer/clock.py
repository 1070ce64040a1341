"""The one clock every decision reads: wall time for warm-up days and counter
buckets, monotonic time for expiries and timers.

Production uses ``SYSTEM``. Unit tests inject a ``FixedClock`` so that no test
depends on the date or hour it runs: warm-up ages, counter keys and quarantine
ends all derive from the clock handed to the engine, the planner, the admin and
the CLI. The integration tests start real daemons, which read ``SYSTEM``: there
``SMTP_BALANCER_TEST_TIME`` (ISO 8601 with a zone) makes ``SYSTEM`` start at that
instant when the process starts and tick from there. ``<ISO>@<epoch>`` says the
clock showed that instant at real time ``epoch`` instead, so every process given
the same value reads the same time (the root conftest sets it so). Daemons log a
warning when it is set.
"""

from __future__ import annotations

import logging
import os
import re
import time
from datetime import UTC, datetime
from typing import Final

from mypy_extensions import mypyc_attr


# a base class, not a Protocol: compiled code calls a Protocol's methods through Python,
# a compiled class's natively (several times a message); tests subclass it
@mypyc_attr(allow_interpreted_subclasses=True)
class Clock:
    __slots__ = ()

    def wall(self) -> float:
        """Seconds since the epoch (UTC)."""
        raise NotImplementedError

    def monotonic(self) -> float:
        raise NotImplementedError


# read several times a message: statics, where time.time is a lookup in the module each time
_time: Final = time.time
_monotonic: Final = time.monotonic


class SystemClock(Clock):
    __slots__ = ()

    def wall(self) -> float:
        return _time()

    def monotonic(self) -> float:
        return _monotonic()


class FixedClock(Clock):
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


class ShiftedClock(Clock):
    """Real time moved so that it showed ``at`` at real epoch ``since`` (now when None)."""

    def __init__(self, at: datetime, since: float | None = None) -> None:
        self.offset = at.timestamp() - (time.time() if since is None else since)

    def wall(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


TEST_TIME_ENV = "SMTP_BALANCER_TEST_TIME"


def parse_test_time(pinned: str) -> tuple[datetime, float | None]:
    """``<ISO 8601 with a zone>[@<real epoch seconds>]``; raises ValueError."""
    text, sep, since = pinned.partition("@")
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError("no time zone")
    if not sep:
        return at, None
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", since):
        raise ValueError(f"not epoch seconds after '@': {since!r}")
    return at, float(since)


def _system() -> Clock:
    pinned = os.environ.get(TEST_TIME_ENV)
    if not pinned:
        return SystemClock()
    try:
        at, since = parse_test_time(pinned)
    except ValueError as exc:
        logging.getLogger("smtp_balancer").error(
            "ignoring %s=%r (%s): the real clock applies", TEST_TIME_ENV, pinned, exc
        )
        return SystemClock()
    return ShiftedClock(at, since)


SYSTEM: Clock = _system()


def test_time_note() -> str | None:
    """A warning for a daemon's start log when the clock is shifted, else None."""
    if isinstance(SYSTEM, ShiftedClock):
        return f"{TEST_TIME_ENV} is set: this process's clock is shifted ({os.environ[TEST_TIME_ENV]})"
    return None


def utc_now(clock: Clock = SYSTEM) -> datetime:
    return datetime.fromtimestamp(clock.wall(), UTC)
