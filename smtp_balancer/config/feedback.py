"""The ``feedback:`` section: log following, response rules, rate rules, DNSBL, relay probes."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from smtp_balancer.config.base import Domain, MetricsListen, Name, Strict, parse_hostport
from smtp_balancer.durations import parse_duration

ACTIONS = ("suspend_provider", "suspend_all", "quarantine", "throttle", "slow")
Action = Literal["suspend_provider", "suspend_all", "quarantine", "throttle", "slow"]
BounceClass = Literal[
    "invalid_recipient",
    "mailbox_full",
    "policy_block",
    "spam_content",
    "rate_limited",
    "dns_failure",
    "tls_failure",
    "other",
]
STATUSES = ("deferred", "bounced", "expired", "sent")


def _seconds(value: object) -> object:
    # 90, "90", "30m", "1h30m" -> seconds; anything else is left for int validation to refuse
    return parse_duration(value) if isinstance(value, str) else value


# a duration as operators write it, stored as whole seconds
Seconds = Annotated[int, BeforeValidator(_seconds)]


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression ({exc}): {value!r}") from exc
    return value


# a Python regular expression, refused at load time when it does not compile
Regex = Annotated[str, AfterValidator(_regex)]


class Trigger(Strict):
    # the rule acts at exactly the count-th match within period (1 = immediately)
    count: int = Field(default=1, ge=1, le=100_000)
    """Matches needed."""
    period: Seconds = 60
    """Within this long."""


class BounceClassRule(Strict):
    """One row of the bounce-class table: the first row that fits names the class."""

    class_: BounceClass = Field(alias="class")
    """The bounce class this row names: invalid_recipient, mailbox_full, policy_block, spam_content,
    rate_limited, dns_failure, tls_failure or other."""
    # exact enhanced status codes (5.1.1); empty: any
    dsn: list[Annotated[str, Field(pattern=r"^[245]\.\d{1,3}\.\d{1,3}$")]] = Field(default_factory=list)
    """Exact enhanced status codes (5.7.1); empty: any."""
    # a Python regex searched in the reply; empty: any
    match: Regex = ""
    """A Python regex searched in the reply; empty: any."""

    @model_validator(mode="after")
    def _something(self) -> BounceClassRule:
        if not self.dsn and not self.match:
            raise ValueError("give dsn, match or both")
        return self


class ResponseRuleConfig(Strict):
    name: Name
    """The rule's name (unique), in logs, metrics and the keys of its strikes."""
    # a Python regex searched in the remote server's response text ("" matches any)
    match: Regex = ""
    """A Python regex searched in the reply text ("" = any)"""
    # bounce classes the reply must be in (feedback.bounce_classes); empty: any
    classes: list[BounceClass] = Field(default_factory=list)
    """Bounce classes the reply must be in; empty: any."""
    # providers the rule applies to; empty means any provider
    providers: list[str] = Field(default_factory=list)
    """The providers it watches; empty: any."""
    statuses: list[Literal["deferred", "bounced", "expired", "sent"]] = Field(
        default_factory=lambda: ["deferred", "bounced"]
    )
    """Delivery statuses it looks at: deferred, bounced, expired, sent."""
    trigger: Trigger = Field(default_factory=Trigger)
    """Act at the count-th match within period, fleet-wide."""
    action: Action = "suspend_provider"
    """What it does: suspend_provider, suspend_all, quarantine, throttle or slow."""
    # throttle: the endpoint's weight is multiplied by this while it lasts; slow: its
    # rate cap for the provider (endpoints.*.rate_caps) is
    factor: float = Field(default=0.5, gt=0, lt=1)
    """Throttle: the weight is multiplied by this; slow: the rate cap."""
    duration: Seconds = 600
    """How long the action lasts, the first time."""
    # repeats within `window` multiply the duration by `growth`, up to max_duration
    growth: float = Field(default=2.0, ge=1, le=100)
    """A repeat within window multiplies the duration by this."""
    window: Seconds = 21_600
    """Repeats within this long grow the duration."""
    max_duration: Seconds = 43_200
    """The longest the duration grows to."""
    description: str = ""
    """Free text, shown with the action."""
    # move mail already queued on the endpoint when this rule suspends or quarantines
    # it (`smtp-balancer requeue`); default: on for rules that match deferrals
    # (throttles, temporary refusals), off for the others
    requeue: bool | None = None
    """Move mail already queued on the route it suspends or quarantines; null: yes when statuses has
    deferred."""

    @property
    def moves_queued_mail(self) -> bool:
        return ("deferred" in self.statuses) if self.requeue is None else self.requeue

    @model_validator(mode="after")
    def _condition(self) -> ResponseRuleConfig:
        if not self.match and not self.classes:
            raise ValueError("give match, classes or both")
        return self


