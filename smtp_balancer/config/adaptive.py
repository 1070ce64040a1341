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
    bad: float = Field(gt=0)

    @model_validator(mode="after")
    def _order(self) -> Band:
        if self.bad <= self.good:
            raise ValueError("bad must be above good")
        return self


class AdaptiveConfig(Strict):
    # the sliding window of outcomes each factor is computed over
    window: Seconds = 300
    # how often the feedback daemon recomputes the factors
    interval: Seconds = 10
    # the least delivery attempts in the window for a factor to change
    min_attempts: int = Field(default=20, ge=1, le=1_000_000)
    # the lowest factor: an endpoint keeps at least this share of its weight
    floor: float = Field(default=0.1, gt=0, lt=1)
    # a factor moves only when the new value differs from the current one by at least
    # this much (or when it returns to 1): a noisy rate does not flap
    hysteresis: float = Field(default=0.1, gt=0, lt=1)
    # deferrals, in percent of attempts
    deferred_percent: Band = Field(default_factory=lambda: Band(good=5, bad=25))
    # block-type refusals (bounce class policy_block, deferred or bounced), in percent
    blocked_percent: Band = Field(default_factory=lambda: Band(good=0.5, bad=5))
    # mean seconds to connect and transmit a delivered message (Postfix's delays c+d)
    latency_s: Band = Field(default_factory=lambda: Band(good=5, bad=60))

    @model_validator(mode="after")
    def _window(self) -> AdaptiveConfig:
        if not 60 <= self.window <= 86_400:
            raise ValueError("window must be 1m to 1d")
        if not 1 <= self.interval <= self.window:
            raise ValueError("interval must be 1s to window")
        return self
