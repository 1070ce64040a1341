"""The YAML configuration, as pydantic models.

Field validation lives here; references between sections (a pool naming an
endpoint, a rule naming a pool) are checked in ``references.py`` so that they
are reported even when other fields are broken.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from smtp_balancer.config.adaptive import AdaptiveConfig
from smtp_balancer.config.base import (
    Domain,
    InboundDomain,
    MetricsListen,
    Name,
    Strict,
    check_cidrs,
    check_listen,
    parse_nexthop,
)
from smtp_balancer.config.experiments import ExperimentConfig
from smtp_balancer.config.feedback import FeedbackConfig
from smtp_balancer.config.match import MatchConfig
from smtp_balancer.config.requeue import RequeueConfig

OVERFLOW_KEYWORDS = ("defer", "ignore_caps", "default")
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
    hourly: int | None = Field(default=None, ge=0)


class HoldRule(Strict):
    """Judged on the schedule's last day: over the threshold, the schedule does not advance."""

    measure: Literal["deferred", "bounced", "complained"]
    above_percent: float = Field(gt=0, le=100)
    # hold: stay on the same step; step_back: go back one step
    then: Literal["hold", "step_back"] = "hold"
    # the least attempts (delivered messages, for complained) for the rule to judge
    min_attempts: int = Field(default=20, ge=1)


class WarmupConfig(Strict):
    start: date
    # a built-in or configured schedule name, or an explicit list of steps
    schedule: str | list[WarmupStep | int]
    # calendar: one step per UTC day from start; sending_days: a day counts only when the
    # endpoint used at least min_share of that day's cap (judged by the feedback daemon)
    advance: Literal["calendar", "sending_days"] = "calendar"
    min_share: float = Field(default=0.5, gt=0, le=1)
    # outcomes that keep the schedule on its step, or step it back
    hold_on: list[HoldRule] = Field(default_factory=list)
    # caps per mailbox provider beside the total: provider -> schedule (a name or
    # steps), by the same day of age; they end when the total schedule ends
    providers: dict[Name, str | list[WarmupStep | int]] = Field(default_factory=dict)

    @property
    def managed(self) -> bool:
        """Whether the step comes from the endpoint's record ({sb}:warmup:<ep>), not the calendar."""
        return self.advance == "sending_days" or bool(self.hold_on)


class EndpointConfig(Strict):
    kind: Literal["local", "relay"] = "local"
    # the fleet host whose address this is: only that host routes mail through it, and
    # `render --host` renders it there alone (unset: any host where its address is)
    host: str | None = Field(default=None, pattern=HOST_NAME_RE, max_length=253)
    # the source address: IPv4 or IPv6. An endpoint with one family sends over that
    # family only; bind_address6 (with an IPv4 bind_address) makes it dual-stack
    bind_address: str | None = None
    bind_address6: str | None = None
    helo_name: str | None = None
    # what receivers see behind NAT (DNSBL checks, complaint attribution), per family
    public_ip: str | None = None
    public_ip6: str | None = None
    nexthop: str | None = None
    warmup: WarmupConfig | None = None
    # fleet-wide messages per minute (any 60 s) per provider, or "all" for every
    # provider together; enforced through Redis at decision time, over it mail spills
    rate_caps: dict[Name, int] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)

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


class PoolMember(Strict):
    endpoint: str
    weight: int = Field(default=1, ge=0, le=MAX_WEIGHT)


class PoolConfig(Strict):
    endpoints: list[PoolMember] = Field(min_length=1)
    stickiness: Literal["none", "sender", "sender_domain", "sasl_username"] = "none"
    spread: int = Field(default=1, ge=1, le=64)
    # defer | ignore_caps | default | pool:<name>
    overflow: str = "default"
    # weights follow recent outcomes per provider (the `adaptive:` section)
    adaptive: bool = False

    @field_validator("overflow")
    @classmethod
    def _overflow(cls, value: str) -> str:
        if value in OVERFLOW_KEYWORDS or re.fullmatch(r"pool:[a-z0-9_-]+", value):
            return value
        raise ValueError("must be defer, ignore_caps, default or pool:<name>")


class RuleConfig(MatchConfig):
    name: Name
    pool: str


class ProviderConfig(Strict):
    domains: list[str] = Field(default_factory=list)
    mx_suffixes: list[str] = Field(default_factory=list)


class TlsConfig(Strict):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True


class SentinelConfig(Strict):
    hosts: list[str] = Field(min_length=1)
    service_name: str
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None


