"""Response-rule matches counted and acted on in simulated time, sans I/O: the
twin of ``state/hit.lua`` with ``state/act.lua`` for replay, which cannot use
Redis's own clock and TTLs. ``tests/replay/test_hits.py`` holds the two to the
same answers for the same matches.

A rule acts at its ``trigger.count``-th match within ``trigger.period``; each
firing within ``window`` of the last is a strike that multiplies the duration by
``growth``, up to ``max_duration``; an action already in force is not taken
again; a drained endpoint is never quarantined.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from smtp_balancer.config.feedback import ResponseRuleConfig
from smtp_balancer.state.keys import ALL_PROVIDERS

COUNTING, ACTED, IN_FORCE, SKIPPED = "counting", "acted", "in force", "skipped"


@dataclass(frozen=True)
class Fired:
    """An action a rule took: on what, when (simulated epoch seconds), for how long."""

    rule: str
    action: str
    endpoint: str
    provider: str  # "all" for suspend_all and quarantine
    at: float
    seconds: int
    strike: int
    factor: float = 1.0

    def __reduce__(self) -> tuple[type[Fired], tuple[str, str, str, str, float, int, int, float]]:
        # a Run crosses processes (replay --jobs 2); compiled, a frozen class has no __dict__
        fields = (self.rule, self.action, self.endpoint, self.provider, self.at, self.seconds)
        return (Fired, (*fields, self.strike, self.factor))


@dataclass
class HitBook:
    """Matches, strikes and actions in force, by simulated time."""

    drained: set[str] = field(default_factory=set)
    _hits: dict[tuple[str, str, str], deque[float]] = field(default_factory=dict)
    _strikes: dict[tuple[str, str, str], tuple[int, float]] = field(default_factory=dict)  # n, until
    # (action kind, endpoint, provider) -> until; kinds: suspend, throttle, slow, quarantine
    in_force: dict[tuple[str, str, str], tuple[float, float]] = field(default_factory=dict)  # until, factor

    @staticmethod
    def target(action: str, endpoint: str, provider: str) -> tuple[str, str, str]:
        """The one key an action writes, as act.lua names it."""
        if action == "suspend_provider":
            return ("suspend", endpoint, provider)
        if action == "suspend_all":
            return ("suspend", endpoint, ALL_PROVIDERS)
        if action in ("throttle", "slow"):
            return (action, endpoint, provider)
        return ("quarantine", endpoint, ALL_PROVIDERS)

    def hit(
        self, rule: ResponseRuleConfig, endpoint: str, provider: str, now: float
    ) -> tuple[str, Fired | None]:
        """One match at ``now``: what hit.lua answers, and the action when one is taken."""
        action = rule.action
        target = self.target(action, endpoint, provider)
        if action == "quarantine" and endpoint in self.drained:
            return SKIPPED, None
        held = self.in_force.get(target)
        if held is not None and held[0] > now:
            return IN_FORCE, None
        scope = (rule.name, endpoint, provider)
        if rule.trigger.count > 1:
            hits = self._hits.setdefault(scope, deque())
            while hits and hits[0] <= now - rule.trigger.period:
                hits.popleft()
            hits.append(now)
            if len(hits) < rule.trigger.count:
                return COUNTING, None
            del self._hits[scope]  # fired: the next firing needs `count` new matches
        strikes, until = self._strikes.get(scope, (0, 0.0))
        strike = (strikes if until > now else 0) + 1
        self._strikes[scope] = (strike, now + rule.window)
        seconds = max(1, int(min(rule.duration * rule.growth ** (strike - 1), rule.max_duration)))
        factor = rule.factor if action in ("throttle", "slow") else 1.0
        self.in_force[target] = (now + seconds, factor)
        return ACTED, Fired(rule.name, action, endpoint, target[2], now, seconds, strike, factor)
