"""Shadow mode: each message decided again under a candidate config, sans I/O.

The candidate's decision never routes and never writes: it takes no quota lease,
asks Redis nothing and counts nothing. It sees what the live deciders see:
- the live state (weights set in Redis, drains, suspensions, throttles,
  quarantines), for the endpoints and pools it shares with the live config;
- the message's own uniform value: with the live config as the candidate, every
  message gets the live route, so any difference is the candidate's doing;
- caps as the live deciders know them: a capped endpoint is left out only while
  this process holds its cap (warm-up or rate) as reached. The candidate's own
  cap values are therefore not applied; replaying the logs does that.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.draw import Draw
from smtp_balancer.decision.eligibility import UNCOUNTABLE, UNRATED, Eligibility
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.decision.planner import Planner
from smtp_balancer.decision.quota import QuotaBook
from smtp_balancer.state.live import LiveState

CAP_HELD = "cap reached (as the live deciders hold it)"


class ShadowEligibility(Eligibility):
    """The degraded path's model (no lease), but a capped endpoint stays eligible
    unless the live quota book holds its cap as reached."""

    __slots__ = ("book",)

    def __init__(self, draw: Draw, live: LiveState | None, book: QuotaBook | None, now: float) -> None:
        super().__init__(draw, live, None, now)
        self.book = book

    def why_not(self, endpoint: str, ignore_caps: bool) -> str | None:
        why = super().why_not(endpoint, ignore_caps)
        if why not in (UNCOUNTABLE, UNRATED):
            return why
        book, draw = self.book, self.draw
        if book is None:
            return None
        caps = draw.caps[endpoint]
        if any(book.rates.known_full(endpoint, scope) for scope in caps.rate_scopes(draw.providers)):
            return CAP_HELD
        if caps.capped:
            day, hour = draw.buckets
            fields = ["total", *(p for p, _ in draw.provider_counts if p in caps.providers)]
            if any(book.known_full(endpoint, day, hour, f) for f in fields):
                return CAP_HELD
        return None


class ShadowDecider:
    """Decides under ``candidate`` what the live planner decided under its own config."""

    def __init__(self, candidate: BalancerConfig, clock: Clock = SYSTEM) -> None:
        self.planner = Planner(candidate, clock=clock)
        self.clock = clock

    def decide(
        self,
        facts: Facts,
        r: float | None,
        live: LiveState | None,
        book: QuotaBook | None,
        now: datetime | None = None,
    ) -> Decision:
        """``r``: the live draw's uniform value (None when the live side drew none)."""
        planner = self.planner
        draw = planner.prepare(facts, now, commit=False)
        if isinstance(draw, Decision):
            return draw
        if r is not None:
            draw = replace(draw, r=r)
        return planner.unleased(draw, ShadowEligibility(draw, live, book, self.clock.monotonic()))


def agrees(live: Decision, shadow: Decision) -> bool:
    """The candidate would have sent the message the same way."""
    return (live.outcome, live.endpoint) == (shadow.outcome, shadow.endpoint)
