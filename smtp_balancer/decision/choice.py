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
from operator import itemgetter
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    # the one model, named for the compiler only (it imports this module): compiled,
    # its methods are called natively, where a Protocol's are Python method calls
    from smtp_balancer.decision.eligibility import Eligibility

# the largest remainder select.lua carries into a redraw (keeps it below 1)
_MAX_REST: Final = 0.999999999


class NeedRedis(Exception):
    """The local state cannot tell whether this endpoint may take the message."""


@dataclass(frozen=True, slots=True)
class Stage:
    """One pool of a rule's overflow chain, as tried in order."""

    pool: str
    members: tuple[tuple[str, int], ...]  # (endpoint, YAML weight)
    stickiness: str
    spread: int
    ignore_caps: bool
    adaptive: bool = False  # the pool's weights follow recent outcomes


def _draw(weights: Sequence[int], rr: float) -> tuple[int, float]:
    """Index drawn by ``rr`` in [0, 1) and the uniform remainder inside that member."""
    total = 0
    for w in weights:  # a loop compiles natively; sum() is a call through builtins
        total += w
    target = rr * total
    lo = 0
    last = len(weights) - 1
    for i, w in enumerate(weights):
        if target < lo + w or i == last:
            return i, (target - lo) / w
        lo += w
    raise ValueError("no candidates")


def choose(
    stages: Sequence[Stage],
    hashes: Sequence[Sequence[float] | None],
    r: float,
    elig: Eligibility,
) -> tuple[int, str, int] | None:
    """(stage index, endpoint, weight) of the pick, or None when every stage is exhausted.

    Each member's eligibility is asked at most once per stage, as in select.lua:
    a member is either taken or dropped from the stage once asked. Plain lists,
    no objects per member: this runs for every message.
    """
    # zip without strict below: mypyc compiles a plain zip in a loop, but calls
    # zip(strict=True) through Python (keyword parsing, per message)
    if len(hashes) != len(stages):
        raise ValueError(f"{len(stages)} stages but {len(hashes)} hash lists")
    for s, (stage, stage_hashes) in enumerate(zip(stages, hashes)):  # noqa: B905 (lengths checked)
        pool, ignore_caps, adaptive = stage.pool, stage.ignore_caps, stage.adaptive
        weights = [elig.weight(pool, ep, w) for ep, w in stage.members]
        if stage_hashes is not None:
            # weighted rendezvous hashing: the key keeps its top `spread` eligible endpoints
            ranked = sorted(
                (
                    (-w / math.log(u), i)
                    for i, (w, u) in enumerate(zip(weights, stage_hashes, strict=True))
                    if w > 0
                ),
                key=itemgetter(0),  # stable on ties, as the original order
                reverse=True,
            )
            top: list[int] = []
            for _, i in ranked:
                endpoint = stage.members[i][0]
                if elig.why_not(endpoint, ignore_caps) is None:
                    f = elig.throttle(endpoint, adaptive)
                    # a throttled member keeps a `factor` share of the keys, by the key's own hash
                    if f >= 1 or (stage_hashes[i] * 1000003) % 1 < f:
                        top.append(i)
                        if len(top) >= stage.spread:
                            break
            if top:
                i = top[_draw([weights[j] for j in top], r)[0]]
                return s, stage.members[i][0], weights[i]
            continue
        # draw by weight; an ineligible draw is dropped and the rescaled remainder
        # of the same uniform value draws again: exactly weighted among the eligible
        # weights has one per member (built above)
        positive = [(ep, w) for (ep, _), w in zip(stage.members, weights) if w > 0]  # noqa: B905
        rr = r
        while positive:
            i, rest = _draw([w for _, w in positive], rr)
            rest = min(max(rest, 0.0), _MAX_REST)
            endpoint, weight = positive[i]
            if elig.why_not(endpoint, ignore_caps) is None:
                f = elig.throttle(endpoint, adaptive)
                if f >= 1 or rest < f:
                    return s, endpoint, weight
                rest = (rest - f) / (1 - f)
            rr = rest
            del positive[i]
    return None
