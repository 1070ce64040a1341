"""After a Redis failure, skip Redis for a while so mail never waits on it."""

from __future__ import annotations

from smtp_balancer.clock import SYSTEM, Clock


class Breaker:
    def __init__(self, retry_after_s: float, clock: Clock = SYSTEM) -> None:
        self.retry_after_s = retry_after_s
        self.clock = clock
        self.open_until = 0.0

    def allows(self) -> bool:
        return self.clock.monotonic() >= self.open_until

    def failed(self) -> None:
        self.open_until = self.clock.monotonic() + self.retry_after_s

    def succeeded(self) -> None:
        self.open_until = 0.0
