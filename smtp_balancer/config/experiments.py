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
    """The arm's name (unique in the experiment)"""
    # the arm's strategy: another pool, or another rule order
    pool: str | None = None
    """The pool this arm routes through."""
    rule_order: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    """Instead of pool: the first of these rules that matches routes."""
    # the share of the experiment's messages, in percent
    split: int = Field(ge=1, le=99)
    """The percentage of the experiment's messages this arm gets."""

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
    """The experiment's name, in `experiment start|stop|report`."""
    # the messages it splits: those one rule routes, or those a match selects
    rule: str | None = None
    """The rule whose messages it splits."""
    match: MatchConfig | None = None
    """Instead of rule: conditions written like a rule's, over any rule's messages."""
    # message: each message drawn on its own (by queue id); recipient_domain: every
    # message to a domain keeps one arm
    by: Literal["message", "recipient_domain"] = "message"
    """Message (by queue id) or recipient_domain."""
    arms: list[ArmConfig] = Field(min_length=2, max_length=8)
    """2 to 8 arms whose splits add up to 100; the first is the control."""
    description: str = ""
    """Free text, shown in the report."""

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
