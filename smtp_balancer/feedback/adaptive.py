"""Adaptive weight factors from recent outcomes, sans I/O.

For each endpoint and provider of the pools that opt in, the feedback daemon
sums the minute outcome hashes over ``adaptive.window`` into a Sample. Each
signal (deferral rate, block-type refusal rate, latency) maps to a factor
through its band: 1 at or below ``good``, the floor at or above ``bad``, in
proportion between. The smallest wins, and names the cause.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtp_balancer.config.adaptive import AdaptiveConfig, Band
from smtp_balancer.durations import format_duration

# the fields of a minute outcome hash a Sample is summed from
FIELDS = ("sent", "deferred", "bounced", "expired", "blocked", "latency_ms")


@dataclass(frozen=True)
class Sample:
    sent: int = 0
    deferred: int = 0
    bounced: int = 0
    expired: int = 0
    blocked: int = 0
    latency_ms: int = 0

    @property
    def attempts(self) -> int:
        return self.sent + self.deferred + self.bounced + self.expired

    @classmethod
    def summed(cls, rows: list[list[int]]) -> Sample:
        """From one row of FIELDS values per minute."""
        return cls(*(sum(col) for col in zip(*rows, strict=True))) if rows else cls()


def _band_factor(value: float, band: Band, floor: float) -> float:
    if value <= band.good:
        return 1.0
    if value >= band.bad:
        return floor
    return 1.0 - (1.0 - floor) * (value - band.good) / (band.bad - band.good)


def computed_factor(sample: Sample, cfg: AdaptiveConfig) -> tuple[float, str] | None:
    """The factor the sample calls for and its cause; None below the minimum sample."""
    attempts = sample.attempts
    if attempts < cfg.min_attempts:
        return None
    window = format_duration(cfg.window)
    signals = [
        (
            100 * sample.deferred / attempts,
            cfg.deferred_percent,
            f"deferred {100 * sample.deferred / attempts:.0f}% of {attempts} in {window}",
        ),
        (
            100 * sample.blocked / attempts,
            cfg.blocked_percent,
            f"blocked {100 * sample.blocked / attempts:.1f}% of {attempts} in {window}",
        ),
    ]
    if sample.sent:
        latency = sample.latency_ms / 1000 / sample.sent
        signals.append(
            (latency, cfg.latency_s, f"latency {latency:.1f}s over {sample.sent} sent in {window}")
        )
    factor, cause = 1.0, f"healthy over {attempts} in {window}"
    for value, band, text in signals:
        f = _band_factor(value, band, cfg.floor)
        if f < factor:
            factor, cause = f, text
    return round(factor, 3), cause


def next_factor(current: float, computed: float, cfg: AdaptiveConfig) -> float | None:
    """The factor to store instead of ``current`` (1: none), or None to keep it.

    Hysteresis: a move smaller than ``cfg.hysteresis`` is ignored, except a return
    to 1 (every signal good) and a fall to the floor.
    """
    if computed >= 1.0:
        return 1.0 if current < 1.0 else None
    if abs(computed - current) >= cfg.hysteresis or (computed == cfg.floor and current != computed):
        return computed
    return None