class RedisConfig(Strict):
    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    # prefer password_file or $SMTP_BALANCER_REDIS_PASSWORD: the YAML is often world-readable
    password: SecretStr | None = None
    password_file: str | None = None
    prefix: Name = "sb"
    connect_timeout_ms: int = Field(default=50, ge=1, le=60_000)
    admin_timeout_ms: int = Field(default=2000, ge=1, le=60_000)
    max_connections: int = Field(default=64, ge=1, le=10_000)
    tls: TlsConfig | None = None
    sentinel: SentinelConfig | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^(redis|rediss|unix)://", value):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class DecisionConfig(Strict):
    budget_ms: int = Field(default=50, ge=1, le=10_000)
    # weights: decide from the YAML weights; default: answer DUNNO (MTA default transport)
    fallback: Literal["weights", "default"] = "weights"
    # after a Redis failure, decide locally for this long before trying Redis again
    retry_after_ms: int = Field(default=1000, ge=10, le=600_000)
    # how often the last-known live state (weights, drains, suspensions) is refreshed
    # for degraded decisions
    state_refresh_s: int = Field(default=5, ge=1, le=3600)
    # decide in memory from Redis-tracked state and quota leases (CLIENT TRACKING,
    # Redis 6+); off: one select.lua round trip per decision
    local: bool = True
    # how often each decider checks that its local endpoints' bind addresses are on
    # this host; an endpoint whose address is not gets no mail from this host (0: off)
    bind_check_s: float = Field(default=5, ge=0, le=3600)


class MxLookupConfig(Strict):
    """Decision-time MX lookup for recipient domains the provider table does not know."""

    enabled: bool = True
    # resolvers (address or address:port); empty means /etc/resolv.conf
    nameservers: list[str] = Field(default_factory=list)
    # the longest a decision waits for an answer; a late answer serves the next message
    budget_ms: int = Field(default=20, ge=0, le=5_000)
    lookup_timeout_ms: int = Field(default=2_000, ge=10, le=30_000)
    cache_size: int = Field(default=100_000, ge=100)
    min_ttl_s: int = Field(default=300, ge=0)
    max_ttl_s: int = Field(default=86_400, ge=1)
    negative_ttl_s: int = Field(default=3_600, ge=0)
    failure_ttl_s: int = Field(default=60, ge=0)
    max_pending: int = Field(default=1_000, ge=1)


class PolicydConfig(Strict):
    # render the policy service lines into main.cf (off for a milter-only setup)
    enabled: bool = True
    # inet:host:port or unix:/path; loopback by default
    listen: list[str] = Field(default_factory=lambda: ["inet:127.0.0.1:10040"], min_length=1)
    unix_mode: str = Field(default="0660", pattern=r"^0?[0-7]{3}$")
    unix_owner: str | None = None
    unix_group: str | None = None
    # Postfix's policy client closes idle connections after 300 s (max_idle); outlive it a little
    idle_timeout_s: int = Field(default=330, ge=1, le=86_400)
    max_connections: int = Field(default=4096, ge=1, le=1_000_000)
    # worker processes, each deciding on its own core; 1: this process serves alone.
    # Above 1 a supervisor listens and passes each connection to the least busy worker
    workers: int = Field(default=1, ge=1, le=64)
    max_concurrent_decisions: int = Field(default=256, ge=1, le=100_000)
    # "" disables the /metrics endpoint
    metrics_listen: MetricsListen = "127.0.0.1:9480"
    # the timeout Postfix waits for us; rendered into main.cf. A decision takes
    # milliseconds: this bounds what a frozen daemon costs each policy request
    postfix_timeout_s: int = Field(default=3, ge=1, le=300)
    # Postfix's attempts per request (rendered try_limit). 2: after a failure Postfix
    # closes the connection and retries once, 1 s later, on a fresh one. 1: no retry,
    # but Postfix keeps a timed-out connection, and every later request of that smtpd
    # process fails at once until its SMTP session ends (mail goes unrouted)
    postfix_try_limit: int = Field(default=2, ge=1, le=5)
    # ask the daemon at RCPT too, to learn every recipient of multi-recipient messages
    # (rendered into main.cf); off saves a round trip per recipient, but then
    # provider-scoped suspensions only see the recipient Postfix names at END-OF-MESSAGE
    collect_recipients: bool = True
    join_max_instances: int = Field(default=50_000, ge=100)
    join_ttl_s: int = Field(default=900, ge=10)
    # recipients held for open messages, in bytes: a client that sends RCPTs and never
    # DATA cannot make the daemon hold more than this
    join_max_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)

    @field_validator("listen")
    @classmethod
    def _listen(cls, values: list[str]) -> list[str]:
        return [check_listen(v) for v in values]


