"""The YAML configuration, as pydantic models.

Field validation lives here; references between sections (a pool naming an
endpoint, a rule naming a pool) are checked in ``references.py`` so that they
are reported even when other fields are broken.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from smtp_balancer.config.adaptive import AdaptiveConfig
from smtp_balancer.config.base import (
    Domain,
    InboundDomain,
    Name,
    Strict,
)
from smtp_balancer.config.endpoints import MAX_WEIGHT, EndpointConfig, WarmupStep, same_host
from smtp_balancer.config.experiments import ExperimentConfig
from smtp_balancer.config.feedback import FeedbackConfig
from smtp_balancer.config.match import MatchConfig
from smtp_balancer.config.reputation import ReputationConfig
from smtp_balancer.config.requeue import RequeueConfig
from smtp_balancer.config.services import (
    DecisionConfig,
    EximConfig,
    MilterConfig,
    MxLookupConfig,
    PolicydConfig,
    RedisConfig,
)

OVERFLOW_KEYWORDS = ("defer", "ignore_caps", "default")


class PoolMember(Strict):
    endpoint: str
    """An endpoint's name."""
    weight: int = Field(default=1, ge=0, le=MAX_WEIGHT)
    """A relative integer: 1 and 2 send a third and two thirds; 0 takes it out."""


class PoolConfig(Strict):
    endpoints: list[PoolMember] = Field(min_length=1)
    """The pool's endpoints and their weights."""
    stickiness: Literal["none", "sender", "sender_domain", "sasl_username"] = "none"
    """Keep one sender's (sender domain's, SASL user's) mail on the same endpoints: none, sender,
    sender_domain or sasl_username."""
    spread: int = Field(default=1, ge=1, le=64)
    """With stickiness: each key sticks to this many endpoints."""
    # defer | ignore_caps | default | pool:<name>
    overflow: str = "default"
    """When every endpoint is capped, drained or suspended: defer, ignore_caps, default or pool:<name>."""
    # weights follow recent outcomes per provider (the `adaptive:` section)
    adaptive: bool = False
    """Weights follow recent outcomes per provider (the adaptive: section)"""

    @field_validator("overflow")
    @classmethod
    def _overflow(cls, value: str) -> str:
        if value in OVERFLOW_KEYWORDS or re.fullmatch(r"pool:[a-z0-9_-]+", value):
            return value
        raise ValueError("must be defer, ignore_caps, default or pool:<name>")


class RuleConfig(MatchConfig):
    name: Name
    """The rule's name, in logs, metrics and experiments."""
    pool: str
    """The pool its messages are routed through."""


class ProviderConfig(Strict):
    domains: list[str] = Field(default_factory=list)
    """Recipient domains of this provider."""
    mx_suffixes: list[str] = Field(default_factory=list)
    """MX host name suffixes that mark a domain as this provider's."""


class ShadowConfig(Strict):
    config: str = Field(min_length=1)
    """A candidate YAML (relative to this file's folder, or absolute): every decider also
    decides each message under it, with no effect on the route and no state written."""


