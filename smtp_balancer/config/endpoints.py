"""An endpoint: a source IP or relay, its host, its warm-up schedule and its limits."""

from __future__ import annotations

import ipaddress
import re
from datetime import date
from typing import Literal

from pydantic import Field, field_validator, model_validator

from smtp_balancer.config.base import (
    Name,
    Strict,
    parse_nexthop,
)

HOST_NAME_RE = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$"


def same_host(named: str, host: str) -> bool:
    """Whether an endpoint's ``host:`` names ``host``, case aside: the same name, or the
    same first label where either is a short name (``mta1`` and ``mta1.example.com``)."""
    named, host = named.lower().rstrip("."), host.lower().rstrip(".")
    if named == host:
        return True
    short = "." not in named or "." not in host
    return short and named.split(".", 1)[0] == host.split(".", 1)[0]


MAX_WEIGHT = 1_000_000


class WarmupStep(Strict):
    daily: int = Field(ge=0)
    """Recipients a day (UTC) at this step."""
    hourly: int | None = Field(default=None, ge=0)
    """Recipients an hour (UTC) at this step (optional)"""


class HoldRule(Strict):
    """Judged on the schedule's last day: over the threshold, the schedule does not advance."""

    measure: Literal["deferred", "bounced", "complained"]
    """Deferred, bounced or complained: the share judged for the day."""
    above_percent: float = Field(gt=0, le=100)
    """The share of the day's attempts above which the rule acts."""
    # hold: stay on the same step; step_back: go back one step
    then: Literal["hold", "step_back"] = "hold"
    """Hold (keep the step) or step_back (one step down)"""
    # the least attempts (delivered messages, for complained) for the rule to judge
    min_attempts: int = Field(default=20, ge=1)
    """The least attempts that day for the rule to judge."""


class WarmupConfig(Strict):
    start: date
    """The warm-up's first day (UTC); before it the endpoint takes nothing."""
    # a built-in or configured schedule name, or an explicit list of steps
    schedule: str | list[WarmupStep | int]
    """A schedule's name (standard, conservative, fast, or one of warmup_schedules), or a list of steps: a
    day's cap, or {daily, hourly}."""
    # calendar: one step per UTC day from start; sending_days: a day counts only when the
    # endpoint used at least min_share of that day's cap (judged by the feedback daemon)
    advance: Literal["calendar", "sending_days"] = "calendar"
    """Calendar (a step each UTC day) or sending_days (a step each day it used min_share of its cap)."""
    min_share: float = Field(default=0.5, gt=0, le=1)
    """With advance: sending_days, a day counts when this share of its cap was used."""
    # outcomes that keep the schedule on its step, or step it back
    hold_on: list[HoldRule] = Field(default_factory=list)
    """Judged on the day a step was on; a step back wins over a hold."""
    # caps per mailbox provider beside the total: provider -> schedule (a name or
    # steps), by the same day of age; they end when the total schedule ends
    providers: dict[Name, str | list[WarmupStep | int]] = Field(default_factory=dict)
    """Caps per provider beside the total, by the same day of age."""

    @property
    def managed(self) -> bool:
        """Whether the step comes from the endpoint's record ({sb}:warmup:<ep>), not the calendar."""
        return self.advance == "sending_days" or bool(self.hold_on)


