"""The ``reputation:`` section: what the providers' exports (Google Postmaster Tools,
Microsoft SNDS) may do to an endpoint, in the response rules' action vocabulary."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from smtp_balancer.config.base import Name, Strict
from smtp_balancer.config.feedback import Action, Seconds
from smtp_balancer.config.yaml_reader import shipped_pack

Source = Literal["postmaster", "snds"]
# per IP (so per endpoint): categories, or numbers that a rule's `above` compares
IP_SIGNALS = {
    "postmaster": {"ip_reputation": ("HIGH", "MEDIUM", "LOW", "BAD")},
    "snds": {
        "filter_result": ("GREEN", "YELLOW", "RED"),
        "blocked": ("yes", "no"),
        "complaint_rate": (),  # percent
        "trap_hits": (),
    },
}
# per sending domain (so per tenant, `tenants:`); spam ratios are compared in percent
DOMAIN_SIGNALS = {
    "postmaster": {
        "spam_ratio": (),
        "domain_reputation": ("HIGH", "MEDIUM", "LOW", "BAD"),
        "honor_unsubscribe": None,  # a compliance status: whatever Google names it
        "one_click_unsubscribe": None,
    },
    "snds": {},
}
RATIO_SIGNALS = frozenset({"spam_ratio"})  # exports say 0.003; a rule's `above` says 0.3 (%)
DOMAIN_ACTIONS = ("warn", "hold_tenant", "move_tenant")
# whose mail a source speaks for: the provider an action covers by default
SOURCE_PROVIDER = {"postmaster": "google", "snds": "microsoft"}


class ReputationRuleConfig(Strict):
    """Act on (endpoint, provider) when an imported record about one of its IPs says
    so; or on a tenant, when one about its sending domain does."""

    name: Name
    """The rule's name (unique), in the action's reason and the logs."""
    source: Source
    """postmaster (Google Postmaster Tools) or snds (Microsoft SNDS)."""
    signal: Literal[
        "ip_reputation",
        "filter_result",
        "blocked",
        "complaint_rate",
        "trap_hits",
        "spam_ratio",
        "domain_reputation",
        "honor_unsubscribe",
        "one_click_unsubscribe",
    ]
    """What it reads. Per IP: ip_reputation (postmaster); filter_result, blocked,
    complaint_rate, trap_hits (snds). Per sending domain (postmaster): spam_ratio,
    domain_reputation, honor_unsubscribe, one_click_unsubscribe."""
    values: list[str] = Field(default_factory=list)
    """The values that trip it (BAD, RED, yes); for categories."""
    above: float | None = None
    """The number it must pass (complaint_rate and spam_ratio in percent, trap_hits); for numbers."""
    provider: Name | None = None
    """Whose mail the action covers; default: google for postmaster, microsoft for snds."""
    action: Action | Literal["warn", "hold_tenant", "move_tenant"] = "suspend_provider"
    """Per IP: suspend_provider, suspend_all, quarantine, throttle or slow. Per domain:
    warn (said by the import), hold_tenant (its new mail waits in the hold queue), or
    move_tenant (its new mail goes to `pool`)."""
    pool: Name | None = None
    """move_tenant: the pool the tenant's new mail goes to (a quarantine pool, or a slow one)."""
    factor: float = Field(default=0.5, gt=0, lt=1)
    """Throttle: the weight is multiplied by this; slow: the rate cap."""
    duration: Seconds = Field(default=86_400, ge=1)
    """How long the action lasts: the exports describe whole days."""
    description: str = ""
    """Free text, shown with the action."""

    @property
    def for_provider(self) -> str:
        return self.provider or SOURCE_PROVIDER[self.source]

    @property
    def per_domain(self) -> bool:
        return self.signal in DOMAIN_SIGNALS[self.source]

    @model_validator(mode="after")
    def _condition(self) -> ReputationRuleConfig:
        signals = {**IP_SIGNALS[self.source], **DOMAIN_SIGNALS[self.source]}
        if self.signal not in signals:
            raise ValueError(
                f"{self.source} has no signal {self.signal} (it has {', '.join(sorted(signals))})"
            )
        if self.per_domain != (self.action in DOMAIN_ACTIONS):
            if self.per_domain:
                raise ValueError(
                    f"{self.signal} is about a sending domain: its action is warn, hold_tenant or move_tenant"
                )
            raise ValueError(
                f"{self.signal} is about an IP: warn and the tenant actions are for a domain's signals"
            )
        if (self.action == "move_tenant") != (self.pool is not None):
            raise ValueError("move_tenant needs pool, and pool is for move_tenant only")
        categories = signals[self.signal]
        if categories is None:  # any status the provider names
            if self.above is not None or not self.values:
                raise ValueError(f"{self.signal} is a status: give values (NEEDS_WORK, ...)")
        elif categories:
            if self.above is not None or not self.values:
                raise ValueError(f"{self.signal} is a category: give values (of {', '.join(categories)})")
            wrong = [v for v in self.values if v not in categories]
            if wrong:
                raise ValueError(f"{self.signal} values are {', '.join(categories)}, not {', '.join(wrong)}")
        elif self.values or self.above is None:
            raise ValueError(f"{self.signal} is a number: give above")
        return self


class ReputationConfig(Strict):
    rules: list[ReputationRuleConfig] = Field(default_factory=list)
    """Your rules, tried before the shipped ones."""
    builtin_rules: bool = True
    """The shipped rules too: Google BAD suspends, LOW throttles; SNDS RED or blocked
    suspends; a domain's spam rate over 0.3% holds its tenant, over 0.1% warns."""
    max_age_days: int = Field(default=3, ge=0, le=30)
    """A record about a day longer ago than this is kept, but acts on nothing."""
    retention_days: int = Field(default=14, ge=1, le=400)
    """How long a record is kept after the day it describes."""
    hold_warmup_below: Literal["HIGH", "MEDIUM", "LOW"] | None = "MEDIUM"
    """A managed warm-up keeps its step while an IP's newest verdict is under this (MEDIUM: LOW,
    BAD, SNDS RED or blocked); null: never."""

    @model_validator(mode="after")
    def _unique(self) -> ReputationConfig:
        names = [r.name for r in self.rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"reputation rule names must be unique: {', '.join(twice)}")
        return self

    @property
    def active_rules(self) -> list[ReputationRuleConfig]:
        return self.rules + (builtin_reputation_rules() if self.builtin_rules else [])


def builtin_reputation_rules() -> list[ReputationRuleConfig]:
    """The shipped rules (reputation_rules.yaml beside this module; docs/reputation.md lists them)."""
    return shipped_pack("smtp_balancer.config", "reputation_rules.yaml", ReputationRuleConfig)