class BalancerConfig(Strict):
    redis: RedisConfig = Field(default_factory=RedisConfig)
    """Where the fleet's shared state lives: one Redis (or its Sentinel set) for every host."""
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    """How a decision is made: its time budget, and what happens without Redis."""
    policyd: PolicydConfig = Field(default_factory=PolicydConfig)
    """The Postfix policy daemon (also answers Exim's ${readsocket})"""
    milter: MilterConfig = Field(default_factory=MilterConfig)
    """The milter: content-aware routing and sendmail submissions."""
    exim: EximConfig = Field(default_factory=EximConfig)
    """Settings for Exim hosts."""
    endpoints: dict[Name, EndpointConfig] = Field(min_length=1)
    """Each endpoint by name (its Postfix transport name, [a-z0-9_-]+): a source IP, or a relay."""
    pools: dict[Name, PoolConfig] = Field(min_length=1)
    """Named sets of endpoints with weights; rules route to a pool."""
    rules: list[RuleConfig] = Field(default_factory=list)
    """First match wins; all given conditions must match; lists match any."""
    providers: dict[Name, ProviderConfig] = Field(default_factory=dict)
    """Extends the built-in table: apple, comcast, fastmail, google, mailru, microsoft, proton,
    united-internet, yahoo, yandex, zoho (and "other")"""
    mx_lookup: MxLookupConfig = Field(default_factory=MxLookupConfig)
    """Providers of unknown recipient domains, from their MX hosts."""
    warmup_schedules: dict[Name, list[WarmupStep | int]] = Field(default_factory=dict)
    """Add to the built-ins: standard, conservative, fast."""
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    """The feedback daemon: delivery outcomes read from the MTA log, and the rules that act on them."""
    adaptive: AdaptiveConfig = Field(default_factory=AdaptiveConfig)
    """Weight factors from recent outcomes, for pools with adaptive: true."""
    experiments: list[ExperimentConfig] = Field(default_factory=list, max_length=50)
    """A/B tests of routing strategies."""
    requeue: RequeueConfig = Field(default_factory=RequeueConfig)
    """Moving queued mail off ineligible routes."""
    # sender domains reported apart in metrics and `status` (a subdomain counts for
    # its parent); all others are grouped as "other"
    tenants: list[Domain] = Field(default_factory=list, max_length=200)
    """Sender domains counted apart (subdomains too); the rest is "other"."""
    # domains this host (or fleet) receives mail for: local, virtual and relay (gateway)
    # domains, the return-path (DSN) and FBL domains. Mail to them is never routed;
    # ".example.com" covers the subdomains
    inbound_domains: list[InboundDomain] = Field(default_factory=list, max_length=100_000)
    """Domains this host receives mail for: never routed."""
    shadow: ShadowConfig | None = None
    """Shadow mode: decide every message under a candidate config too, and log both."""
    reputation: ReputationConfig = Field(default_factory=ReputationConfig)
    """What the providers' reputation exports (Postmaster Tools, SNDS) do to endpoints and tenants."""
    # set by the loader: the candidate shadow.config names, or why it could not be used
    _shadow_candidate: BalancerConfig | None = PrivateAttr(default=None)
    _shadow_error: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _adaptive_window_kept(self) -> BalancerConfig:
        if (
            any(p.adaptive for p in self.pools.values())
            and self.adaptive.window > self.feedback.rate_retention
        ):
            raise ValueError(
                f"adaptive.window ({self.adaptive.window}s) is longer than feedback.rate_retention"
                f" ({self.feedback.rate_retention}s), which keeps the counts it reads"
            )
        return self

    @property
    def shadow_candidate(self) -> BalancerConfig | None:
        """The candidate config of shadow mode, when it was read and is valid."""
        return self._shadow_candidate

    @property
    def shadow_error(self) -> str:
        """Why shadow.config could not be used ("" when it could, or is not set)."""
        return self._shadow_error

    def with_shadow(self, candidate: BalancerConfig | None, error: str = "") -> BalancerConfig:
        """This config with its shadow candidate (or the reason it has none) attached."""
        self._shadow_candidate, self._shadow_error = candidate, error
        return self

    def for_host(self, host: str) -> BalancerConfig:
        """The config as ``host`` renders it: its own endpoints and those of no host."""
        mine = {n: ep for n, ep in self.endpoints.items() if ep.host is None or same_host(ep.host, host)}
        return self.model_copy(update={"endpoints": mine})

    def endpoints_by_ip(self) -> dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str]:
        """Each address a provider may see mail from, with its endpoint: the bind
        addresses, and the public ones (NAT), which win a clash."""
        out: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
        for public in (False, True):
            for name, ep in self.endpoints.items():
                for value in ep.public_ips if public else ep.bind_addresses:
                    out[ipaddress.ip_address(value)] = name
        return out

    @property
    def managed_warmups(self) -> list[str]:
        """Endpoints whose warm-up step is a record in Redis (advance: sending_days, hold_on)."""
        return [n for n, ep in self.endpoints.items() if ep.warmup and ep.warmup.managed]

    @property
    def experiment_arms(self) -> frozenset[tuple[str, str]]:
        """Every configured (experiment, arm): the names an arm record may carry."""
        return frozenset((x.name, a.name) for x in self.experiments for a in x.arms)

    @property
    def adaptive_endpoints(self) -> set[str]:
        """Endpoints of the pools that opt in: the feedback daemon computes their factors."""
        return {m.endpoint for p in self.pools.values() if p.adaptive for m in p.endpoints}

    @property
    def milter_decides_smtpd(self) -> bool:
        """Whether the milter decides SMTP mail (else only sendmail/pickup submissions)."""
        if not self.milter.enabled:
            return False
        return self.milter.smtpd if self.milter.smtpd is not None else not self.policyd.enabled
