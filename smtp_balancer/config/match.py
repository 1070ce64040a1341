"""What a rule (or an experiment) matches: conditions on the message's facts.

Within one condition any listed value may match; all given conditions must match.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from smtp_balancer.config.base import Strict, check_cidrs


class SizeRange(Strict):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


class MatchConfig(Strict):
    sender: list[str] = Field(default_factory=list)
    sender_domain: list[str] = Field(default_factory=list)
    sasl_username: list[str] = Field(default_factory=list)
    client: list[str] = Field(default_factory=list)
    recipient_domain: list[str] = Field(default_factory=list)
    provider: list[str] = Field(default_factory=list)
    message_class: list[str] = Field(default_factory=list)
    size: SizeRange | None = None

    @field_validator("client")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return check_cidrs(values)
