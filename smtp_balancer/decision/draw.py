"""A Draw: one message's decision inputs, made once, with its one uniform value.

Whichever path settles it (the mirror, select.lua, or degraded) uses this same
Draw, so a message is never re-drawn: when a lease falls short, select.lua gets
the very random value and candidate list the local choice had.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.plan import PoolPlan
from smtp_balancer.decision.rules import CompiledRule
from smtp_balancer.decision.warmup import Caps


@dataclass(slots=True, init=False)
class Draw:
    """Not frozen, though never changed, and its own __init__: see decision/facts.py."""

    facts: Facts
    rule: CompiledRule
    plan: PoolPlan
    # per stage, the rendezvous hash per member (None when not sticky)
    hashes: tuple[tuple[float, ...] | None, ...]
    caps: dict[str, Caps]
    r: float
    providers: tuple[str, ...]
    provider_counts: tuple[tuple[str, int], ...]  # recipients per provider
    buckets: tuple[str, str]  # day and hour counter buckets
    wall: float  # the clock's epoch seconds when drawn: a quarantine's `until` is compared with it
    commit: bool = True
    explain: bool = False
    arm: tuple[str, str] | None = None  # (experiment, arm) that chose the pool

    def __init__(
        self,
        facts: Facts,
        rule: CompiledRule,
        plan: PoolPlan,
        hashes: tuple[tuple[float, ...] | None, ...],
        caps: dict[str, Caps],
        r: float,
        providers: tuple[str, ...],
        provider_counts: tuple[tuple[str, int], ...],
        buckets: tuple[str, str],
        wall: float,
        commit: bool = True,
        explain: bool = False,
        arm: tuple[str, str] | None = None,
    ) -> None:
        self.facts = facts
        self.rule = rule
        self.plan = plan
        self.hashes = hashes
        self.caps = caps
        self.r = r
        self.providers = providers
        self.provider_counts = provider_counts
        self.buckets = buckets
        self.wall = wall
        self.commit = commit
        self.explain = explain
        self.arm = arm