class EndpointConfig(Strict):
    kind: Literal["local", "relay"] = "local"
    """Local (own source IP) or relay (nexthop host:port)"""
    # the fleet host whose address this is: only that host routes mail through it, and
    # `render --host` renders it there alone (unset: any host where its address is)
    host: str | None = Field(default=None, pattern=HOST_NAME_RE, max_length=253)
    """The fleet host that owns it; unset: any host with its address."""
    # the source address: IPv4 or IPv6. An endpoint with one family sends over that
    # family only; bind_address6 (with an IPv4 bind_address) makes it dual-stack
    bind_address: str | None = None
    """IPv4 or IPv6; with one family, mail leaves over that family only."""
    bind_address6: str | None = None
    """Optional, with an IPv4 bind_address: dual-stack."""
    helo_name: str | None = None
    """The EHLO name Postfix or Exim gives on this route (should match the IP's PTR)"""
    # what receivers see behind NAT (DNSBL checks, complaint attribution), per family
    public_ip: str | None = None
    """For DNSBL checks (feedback daemon) and complaint attribution."""
    public_ip6: str | None = None
    """The same for the IPv6 address, behind NAT."""
    nexthop: str | None = None
    """Kind relay: the host:port mail is relayed to (always bracketed: no MX lookup)"""
    warmup: WarmupConfig | None = None
    """A warm-up: daily (and hourly) caps that grow day by day."""
    # fleet-wide messages per minute (any 60 s) per provider, or "all" for every
    # provider together; enforced through Redis at decision time, over it mail spills
    rate_caps: dict[Name, int] = Field(default_factory=dict)
    """Messages a minute (any 60 s), fleet-wide, per provider; all: every provider together."""
    tags: list[str] = Field(default_factory=list)
    """Labels for selecting endpoints on the CLI (--tag)"""

    @field_validator("rate_caps")
    @classmethod
    def _rates(cls, value: dict[str, int]) -> dict[str, int]:
        for provider, rate in value.items():
            if not 1 <= rate <= 1_000_000:
                raise ValueError(f"{provider}: a rate cap is 1 to 1000000 messages per minute, not {rate}")
        return value

    @field_validator("bind_address", "public_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                return str(ipaddress.ip_address(value))
            except ValueError as exc:
                raise ValueError(f"not an IP address: {value!r}") from exc
        return value

    @field_validator("bind_address6", "public_ip6")
    @classmethod
    def _ip6(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                return str(ipaddress.IPv6Address(value))
            except ValueError as exc:
                raise ValueError(f"not an IPv6 address: {value!r}") from exc
        return value

    @field_validator("helo_name")
    @classmethod
    def _helo(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", value):
            raise ValueError(f"not a host name: {value!r}")
        return value

    @field_validator("nexthop")
    @classmethod
    def _nexthop(cls, value: str | None) -> str | None:
        if value is not None:
            parse_nexthop(value)
        return value

    @model_validator(mode="after")
    def _relay_needs_nexthop(self) -> EndpointConfig:
        if self.kind == "relay" and not self.nexthop:
            raise ValueError("a relay endpoint needs nexthop (host:port)")
        if self.kind == "local" and self.nexthop:
            raise ValueError("nexthop is only for kind: relay")
        for v6, v4 in (("bind_address6", "bind_address"), ("public_ip6", "public_ip")):
            if getattr(self, v6) and getattr(self, v4) and ":" in getattr(self, v4):
                raise ValueError(f"{v4} is IPv6 and {v6} is set: put the IPv4 address in {v4}")
        return self

    @property
    def address4(self) -> str | None:
        """The IPv4 source address, if the endpoint has one."""
        return self.bind_address if self.bind_address and ":" not in self.bind_address else None

    @property
    def address6(self) -> str | None:
        """The IPv6 source address, if the endpoint has one."""
        if self.bind_address6:
            return self.bind_address6
        return self.bind_address if self.bind_address and ":" in self.bind_address else None

    @property
    def bind_addresses(self) -> tuple[str, ...]:
        """Every source address: mail leaves from these and no other."""
        return tuple(a for a in (self.address4, self.address6) if a)

    @property
    def public_ips(self) -> tuple[str, ...]:
        """The configured public addresses (behind NAT, what receivers see), both families."""
        return tuple(a for a in (self.public_ip, self.public_ip6) if a)

    @property
    def families(self) -> tuple[int, ...]:
        """The IP versions this endpoint sends over: (4,), (6,), (4, 6), or () for any."""
        return tuple(v for v, a in ((4, self.address4), (6, self.address6)) if a)
