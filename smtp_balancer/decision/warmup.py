"""Warm-up schedules: the daily and hourly cap of an endpoint by its age in days.

Day 1 is the start date. After the last step of its schedule an endpoint is
warm and has no cap. Days and hours are UTC, so every host in the fleet agrees
on which counter is "today".

The built-in schedules and where their numbers come from: ``config/builtins.py``.

The hourly cap spreads a day's volume over at least about eight hours, so a
new IP does not spend its whole day's budget in one burst.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import TYPE_CHECKING

from smtp_balancer.config.builtins import BUILTIN_SCHEDULES, Steps

if TYPE_CHECKING:
    from smtp_balancer.config.model import BalancerConfig

NO_RATES: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True)
class Caps:
    """An endpoint's limits on one day: warm-up caps (total and per provider) and rate caps."""

    day: int | None  # None: uncapped (warm, or no warm-up configured)
    hour: int | None
    warmup_day: int | None  # 1-based age, None when not warming
    # provider -> (day cap, hour cap) beside the total, while warming
    providers: Mapping[str, tuple[int, int | None]] = field(default_factory=dict)
    # provider (or "all") -> messages per minute, fleet-wide
    rates: Mapping[str, int] = field(default_factory=dict)
    # the providers (or "all") a rate cap counts: without Redis they cannot be counted
    redis_only: frozenset[str] = frozenset()
    # providers of a message -> its rate scopes; asked twice per decision, so memoised
    _scopes: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def capped(self) -> bool:
        """Not UNCAPPED; without the dataclass ``__eq__``, which costs per decision."""
        return self.day is not None or self.hour is not None or self.warmup_day is not None

    def needs_redis(self, providers: tuple[str, ...]) -> bool:
        """Whether a rate cap counts a message to these providers."""
        only = self.redis_only
        if not only:
            return False
        return "all" in only or any(p in only for p in providers)

    def rate_scopes(self, providers: tuple[str, ...]) -> tuple[str, ...]:
        """The rate caps a message to these providers counts against: "all", its providers."""
        rates = self.rates
        if not rates:
            return ()
        scopes = self._scopes.get(providers)
        if scopes is None:
            scopes = tuple(s for s in ("all", *providers) if s in rates)
            if len(self._scopes) < 10_000:  # provider sets are few; bounded all the same
                self._scopes[providers] = scopes
        return scopes


UNCAPPED = Caps(None, None, None)


def normalise_steps(steps: Sequence[object]) -> Steps:
    """YAML steps (ints or {daily, hourly}) -> Steps."""
    out: list[tuple[int, int | None]] = []
    for step in steps:
        if isinstance(step, int):
            out.append((step, None))
        else:
            out.append((int(step.daily), step.hourly))  # type: ignore[attr-defined]
    return tuple(out)


def caps_for(
    start: date,
    steps: Steps,
    today: date,
    provider_steps: Mapping[str, Steps] | None = None,
    rates: Mapping[str, int] = NO_RATES,
    step: int | None = None,
) -> Caps:
    """The caps on ``today``. Provider schedules count days from the same start and end
    with the total schedule (a warm endpoint has no warm-up caps); rate caps always hold.
    ``step``: the schedule day from the endpoint's record (a managed warm-up), instead
    of the calendar, from the start date on."""
    redis_only = frozenset(rates)
    age = (today - start).days + 1
    if age >= 1 and step is not None:
        age = step
    if age < 1:
        # not started yet: the endpoint takes no traffic before its start date
        return Caps(0, 0, 0, rates=rates, redis_only=redis_only)
    if age > len(steps):
        return Caps(None, None, None, rates=rates, redis_only=redis_only) if rates else UNCAPPED
    daily, hourly = steps[age - 1]
    providers = {name: ps[age - 1] for name, ps in (provider_steps or {}).items() if age <= len(ps)}
    return Caps(daily, hourly, age, providers, rates, redis_only)


def resolve_schedule(ref: str | Sequence[object], user: Mapping[str, Sequence[object]]) -> Steps:
    if isinstance(ref, str):
        if ref in user:
            return normalise_steps(user[ref])
        return BUILTIN_SCHEDULES[ref]
    return normalise_steps(ref)


class CapsTable:
    """Each endpoint's caps on a given UTC day, computed once per day."""

    def __init__(self, config: BalancerConfig) -> None:
        self.config = config
        user = config.warmup_schedules
        self.schedules = {
            name: resolve_schedule(ep.warmup.schedule, user)
            for name, ep in config.endpoints.items()
            if ep.warmup
        }
        self.provider_schedules = {
            name: {p: resolve_schedule(ref, user) for p, ref in ep.warmup.providers.items()}
            for name, ep in config.endpoints.items()
            if ep.warmup and ep.warmup.providers
        }
        self._day: date | None = None
        self._steps: Mapping[str, tuple[int, str]] | None = None
        self._caps: dict[str, Caps] = {}

    def on(self, today: date, steps: Mapping[str, tuple[int, str]] | None = None) -> dict[str, Caps]:
        """``steps``: managed warm-ups' (step, day) from Redis (LiveState.warmup); a
        managed endpoint without one is on its first step. Recomputed when the day or
        the steps mapping (replaced, never changed in place) changes."""
        if today != self._day or steps is not self._steps:
            caps = {}
            for name, ep in self.config.endpoints.items():
                schedule = self.schedules.get(name)
                if ep.warmup and schedule:
                    step = None
                    if ep.warmup.managed:
                        # the record's step (a day not yet judged holds it), else the first
                        record = steps.get(name) if steps else None
                        step = record[0] if record else 1
                    caps[name] = caps_for(
                        ep.warmup.start,
                        schedule,
                        today,
                        self.provider_schedules.get(name),
                        ep.rate_caps,
                        step,
                    )
                elif ep.rate_caps:
                    caps[name] = Caps(
                        None, None, None, rates=ep.rate_caps, redis_only=frozenset(ep.rate_caps)
                    )
                else:
                    caps[name] = UNCAPPED
            self._caps, self._day, self._steps = caps, today, steps
        return self._caps
