"""Adaptive factors: read the outcome window, write ``{sb}:adaptive:<ep>:<provider>``
(through state/adaptive_store.py).

The feedback daemon is their only writer. Every daemon of the fleet computes the
same value from the shared minute hashes, so two writing at once agree. A
factor is rewritten when it changes, or when its TTL (two windows) is half
spent, so the deciders' tracked mirrors are not invalidated at every round; with
too few attempts to judge it is left alone and lifts when its TTL runs out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.config.adaptive import AdaptiveConfig
from smtp_balancer.feedback.adaptive import FIELDS, Sample, computed_factor, next_factor
from smtp_balancer.feedback.metrics import ADAPTIVE_FACTOR
from smtp_balancer.state.adaptive_store import AdaptiveState
from smtp_balancer.state.keys import KeySchema, minute_bucket
from smtp_balancer.state.values import parse_throttle

log = logging.getLogger("smtp_balancer.feedback")


@dataclass(frozen=True)
class AdaptiveResult:
    endpoint: str
    provider: str
    factor: float  # in force after this round (1: none)
    cause: str
    changed: bool
    sample: Sample


class AdaptiveStore:
    def __init__(self, client: redis.Redis, keys: KeySchema, cfg: AdaptiveConfig) -> None:
        self.state, self.cfg = AdaptiveState(client, keys), cfg

    def evaluate(self, pairs: Iterable[tuple[str, str]], now: float) -> list[AdaptiveResult]:
        pairs = sorted(pairs)
        if not pairs:
            return []
        cfg = self.cfg
        minutes = [minute_bucket(now - 60 * i) for i in range(max(1, cfg.window // 60))]
        ttl_s = 2 * cfg.window
        out: list[AdaptiveResult] = []
        writes: list[tuple[str, str, str | None]] = []
        junk = 0
        for (ep, provider), window in zip(pairs, self.state.windows(pairs, minutes, FIELDS), strict=True):
            junk += window.junk
            raw, ttl = window.factor, window.ttl
            current = parse_throttle(raw) or 1.0
            sample = Sample.summed(window.rows)
            found = computed_factor(sample, cfg)
            if found is None:
                cause = raw.partition(" ")[2] if raw and current < 1 else "too few attempts to judge"
                out.append(AdaptiveResult(ep, provider, current, cause, False, sample))
                continue
            computed, cause = found
            new = next_factor(current, computed, cfg)
            if new == 1.0:
                writes.append((ep, provider, None))
            elif new is not None:
                writes.append((ep, provider, f"{new} {cause}"))
            elif current < 1.0 and isinstance(ttl, int) and 0 <= ttl < ttl_s // 2:
                writes.append((ep, provider, f"{current} {cause}"))  # still called for: keep it
            factor = current if new is None else new
            out.append(AdaptiveResult(ep, provider, factor, cause, new is not None, sample))
        if junk:
            log.warning("adaptive factors: %d outcome counts are not integers and were read as 0", junk)
        self.state.write(writes, ttl_s)
        return out


class AdaptiveRounds:
    """When to recompute, and for which pairs: those of adaptive pools' endpoints seen
    in the log within two windows (a factor's TTL). Exports the factors as a gauge."""

    def __init__(self, store: AdaptiveStore, endpoints: set[str], clock: Clock = SYSTEM) -> None:
        self.store, self.endpoints, self.clock = store, endpoints, clock
        self._seen: dict[tuple[str, str], float] = {}  # pair -> monotonic time last seen
        self._due = 0.0

    def note(self, pairs: Iterable[tuple[str, str]]) -> None:
        now = self.clock.monotonic()
        for pair in pairs:
            if pair[0] in self.endpoints:
                self._seen[pair] = now

    def maybe_run(self) -> list[AdaptiveResult]:
        now = self.clock.monotonic()
        if now < self._due or not self._seen:
            return []
        cfg = self.store.cfg
        self._due = now + cfg.interval
        for pair, seen in list(self._seen.items()):
            if now - seen > 2 * cfg.window:
                del self._seen[pair]
                ADAPTIVE_FACTOR.remove(*pair)
        results = self.store.evaluate(self._seen, self.clock.wall())
        for res in results:
            ADAPTIVE_FACTOR.labels(res.endpoint, res.provider).set(res.factor)
            if res.changed and res.factor < 1:
                log.warning(
                    "adaptive factor %s for %s/%s: %s", res.factor, res.endpoint, res.provider, res.cause
                )
            elif res.changed:
                log.info("adaptive factor restored to 1 for %s/%s: %s", res.endpoint, res.provider, res.cause)
        return results
