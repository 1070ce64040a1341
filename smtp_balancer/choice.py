"""The weighted choice of select.lua, in Python, sans I/O.

Local decisions (made from the tracked live state and quota leases, without a
round trip) and degraded decisions (made without Redis) both use ``choose``.
It must pick exactly what select.lua picks for the same state, uniform value
and hashes: ``tests/test_choice.py`` checks that against the real script.
What differs between callers is only the ``Eligibility``: which endpoints may
take this message, and the throttle factor of each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# the largest remainder select.lua carries into a redraw (keeps it below 1)
_MAX_REST = 0.999999999


class NeedRedis(Exception):
    """The local state cannot tell whether this endpoint may take the message."""


class Eligibility(Protocol):
    def weight(self, pool: str, endpoint: str, yaml_weight: int) -> int: ...

    def why_not(self, endpoint: str, ignore_caps: bool) -> str | None:
        """Why the endpoint cannot take the message, or None; may raise NeedRedis."""
        ...

    def throttle(self, endpoint: str) -> float: ...


@dataclass(frozen=True, slots=True)
class Stage:
    """One pool of a rule's overflow chain, as tried in order."""

    pool: str
    members: tuple[tuple[str, int], ...]  # (endpoint, YAML weight)
    stickiness: str
    spread: int
    ignore_caps: bool


@dataclass(slots=True)
class _Member:
    endpoint: str
    weight: int
    u: float = 0.0


def _draw(cands: Sequence[_Member], rr: float) -> tuple[int, float]:
    """Index drawn by ``rr`` in [0, 1) and the uniform remainder inside that member."""
    total = sum(c.weight for c in cands)
    target = rr * total
    lo = 0
    last = len(cands) - 1
    for i, c in enumerate(cands):
        if target < lo + c.weight or i == last:
            return i, (target - lo) / c.weight
        lo += c.weight
    raise ValueError("no candidates")


class _Verdicts:
    """Each member's eligibility, asked once per stage (select.lua memoises it too)."""

    def __init__(self, elig: Eligibility, ignore_caps: bool) -> None:
        self.elig = elig
        self.ignore_caps = ignore_caps
        self.memo: dict[str, str | None] = {}

    def __call__(self, m: _Member) -> str | None:
        if m.endpoint not in self.memo:
            self.memo[m.endpoint] = self.elig.why_not(m.endpoint, self.ignore_caps)
        return self.memo[m.endpoint]


def choose(
    stages: Sequence[Stage],
    hashes: Sequence[Sequence[float] | None],
    r: float,
    elig: Eligibility,
) -> tuple[int, str, int] | None:
    """(stage index, endpoint, weight) of the pick, or None when every stage is exhausted."""
    for s, (stage, stage_hashes) in enumerate(zip(stages, hashes, strict=True)):
        members = [_Member(ep, elig.weight(stage.pool, ep, w)) for ep, w in stage.members]
        why_not = _Verdicts(elig, stage.ignore_caps)
        positive = [m for m in members if m.weight > 0]
        pick: _Member | None = None
        if stage_hashes is not None:
            for m, u in zip(members, stage_hashes, strict=True):
                m.u = u
            # weighted rendezvous hashing: the key keeps its top `spread` eligible endpoints
            positive.sort(key=lambda m: -m.weight / math.log(m.u), reverse=True)
            top: list[_Member] = []
            for m in positive:
                if why_not(m) is None:
                    f = elig.throttle(m.endpoint)
                    # a throttled member keeps a `factor` share of the keys, by the key's own hash
                    if f >= 1 or (m.u * 1000003) % 1 < f:
                        top.append(m)
                        if len(top) >= stage.spread:
                            break
            if top:
                pick = top[_draw(top, r)[0]]
        else:
            # draw by weight; an ineligible draw is dropped and the rescaled remainder
            # of the same uniform value draws again: exactly weighted among the eligible
            rr = r
            while positive:
                i, rest = _draw(positive, rr)
                rest = min(max(rest, 0.0), _MAX_REST)
                if why_not(positive[i]) is None:
                    f = elig.throttle(positive[i].endpoint)
                    if f >= 1 or rest < f:
                        pick = positive[i]
                        break
                    rest = (rest - f) / (1 - f)
                rr = rest
                del positive[i]
        if pick is not None:
            return s, pick.endpoint, pick.weight
    return None
