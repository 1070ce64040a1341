"""The ``adaptive:`` section: how recent outcomes turn into a weight factor per
endpoint and provider, for the pools that opt in (``pools.<p>.adaptive: true``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from smtp_balancer.config.base import Strict
from smtp_balancer.config.feedback import Seconds


class Band(Strict):
    """At or below ``good`` a signal costs nothing; at or above ``bad`` it takes the
    factor to the floor; in between, in proportion."""

    good: float = Field(ge=0)
    """At or below this the factor is 1."""
    bad: float = Field(gt=0)
    """At or above this the factor is the floor."""

    @model_validator(mode="after")
    def _order(self) -> Band:
        if self.bad <= self.good:
            raise ValueError("bad must be above good")
        return self


class AdaptiveConfig(Strict):
    # the sliding window of outcomes each factor is computed over
    window: Seconds = 300
    """The outcomes a factor is computed over (1m to 1d, whole minutes)"""
    # how often the feedback daemon recomputes the factors
    interval: Seconds = 10
    """How often the feedback daemon recomputes the factors."""
    # the least delivery attempts in the window for a factor to change
    min_attempts: int = Field(default=20, ge=1, le=1_000_000)
    """The least attempts in the window for a factor to change."""
    # the lowest factor: an endpoint keeps at least this share of its weight
    floor: float = Field(default=0.1, gt=0, lt=1)
    """The lowest factor (an endpoint keeps this share of its weight)"""
    # a factor moves only when the new value differs from the current one by at least
    # this much (or when it returns to 1): a noisy rate does not flap
    hysteresis: float = Field(default=0.1, gt=0, lt=1)
    """The least move of a factor (returning to 1 or the floor aside)"""
    # deferrals, in percent of attempts
    deferred_percent: Band = Field(default_factory=lambda: Band(good=5, bad=25))
    """Deferrals, % of attempts: factor 1 at good, floor at bad."""
    # block-type refusals (bounce class policy_block, deferred or bounced), in percent
    blocked_percent: Band = Field(default_factory=lambda: Band(good=0.5, bad=5))
    """Policy_block refusals, % of attempts."""
    # mean seconds to connect and transmit a delivered message (Postfix's delays c+d)
    latency_s: Band = Field(default_factory=lambda: Band(good=5, bad=60))
    """Mean seconds to connect and transmit (Postfix delays c+d)"""

    @model_validator(mode="after")
    def _window(self) -> AdaptiveConfig:
        if not 60 <= self.window <= 86_400:
            raise ValueError("window must be 1m to 1d")
        if not 1 <= self.interval <= self.window:
            raise ValueError("interval must be 1s to window")
        return self
