"""The daemons' and Redis's settings: redis, decision, mx_lookup, policyd, milter, exim."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from smtp_balancer.config.base import (
    MetricsListen,
    Name,
    Strict,
    check_cidrs,
    check_listen,
)


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