class RateRuleConfig(Strict):
    """Act on (endpoint, provider) when deferrals, bounces or complaints pass a share.

    deferred, bounced and failed are shares of delivery attempts; complained is
    spam complaints (`smtp-balancer fbl`) per delivered message.
    """

    name: Name
    """The rule's name (unique)"""
    providers: list[str] = Field(default_factory=list)
    """The providers it judges, each on its own; empty: every provider."""
    measure: Literal["deferred", "bounced", "failed", "complained"] = "deferred"
    """Deferred, bounced, failed (shares of attempts) or complained (complaints per delivered message)"""
    # trip above this percentage, over at least min_attempts within window
    above_percent: float = Field(gt=0, le=100)
    """Trips above this share."""
    # hysteresis: once tripped, the rule re-arms only after the rate falls below this
    recover_below_percent: float = Field(ge=0, le=100)
    """Re-arms only below this share."""
    # the minimum sample: attempts, or delivered messages for complained
    min_attempts: int = Field(default=20, ge=1)
    """The least sample: attempts (delivered, for complained)"""
    window: Seconds = 600
    """The outcomes judged: at most 1d, and at most rate_retention."""
    action: Action = "suspend_provider"
    """What it does: suspend_provider, suspend_all, quarantine, throttle or slow."""
    # throttle: the endpoint's weight for the provider is multiplied by this; slow:
    # its rate cap for the provider (endpoints.*.rate_caps) is
    factor: float = Field(default=0.5, gt=0, lt=1)
    """Throttle: the provider's weight is multiplied by this; slow: its rate cap."""
    duration: Seconds = 900
    """How long the action lasts."""
    # move mail already queued on the endpoint when this rule trips; default: on when
    # it measures deferrals
    requeue: bool | None = None
    """Move queued mail when it trips; null: yes for measure deferred."""

    @property
    def moves_queued_mail(self) -> bool:
        return (self.measure == "deferred") if self.requeue is None else self.requeue

    @model_validator(mode="after")
    def _hysteresis(self) -> RateRuleConfig:
        if self.recover_below_percent > self.above_percent:
            raise ValueError("recover_below_percent must not exceed above_percent")
        if self.window > 86_400:
            raise ValueError("window must be at most 1d")
        if self.duration < 1:
            raise ValueError("duration must be at least 1s")
        return self


class DnsblZone(Strict):
    zone: str = Field(pattern=r"^[A-Za-z0-9.-]+$")
    """The DNSBL zone (zen.spamhaus.org)"""
    # answers that mean "listed"; by default 127.0.0.2-127.0.0.255, except the
    # 127.255.255.0/24 range, which Spamhaus uses for "query refused"
    listed: list[str] = Field(default_factory=list)
    """The answers that mean listed; []: 127.0.0.2-255, not 127.255.255.x."""


class DnsblConfig(Strict):
    zones: list[DnsblZone] = Field(default_factory=list)
    """The DNSBL zones to check."""
    # resolvers to ask (host or host:port); empty means the system's resolv.conf.
    # Spamhaus refuses queries through large public resolvers: use your own.
    nameservers: list[str] = Field(default_factory=list)
    """Your own resolver: Spamhaus refuses the big public ones."""
    interval: Seconds = 300
    """How often each public IP is checked."""
    timeout_ms: int = Field(default=2000, ge=10, le=60_000)
    """How long one lookup may take."""

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, values: list[str]) -> list[str]:
        for v in values:
            parse_nameserver(v)
        return values


def parse_nameserver(value: str) -> tuple[str, int]:
    """``192.0.2.53``, ``127.0.0.1:5353`` or ``[::1]:53`` -> (address, port)."""
    try:
        ipaddress.ip_address(value)
        return value, 53
    except ValueError:
        host, port = parse_hostport(value)
    ipaddress.ip_address(host)  # resolvers are addresses: no DNS to find DNS
    return host, port


class ProbeConfig(Strict):
    interval: Seconds = 30
    """How often each relay endpoint is probed (connect, EHLO, QUIT)"""
    timeout_ms: int = Field(default=5000, ge=10, le=120_000)
    """How long one probe may take."""
    fail_after: int = Field(default=3, ge=1, le=100)
    """Failures in a row before quarantine."""
    recover_after: int = Field(default=2, ge=1, le=100)
    """Successes in a row before it is restored."""


class TenantHoldConfig(Strict):
    """Hold a tenant's new mail (Postfix's hold queue) when its spam complaints pass a share."""

    above_percent: float = Field(default=0.3, gt=0, le=100)
    """Complaints per delivered message, last 24 h: Gmail's and Yahoo's ceiling is 0.3%."""
    min_delivered: int = Field(default=1000, ge=1)
    """The least sample: messages the tenant delivered in those 24 h."""
    duration: Seconds = Field(default=86_400, ge=60)
    """How long the hold lasts, unless `smtp-balancer tenant release` ends it first."""
    pool: Name | None = None
    """Move the tenant's new mail to this pool (a quarantine pool, or a slow one) instead of holding it."""


