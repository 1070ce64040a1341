"""Hand-edited junk in Redis: every value counted exactly, logged in summaries.

One HSET of 100,000 junk fields must not write 100,000 WARNING lines in every
daemon: each key gets at most one line per interval, naming how many values were
skipped since its last line and a few of the fields.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.decision.script import StateJunk
from smtp_balancer.observe import metrics

log = logging.getLogger("smtp_balancer.engine")

LOG_INTERVAL_S = 60.0
MAX_KEYS = 10_000  # keys remembered between lines; past it the oldest are forgotten
FIELDS_NAMED = 3


@dataclass
class _KeyLog:
    logged_at: float
    skipped: int = 0  # since the last line
    fields: list[str] = field(default_factory=list)


class JunkReporter:
    def __init__(self, clock: Clock = SYSTEM, interval_s: float = LOG_INTERVAL_S) -> None:
        self.clock = clock
        self.interval_s = interval_s
        self._keys: dict[tuple[str, str], _KeyLog] = {}

    def report(self, junk: Iterable[StateJunk]) -> None:
        by_key: dict[tuple[str, str], list[str]] = {}
        kinds: Counter[str] = Counter()
        for item in junk:
            kinds[item.kind] += 1
            by_key.setdefault((item.kind, item.key), []).append(item.field)
        for kind, n in kinds.items():
            metrics.STATE_JUNK.labels(kind).inc(n)
        now = self.clock.monotonic()
        for scope, fields in by_key.items():
            self._note(scope, fields, now)

    def _note(self, scope: tuple[str, str], fields: list[str], now: float) -> None:
        entry = self._keys.get(scope)
        if entry is None:
            if len(self._keys) >= MAX_KEYS:
                del self._keys[next(iter(self._keys))]
            entry = self._keys[scope] = _KeyLog(now - self.interval_s)
        entry.skipped += len(fields)
        for name in fields:
            if name and len(entry.fields) < FIELDS_NAMED and name not in entry.fields:
                entry.fields.append(name)
        if now - entry.logged_at < self.interval_s:
            return
        kind, key = scope
        named = f" (fields {', '.join(entry.fields)}{', ...' if entry.skipped > len(entry.fields) else ''})"
        log.warning(
            "ignoring %d unusable %s value(s) in Redis at %s%s (one line per key a minute); using YAML",
            entry.skipped,
            kind,
            key,
            named if entry.fields else "",
        )
        entry.logged_at, entry.skipped, entry.fields = now, 0, []