class MilterConfig(Strict):
    # render the milter lines into main.cf and the map files
    enabled: bool = False
    # decide SMTP mail too (smtpd_milters), not only local submissions (non_smtpd_milters).
    # Unset: only when the policy daemon is off, so that no message is decided twice:
    # every decision reserves warm-up quota
    smtpd: bool | None = None
    # a unix socket: over inet: libmilter's small writes stall on Nagle + delayed ACK (DESIGN.md)
    listen: str = "unix:/run/smtp-balancer/milter.sock"
    # Postfix's smtpd and cleanup run in group postfix: they alone may connect
    socket_mode: str = Field(default="0660", pattern=r"^0?[0-7]{3}$")
    socket_group: str | None = Field(default="postfix", pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    route_header: str = Field(default="X-Egress-Route", pattern=r"^[A-Za-z][A-Za-z0-9-]*$")
    # an informational header naming pool and rule; "" (the default) adds none
    info_header: str = Field(default="", pattern=r"^([A-Za-z][A-Za-z0-9-]*)?$")
    class_header: str = Field(default="X-Mail-Class", pattern=r"^[A-Za-z][A-Za-z0-9-]*$")
    classes: list[Name] = Field(default_factory=lambda: ["transactional", "bulk"])
    default_class: Name = "transactional"
    # the explicit class header counts only from these clients, SASL-authenticated
    # clients and local submissions (sendmail): never from strangers
    trusted_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    timeout_s: int = Field(default=30, ge=1, le=600)
    # the longest a message waits on the engine; past it the message gets no route
    # header (Postfix's default transport) and the degraded counter rises
    decision_timeout_ms: int = Field(default=1000, ge=1, le=60_000)
    metrics_listen: MetricsListen = "127.0.0.1:9481"
    # Postfix's waits on the milter, rendered into main.cf: what a frozen milter costs
    # each connection (connect), each SMTP command, and each message at its end (content)
    postfix_connect_timeout_s: int = Field(default=1, ge=1, le=300)
    postfix_command_timeout_s: int = Field(default=3, ge=1, le=300)
    postfix_content_timeout_s: int = Field(default=10, ge=1, le=600)
    # where `render postfix --write-maps` puts the regexp maps main.cf refers to
    postfix_maps_dir: str = "/etc/postfix/smtp-balancer"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return check_listen(value)

    @field_validator("trusted_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        return check_cidrs(values)

    @model_validator(mode="after")
    def _default_class_known(self) -> MilterConfig:
        if self.default_class not in self.classes:
            raise ValueError(f"default_class {self.default_class!r} is not in classes")
        return self


class EximConfig(Strict):
    """What `render exim` needs beyond the endpoints and the policy daemon's socket."""

    # where the rendered Exim files live: main.conf printed to stdout reads the routes
    # file from here (`render exim --write DIR` names DIR instead)
    config_dir: str = "/etc/exim4/smtp-balancer"
    # the longest an SMTP session waits on the policy daemon before the default route
    readsocket_timeout_s: int = Field(default=2, ge=1, le=60)

    @field_validator("config_dir")
    @classmethod
    def _dir(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._/-]*", value):
            raise ValueError(f"must be an absolute path of letters, digits and ._-/: {value!r}")
        return value.rstrip("/") or "/"


class BalancerConfig(Strict):
    redis: RedisConfig = Field(default_factory=RedisConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    policyd: PolicydConfig = Field(default_factory=PolicydConfig)
    milter: MilterConfig = Field(default_factory=MilterConfig)
    exim: EximConfig = Field(default_factory=EximConfig)
    endpoints: dict[Name, EndpointConfig] = Field(min_length=1)
    pools: dict[Name, PoolConfig] = Field(min_length=1)
    rules: list[RuleConfig] = Field(default_factory=list)
    providers: dict[Name, ProviderConfig] = Field(default_factory=dict)
    mx_lookup: MxLookupConfig = Field(default_factory=MxLookupConfig)
    warmup_schedules: dict[Name, list[WarmupStep | int]] = Field(default_factory=dict)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    adaptive: AdaptiveConfig = Field(default_factory=AdaptiveConfig)
    experiments: list[ExperimentConfig] = Field(default_factory=list, max_length=50)
    requeue: RequeueConfig = Field(default_factory=RequeueConfig)
    # sender domains reported apart in metrics and `status` (a subdomain counts for
    # its parent); all others are grouped as "other"
    tenants: list[Domain] = Field(default_factory=list, max_length=200)
    # domains this host (or fleet) receives mail for: local, virtual and relay (gateway)
    # domains, the return-path (DSN) and FBL domains. Mail to them is never routed;
    # ".example.com" covers the subdomains
    inbound_domains: list[InboundDomain] = Field(default_factory=list, max_length=100_000)

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

    def for_host(self, host: str) -> BalancerConfig:
        """The config as ``host`` renders it: its own endpoints and those of no host."""
        mine = {n: ep for n, ep in self.endpoints.items() if ep.host is None or same_host(ep.host, host)}
        return self.model_copy(update={"endpoints": mine})

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