class ComplaintsConfig(Strict):
    """`smtp-balancer fbl`: ARF spam-complaint reports (RFC 5965)."""

    # reports that cannot be used (malformed, too large, not attributable) are saved
    # here as files, never dropped; with keep: all, every report is
    keep_dir: str = "/var/lib/smtp-balancer/fbl"
    """Unusable reports are kept here, byte for byte."""
    keep: Literal["unusable", "all"] = "unusable"
    """Which reports are kept in keep_dir: unusable, or all (the counted ones too)."""
    # a larger report is kept unparsed
    max_report_bytes: int = Field(default=10 * 1024 * 1024, ge=4096, le=256 * 1024 * 1024)
    """A larger report is kept unparsed (4 KiB to 256 MiB)"""
    # the reporter's domain (the report's From, or a parent domain) -> provider;
    # checked before the built-in table (complaints/attribute.py)
    reporters: dict[Domain, Name] = Field(default_factory=dict)
    """Reporter domain (or a parent) -> provider, before the built-in table."""
    # Feedback-Type values that count as a complaint
    feedback_types: list[Annotated[str, Field(pattern=r"^[a-z-]+$")]] = Field(
        default_factory=lambda: ["abuse"], min_length=1
    )
    """The Feedback-Type values that count as a complaint."""
    tenant_hold: TenantHoldConfig | None = None
    """Hold a tenant's new mail when its complaint rate passes above_percent (`tenants:`); null: never."""


class FeedbackConfig(Strict):
    # the Postfix log: maillog_file, or a syslog file such as /var/log/mail.log;
    # for Exim its main log (/var/log/exim4/mainlog on Debian)
    log_file: str = "/var/log/mail.log"
    """Postfix's maillog_file, or a syslog file; or Exim's mainlog."""
    # which MTA wrote log_file: postfix, or exim (its transports as `render exim` names them)
    log_format: Literal["postfix", "exim"] = "postfix"
    """postfix, or exim (Exim's main log, transports as rendered)."""
    # with no saved position: "end" skips history, "beginning" reads the whole file
    start_at: Literal["end", "beginning"] = "end"
    """With no saved position: end skips history, beginning reads it all."""
    # names this follower's saved position in Redis; one per MTA host (default: hostname)
    instance: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    """Names this host's saved position; "" means the hostname. One daemon at a time holds it."""
    metrics_listen: MetricsListen = "127.0.0.1:9482"
    """The feedback daemon's /metrics (host:port); "" disables it."""
    poll_interval_ms: int = Field(default=200, ge=10, le=60_000)
    """How often the log is read when it has no new lines."""
    batch_lines: int = Field(default=1000, ge=1, le=100_000)
    """Lines per Redis transaction."""
    # the shipped rule pack (smtp_balancer/feedback/rules.yaml) runs after your own rules
    builtin_rules: bool = True
    """The shipped rule pack runs after your own rules."""
    # bounce and deferral classes: your rows first, then the shipped table
    # (smtp_balancer/feedback/bounce_classes.yaml)
    bounce_classes: list[BounceClassRule] = Field(default_factory=list)
    """Your rows first; the first row that fits names the class."""
    builtin_bounce_classes: bool = True
    """After your rows, the shipped table (smtp_balancer/feedback/bounce_classes.yaml)"""
    response_rules: list[ResponseRuleConfig] = Field(default_factory=list)
    """Your rules on single replies, before the shipped ones."""
    rate_rules: list[RateRuleConfig] = Field(default_factory=list)
    """Rules on the share of bad outcomes over a window."""
    # per-minute outcome buckets are kept this long for rates and `status`
    rate_retention: Seconds = 86_400
    """Per-minute outcome counts are kept this long."""
    # how often the shared state (states, suspensions, warm-up) is exported as gauges
    state_interval: Seconds = 15
    """How often the shared state is exported as gauges."""
    dnsbl: DnsblConfig = Field(default_factory=DnsblConfig)
    """DNSBL checks of the endpoints' public IPs: a listed endpoint is quarantined."""
    probes: ProbeConfig = Field(default_factory=ProbeConfig)
    """SMTP probes of relay endpoints: connect, EHLO, QUIT."""
    complaints: ComplaintsConfig = Field(default_factory=ComplaintsConfig)
    """How `smtp-balancer fbl` reads and counts spam complaints (ARF reports)."""

    @property
    def complaint_rules(self) -> list[RateRuleConfig]:
        """The rate rules on complaints: `fbl` runs them per complaint, the daemon once a minute."""
        return [r for r in self.rate_rules if r.measure == "complained"]

    @model_validator(mode="after")
    def _unique_names(self) -> FeedbackConfig:
        names = [r.name for r in self.response_rules] + [r.name for r in self.rate_rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {', '.join(dupes)}")
        for rule in self.rate_rules:
            if rule.window > self.rate_retention:
                raise ValueError(
                    f"rate rule {rule.name}: window {rule.window}s is longer than "
                    f"rate_retention ({self.rate_retention}s), which keeps the counts it reads"
                )
        return self
