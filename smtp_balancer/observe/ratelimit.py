"""Log lines about bad input, limited per kind so that an abuser cannot flood our log.

The first ``burst`` lines of a kind in an interval go out as they are; the rest
are counted, and one summary line per kind and interval says how many were
left out and shows the latest. Metrics are counted by the caller, exactly, for
every event: only the log is limited.

``flush`` writes the summaries of intervals that have ended; a daemon calls it
now and then, so the count of a flood that stopped is not lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from smtp_balancer.clock import SYSTEM, Clock

BURST = 5
INTERVAL_S = 60.0
MAX_KINDS = 1000  # kinds come from code, not input; the bound is a safety net


@dataclass
class _Window:
    started: float
    level: int
    shown: int = 0
    left_out: int = 0
    latest: str = ""


class LogLimiter:
    def __init__(
        self,
        log: logging.Logger,
        *,
        burst: int = BURST,
        interval_s: float = INTERVAL_S,
        clock: Clock = SYSTEM,
    ) -> None:
        self.log = log
        self.burst = burst
        self.interval_s = interval_s
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def warning(self, kind: str, msg: str, *args: Any, extra: dict[str, Any] | None = None) -> bool:
        return self.emit(logging.WARNING, kind, msg, *args, extra=extra)

    def info(self, kind: str, msg: str, *args: Any, extra: dict[str, Any] | None = None) -> bool:
        return self.emit(logging.INFO, kind, msg, *args, extra=extra)

    def emit(self, level: int, kind: str, msg: str, *args: Any, extra: dict[str, Any] | None = None) -> bool:
        """Log the line unless this kind's burst is spent; True when it went out."""
        if not self.log.isEnabledFor(level):
            return False
        now = self.clock.monotonic()
        window = self._windows.get(kind)
        if window is None or now - window.started >= self.interval_s:
            if window is not None:
                self._summarise(kind, window, now)
            elif len(self._windows) >= MAX_KINDS:
                self.flush()
            window = self._windows[kind] = _Window(now, level)
        if window.shown < self.burst:
            window.shown += 1
            self.log.log(level, msg, *args, extra=extra)
            return True
        window.left_out += 1
        window.latest = msg % args if args else msg
        return False

    def flush(self, *, everything: bool = False) -> None:
        """Summaries for the intervals that have ended (``everything``: all of them, at
        shutdown); their kinds start afresh."""
        now = self.clock.monotonic()
        for kind, window in list(self._windows.items()):
            if everything or now - window.started >= self.interval_s:
                self._summarise(kind, window, now)
                del self._windows[kind]

    def _summarise(self, kind: str, window: _Window, now: float) -> None:
        if not window.left_out:
            return
        self.log.log(
            window.level,
            "%d more %s line(s) left out of the log in %.0fs (the first %d of each %.0fs are logged);"
            " latest: %s",
            window.left_out,
            kind,
            now - window.started,
            self.burst,
            self.interval_s,
            window.latest,
        )
