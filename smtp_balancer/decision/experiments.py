"""Which arm of an experiment a message is in: deterministic, stable, sans I/O.

The arm comes from a hash of the experiment's name and a stable key (the
message's queue id, or its first recipient's domain), never from the draw's
random value, so the endpoint draw is independent of the assignment. An arm
only chooses the pool: suspensions, drains, quarantines and caps apply in it
as anywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from smtp_balancer.config.experiments import ExperimentConfig
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.providers import domain_of


@dataclass(frozen=True)
class Experiment:
    name: str
    by: str
    # (arm, pool, upper bound of its share in [0, 1)), in order
    arms: tuple[tuple[str, str, float], ...]

    @classmethod
    def of(cls, config: ExperimentConfig) -> Experiment:
        arms, upper = [], 0.0
        for arm in config.arms:
            upper += arm.split / 100
            arms.append((arm.name, arm.pool, upper))
        return cls(config.name, config.by, tuple(arms))

    def key(self, facts: Facts) -> str:
        if self.by == "recipient_domain":
            return domain_of(facts.recipients[0]) if facts.recipients else ""
        # the queue id names one message on its host; without one (a dry run), its envelope
        return facts.queue_id or f"{facts.sender}\0{','.join(facts.recipients)}"

    def assign(self, facts: Facts) -> tuple[str, str]:
        """(arm, pool) for this message."""
        u = uniform(self.name, self.key(facts))
        for arm, pool, upper in self.arms:
            if u < upper:
                return arm, pool
        return self.arms[-1][0], self.arms[-1][1]


def uniform(name: str, key: str) -> float:
    """A uniform value in [0, 1) per (experiment, key)."""
    digest = hashlib.blake2b(f"{name}\0{key}".encode(), digest_size=8, person=b"sb-arm").digest()
    return int.from_bytes(digest, "big") / 2.0**64


class ExperimentTable:
    """The experiments by the rule they split."""

    def __init__(self, configs: list[ExperimentConfig]) -> None:
        self.by_rule = {c.rule: Experiment.of(c) for c in configs}
        self.names = [c.name for c in configs]
