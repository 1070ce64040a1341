"""The ``experiments:`` section: A/B tests of routing strategies.

An experiment covers the messages one rule matches and splits them between
arms, each an alternative pool (its own members, weights, stickiness, adaptive
on or off). It runs only between ``smtp-balancer experiment start`` and
``stop`` (``{sb}:experiment:<name>`` in Redis).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from smtp_balancer.config.base import Name, Strict


class ArmConfig(Strict):
    name: Name
    pool: str
    # the share of the experiment's messages, in percent
    split: int = Field(ge=1, le=99)


class ExperimentConfig(Strict):
    name: Name
    # the rule whose messages the experiment splits
    rule: str
    # message: each message drawn on its own (by queue id); recipient_domain: every
    # message to a domain keeps one arm
    by: Literal["message", "recipient_domain"] = "message"
    arms: list[ArmConfig] = Field(min_length=2, max_length=8)
    description: str = ""

    @model_validator(mode="after")
    def _arms(self) -> ExperimentConfig:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be unique")
        if sum(a.split for a in self.arms) != 100:
            raise ValueError(f"the arms' splits add up to {sum(a.split for a in self.arms)}, not 100")
        return self
