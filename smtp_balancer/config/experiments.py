"""The ``experiments:`` section: A/B tests of routing strategies.

An experiment covers the messages one rule matches (``rule``), or those of any
rule that a match written like a rule's selects (``match``), and splits them
between arms. An arm is another pool (its own members, weights, stickiness,
adaptive on or off) or another rule order (the first of its rules that matches
the message routes it). It runs only between ``smtp-balancer experiment start``
and ``stop`` (``{sb}:experiment:<name>`` in Redis).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from smtp_balancer.config.base import Name, Strict
from smtp_balancer.config.match import MatchConfig


class ArmConfig(Strict):
    name: Name
    # the arm's strategy: another pool, or another rule order
    pool: str | None = None
    rule_order: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    # the share of the experiment's messages, in percent
    split: int = Field(ge=1, le=99)

    @property
    def strategy(self) -> str:
        """In words, for the CLI: "pool bulk", or "rules a > b"."""
        return f"pool {self.pool}" if self.pool is not None else "rules " + " > ".join(self.rule_order or ())

    @model_validator(mode="after")
    def _strategy(self) -> ArmConfig:
        if (self.pool is None) == (self.rule_order is None):
            raise ValueError("an arm names either a pool or a rule_order")
        return self


class ExperimentConfig(Strict):
    name: Name
    # the messages it splits: those one rule routes, or those a match selects
    rule: str | None = None
    match: MatchConfig | None = None
    # message: each message drawn on its own (by queue id); recipient_domain: every
    # message to a domain keeps one arm
    by: Literal["message", "recipient_domain"] = "message"
    arms: list[ArmConfig] = Field(min_length=2, max_length=8)
    description: str = ""

    @property
    def covers(self) -> str:
        """The messages it splits, in words, for the CLI."""
        return f"rule {self.rule}'s messages" if self.rule is not None else "the messages its match selects"

    @model_validator(mode="after")
    def _arms(self) -> ExperimentConfig:
        if (self.rule is None) == (self.match is None):
            raise ValueError("an experiment names either a rule or a match")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be unique")
        if sum(a.split for a in self.arms) != 100:
            raise ValueError(f"the arms' splits add up to {sum(a.split for a in self.arms)}, not 100")
        return self
