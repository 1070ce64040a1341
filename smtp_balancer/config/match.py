"""What a rule (or an experiment) matches: conditions on the message's facts.

Within one condition any listed value may match; all given conditions must match.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from smtp_balancer.config.base import Strict, check_cidrs


class SizeRange(Strict):
    min: int | None = Field(default=None, ge=0)
    """The smallest size that matches (bytes)"""
    max: int | None = Field(default=None, ge=0)
    """The largest size that matches (bytes)"""


class MatchConfig(Strict):
    sender: list[str] = Field(default_factory=list)
    """Envelope sender globs (news@*)"""
    sender_domain: list[str] = Field(default_factory=list)
    """Envelope sender domain globs."""
    sasl_username: list[str] = Field(default_factory=list)
    """Authenticated submission user names."""
    client: list[str] = Field(default_factory=list)
    """Client address CIDRs."""
    recipient_domain: list[str] = Field(default_factory=list)
    """Recipient domain globs; any recipient matches."""
    provider: list[str] = Field(default_factory=list)
    """Mailbox providers (google, microsoft, ...); any recipient's provider matches."""
    message_class: list[str] = Field(default_factory=list)
    """Message classes (the milter's, or Exim's header attributes)"""
    size: SizeRange | None = None
    """Message size bounds in bytes."""

    @field_validator("client")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return check_cidrs(values)
