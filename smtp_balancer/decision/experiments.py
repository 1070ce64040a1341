"""Which arm of an experiment a message is in, and how the arm routes it:
deterministic, stable, sans I/O.

The arm comes from a hash of the experiment's name and a stable key (the
message's queue id, or its first recipient's domain), never from the draw's
random value, so the endpoint draw is independent of the assignment. An arm
only chooses the pool (directly, or through its rule order): suspensions,
drains, quarantines and caps apply in it as anywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from smtp_balancer.config.experiments import ExperimentConfig
from smtp_balancer.config.model import RuleConfig
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.providers import domain_of
from smtp_balancer.decision.rules import CompiledRule, MessageView


@dataclass(frozen=True)
class Arm:
    name: str
    upper: float  # upper bound of its share in [0, 1), the arms in order
    pool: str | None  # another pool, or
    rule_order: tuple[CompiledRule, ...]  # another rule order: the first that matches routes

    def route(self, rule: CompiledRule, view: MessageView) -> tuple[CompiledRule, str]:
        """(rule, pool) that route the message in this arm; ``rule``: the one that
        matched it in the configured order (the fallback of a rule order)."""
        if self.pool is not None:
            return rule, self.pool
        for candidate in self.rule_order:
            if candidate.matches(view):
                return candidate, candidate.pool
        return rule, rule.pool


@dataclass(frozen=True)
class Experiment:
    name: str
    by: str
    arms: tuple[Arm, ...]
    match: CompiledRule | None = None  # None: it splits one rule's messages

    @classmethod
    def of(cls, config: ExperimentConfig, rules: Mapping[str, CompiledRule]) -> Experiment:
        arms, upper = [], 0.0
        for arm in config.arms:
            upper += arm.split / 100
            order = tuple(rules[name] for name in arm.rule_order or ())
            arms.append(Arm(arm.name, upper, arm.pool, order))
        match = None
        if config.match is not None:
            match = CompiledRule.compile(RuleConfig(name=config.name, pool="", **config.match.model_dump()))
        return cls(config.name, config.by, tuple(arms), match)

    def key(self, facts: Facts) -> str:
        if self.by == "recipient_domain":
            return domain_of(facts.recipients[0]) if facts.recipients else ""
        # the queue id names one message on its host; without one (a dry run), its envelope
        return facts.queue_id or f"{facts.sender}\0{','.join(facts.recipients)}"

    def assign(self, facts: Facts) -> Arm:
        """The arm this message is in."""
        u = uniform(self.name, self.key(facts))
        for arm in self.arms:
            if u < arm.upper:
                return arm
        return self.arms[-1]


def uniform(name: str, key: str) -> float:
    """A uniform value in [0, 1) per (experiment, key)."""
    digest = hashlib.blake2b(f"{name}\0{key}".encode(), digest_size=8, person=b"sb-arm").digest()
    return int.from_bytes(digest, "big") / 2.0**64


class ExperimentTable:
    """The experiments by the rule they split, then those that split by a match."""

    def __init__(self, configs: list[ExperimentConfig], rules: Collection[CompiledRule]) -> None:
        by_name = {r.name: r for r in rules}
        experiments = [Experiment.of(c, by_name) for c in configs]
        self.by_rule = {c.rule: x for c, x in zip(configs, experiments, strict=True) if c.rule is not None}
        self.by_match = tuple(x for x in experiments if x.match is not None)
        self.names = [c.name for c in configs]

    def covering(self, rule: CompiledRule, view: MessageView, running: Collection[str]) -> Experiment | None:
        """The running experiment that splits this message: its rule's, else the first
        whose match selects it."""
        experiment = self.by_rule.get(rule.name)
        if experiment is not None and experiment.name in running:
            return experiment
        for experiment in self.by_match:
            if experiment.name in running and experiment.match is not None and experiment.match.matches(view):
                return experiment
        return None
