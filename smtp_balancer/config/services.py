"""The daemons' and Redis's settings: redis, decision, mx_lookup, policyd, milter, exim."""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from smtp_balancer.config.base import (
    HostPort,
    MetricsListen,
    Name,
    Strict,
    check_cidrs,
    check_listen,
)


class TlsConfig(Strict):
    ca_file: str | None = None
    """The CA that signed Redis's certificate (rediss://)"""
    cert_file: str | None = None
    """This client's certificate, when Redis asks for one."""
    key_file: str | None = None
    """The key of cert_file."""
    verify: bool = True
    """Check Redis's certificate and host name; false only for a test."""


class SentinelConfig(Strict):
    hosts: list[HostPort] = Field(min_length=1)
    """The sentinels, as host:port."""
    service_name: str
    """The master's name in the sentinels' config."""
    username: str | None = None
    """The sentinels' own AUTH, if they have one."""
    password: SecretStr | None = None
    """The sentinels' own AUTH password, if they have one (prefer password_file)"""
    password_file: str | None = None
    """A file holding the sentinels' password."""


class ClusterConfig(Strict):
    nodes: list[HostPort] = Field(min_length=1)
    """Some of the cluster's nodes, as host:port: asked which master serves the prefix's slot."""


class RedisConfig(Strict):
    url: str = "redis://127.0.0.1:6379/0"
    """The Redis: unix:///path, redis://host:port/db, or rediss://host:port/db for TLS."""
    username: str | None = None
    """Redis ACL user (optional); $SMTP_BALANCER_REDIS_USERNAME wins."""
    # prefer password_file or $SMTP_BALANCER_REDIS_PASSWORD: the YAML is often world-readable
    password: SecretStr | None = None
    """The password in the YAML itself: avoid, the file is often world-readable (password_file, or
    $SMTP_BALANCER_REDIS_PASSWORD)."""
    password_file: str | None = None
    """A file holding the Redis password; $SMTP_BALANCER_REDIS_PASSWORD wins over it and password."""
    prefix: Name = "sb"
    """Keys are {sb}:... (a Cluster hash tag)"""
    connect_timeout_ms: int = Field(default=50, ge=1, le=60_000)
    """How long a connection attempt to Redis may take."""
    admin_timeout_ms: int = Field(default=2000, ge=1, le=60_000)
    """How long a CLI command waits for Redis."""
    max_connections: int = Field(default=64, ge=1, le=10_000)
    """The CLI's pool only: the daemons use one pipelined connection."""
    tls: TlsConfig | None = None
    """TLS settings, with a rediss:// url."""
    sentinel: SentinelConfig | None = None
    """Instead of url: ask these sentinels for the master."""
    cluster: ClusterConfig | None = None
    """Instead of url: a Redis Cluster. Every key carries the `{prefix}` hash tag, so all of
    them live in one slot: the daemons talk to that slot's master, and find it again after a
    failover or a MOVED reply."""

    @model_validator(mode="after")
    def _one_way_to_redis(self) -> RedisConfig:
        if self.sentinel is not None and self.cluster is not None:
            raise ValueError("redis.sentinel and redis.cluster exclude each other: choose one")
        if self.cluster is not None and self.tls is not None:
            raise ValueError(
                "redis.cluster does not take redis.tls yet: reach the cluster on a private network"
            )
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^(redis|rediss|unix)://", value):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class DecisionConfig(Strict):
    budget_ms: int = Field(default=50, ge=1, le=10_000)
    """Never wait longer than this for Redis."""
    # weights: decide from the YAML weights; default: answer DUNNO (MTA default transport)
    fallback: Literal["weights", "default"] = "weights"
    """Without Redis: YAML weights (weights) or the MTA default transport (default)"""
    # after a Redis failure, decide locally for this long before trying Redis again
    retry_after_ms: int = Field(default=1000, ge=10, le=600_000)
    """After a Redis failure, decide locally this long before trying again."""
    # how often the last-known live state (weights, drains, suspensions) is refreshed
    # for degraded decisions
    state_refresh_s: int = Field(default=5, ge=1, le=3600)
    """Refresh of the last-known live state used by degraded decisions."""
    # decide in memory from Redis-tracked state and quota leases (CLIENT TRACKING,
    # Redis 6+); off: one select.lua round trip per decision
    local: bool = True
    """Decide in memory from Redis-tracked state and quota leases."""
    # how often each decider checks that its local endpoints' bind addresses are on
    # this host; an endpoint whose address is not gets no mail from this host (0: off)
    bind_check_s: float = Field(default=5, ge=0, le=3600)
    """Check local endpoints' bind addresses are on this host; 0: off."""


class MxLookupConfig(Strict):
    """Decision-time MX lookup for recipient domains the provider table does not know."""

    enabled: bool = True
    """Find unknown domains' providers by their MX hosts."""
    # resolvers (address or address:port); empty means /etc/resolv.conf
    nameservers: list[str] = Field(default_factory=list)
    """Address or address:port; empty: /etc/resolv.conf."""
    # the longest a decision waits for an answer; a late answer serves the next message
    budget_ms: int = Field(default=20, ge=0, le=5_000)
    """The longest a decision waits; a late answer serves the next message."""
    lookup_timeout_ms: int = Field(default=2_000, ge=10, le=30_000)
    """How long one MX lookup may take in the background."""
    cache_size: int = Field(default=100_000, ge=100)
    """Domains kept in the MX cache."""
    min_ttl_s: int = Field(default=300, ge=0)
    """Answers are cached for their TTL, within these bounds."""
    max_ttl_s: int = Field(default=86_400, ge=1)
    """The longest an answer is cached."""
    negative_ttl_s: int = Field(default=3_600, ge=0)
    """No MX: asked again after this."""
    failure_ttl_s: int = Field(default=60, ge=0)
    """Resolver failure: asked again after this."""
    max_pending: int = Field(default=1_000, ge=1)
    """Lookups in flight at once."""


class PolicydConfig(Strict):
    # render the policy service lines into main.cf (off for a milter-only setup)
    enabled: bool = True
    """Render its main.cf lines (off for milter-only)"""
    # inet:host:port or unix:/path; loopback by default
    listen: list[str] = Field(default_factory=lambda: ["inet:127.0.0.1:10040"], min_length=1)
    """Where it listens: inet:host:port or unix:/path; loopback by default."""
    unix_mode: str = Field(default="0660", pattern=r"^0?[0-7]{3}$")
    """The file mode of a unix: listener."""
    unix_owner: str | None = None
    """The owner of a unix: listener (null: as created)."""
    unix_group: str | None = None
    """The group of a unix: listener (null: as created)"""
    # Postfix's policy client closes idle connections after 300 s (max_idle); outlive it a little
    idle_timeout_s: int = Field(default=330, ge=1, le=86_400)
    """Close a connection idle this long (Postfix's policy client gives up idle ones at 300 s)."""
    max_connections: int = Field(default=4096, ge=1, le=1_000_000)
    """With workers: shared, ceil(max_connections / workers) each."""
    # worker processes, each deciding on its own core; 1: this process serves alone.
    # Above 1 a supervisor listens and passes each connection to the least busy worker
    workers: int = Field(default=1, ge=1, le=64)
    """1-64 worker processes; above 1 a supervisor passes them connections."""
    max_concurrent_decisions: int = Field(default=256, ge=1, le=100_000)
    """Decisions waiting on Redis at once, per process."""
    # "" disables the /metrics endpoint
    metrics_listen: MetricsListen = "127.0.0.1:9480"
    """"" disables /metrics; with workers, the supervisor serves their sum."""
    # the timeout Postfix waits for us; rendered into main.cf. A decision takes
    # milliseconds: this bounds what a frozen daemon costs each policy request
    postfix_timeout_s: int = Field(default=3, ge=1, le=300)
    """Rendered into main.cf: how long Postfix waits for an answer."""
    # Postfix's attempts per request (rendered try_limit). 2: after a failure Postfix
    # closes the connection and retries once, 1 s later, on a fresh one. 1: no retry,
    # but Postfix keeps a timed-out connection, and every later request of that smtpd
    # process fails at once until its SMTP session ends (mail goes unrouted)
    postfix_try_limit: int = Field(default=2, ge=1, le=5)
    """Rendered into main.cf: attempts per request."""
    # ask the daemon at RCPT too, to learn every recipient of multi-recipient messages
    # (rendered into main.cf); off saves a round trip per recipient, but then
    # provider-scoped suspensions only see the recipient Postfix names at END-OF-MESSAGE
    collect_recipients: bool = True
    """Also ask at RCPT to learn every recipient."""
    join_max_instances: int = Field(default=50_000, ge=100)
    """Open messages whose RCPT recipients are held for END-OF-MESSAGE."""
    join_ttl_s: int = Field(default=900, ge=10)
    """An open message older than this is dropped (oldest first)"""
    # recipients held for open messages, in bytes: a client that sends RCPTs and never
    # DATA cannot make the daemon hold more than this
    join_max_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    """Bytes of recipients held for them (64 KiB to 1 GiB)"""

    @field_validator("listen")
    @classmethod
    def _listen(cls, values: list[str]) -> list[str]:
        return [check_listen(v) for v in values]


FEEDBACK_ID_FIELDS = ("rule", "pool", "endpoint", "tenant", "class", "sender_id")


class FeedbackIdConfig(Strict):
    """The Feedback-ID header (Gmail's feedback loop), stamped by the milter."""

    enabled: bool = False
    """Stamp it; any copy the message came with is removed."""
    sender_id: str = Field(default="", pattern=r"^[A-Za-z0-9._-]{0,64}$")
    """Your sender id, the last field: the same on all your mail."""
    # colon-separated, as Gmail reads it: Gmail aggregates complaints by each field
    format: str = "{rule}:{tenant}:{class}:{sender_id}"
    """The value: {rule}, {pool}, {endpoint}, {tenant}, {class} and {sender_id}, joined by colons."""

    @model_validator(mode="after")
    def _fields(self) -> FeedbackIdConfig:
        names = [name for _, name, _, _ in string.Formatter().parse(self.format) if name is not None]
        wrong = [n for n in names if n not in FEEDBACK_ID_FIELDS]
        if wrong or not names:
            allowed = ", ".join(FEEDBACK_ID_FIELDS)
            raise ValueError(f"feedback_id.format may name only {allowed}, not {', '.join(wrong) or 'none'}")
        literal = "".join(text for text, _, _, _ in string.Formatter().parse(self.format))
        if not all(c == ":" or c.isalnum() or c in "._-" for c in literal):
            raise ValueError("feedback_id.format may hold only fields, colons and [A-Za-z0-9._-]")
        if self.enabled and "{sender_id}" in self.format and not self.sender_id:
            raise ValueError("feedback_id.sender_id is empty: give yours (the format ends with it)")
        return self


class MilterConfig(Strict):
    # render the milter lines into main.cf and the map files
    enabled: bool = False
    """Render its Postfix lines and maps."""
    # decide SMTP mail too (smtpd_milters), not only local submissions (non_smtpd_milters).
    # Unset: only when the policy daemon is off, so that no message is decided twice:
    # every decision reserves warm-up quota
    smtpd: bool | None = None
    """Decide SMTP mail too; unset: only when policyd.enabled is false."""
    # a unix socket: over inet: libmilter's small writes stall on Nagle + delayed ACK (DESIGN.md)
    listen: str = "unix:/run/smtp-balancer/milter.sock"
    """Where the milter listens: unix:/path (the default) or inet:host:port (slower;
    inet:[::1]:port for IPv6)."""
    # Postfix's smtpd and cleanup run in group postfix: they alone may connect
    socket_mode: str = Field(default="0660", pattern=r"^0?[0-7]{3}$")
    """A unix socket's mode: Postfix's cleanup and smtpd must connect, as group postfix."""
    socket_group: str | None = Field(default="postfix", pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    """The unix socket's group: postfix, so that no other local user may connect (null: leave the group)."""
    route_header: str = Field(default="X-Egress-Route", pattern=r"^[A-Za-z][A-Za-z0-9-]*$")
    """The header that carries the route to Postfix's header_checks (removed before delivery)"""
    # an informational header naming pool and rule; "" (the default) adds none
    info_header: str = Field(default="", pattern=r"^([A-Za-z][A-Za-z0-9-]*)?$")
    """A header naming the decision id, pool, rule and class (X-Egress-Info, say); "": off."""
    class_header: str = Field(default="X-Mail-Class", pattern=r"^[A-Za-z][A-Za-z0-9-]*$")
    """The header a trusted client sets to name a message's class."""
    classes: list[Name] = Field(default_factory=lambda: ["transactional", "bulk"])
    """The message classes rules may match."""
    default_class: Name = "transactional"
    """The class of a message without a trusted class header."""
    # the explicit class header counts only from these clients, SASL-authenticated
    # clients and local submissions (sendmail): never from strangers
    trusted_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    """Where the class header is believed."""
    timeout_s: int = Field(default=30, ge=1, le=600)
    """Libmilter's timeout for a silent MTA connection."""
    # the longest a message waits on the engine; past it the message gets no route
    # header (Postfix's default transport) and the degraded counter rises
    decision_timeout_ms: int = Field(default=1000, ge=1, le=60_000)
    """Past this: no header, default transport, degraded counted."""
    metrics_listen: MetricsListen = "127.0.0.1:9481"
    """The milter's /metrics (host:port); "" disables it."""
    feedback_id: FeedbackIdConfig = Field(default_factory=FeedbackIdConfig)
    """The Feedback-ID header for Gmail's feedback loop, on the mail the milter decides."""
    # Postfix's waits on the milter, rendered into main.cf: what a frozen milter costs
    # each connection (connect), each SMTP command, and each message at its end (content)
    postfix_connect_timeout_s: int = Field(default=1, ge=1, le=300)
    """Rendered as the milter's own connect_timeout."""
    postfix_command_timeout_s: int = Field(default=3, ge=1, le=300)
    """Rendered as its command_timeout."""
    postfix_content_timeout_s: int = Field(default=10, ge=1, le=600)
    """Rendered as its content_timeout (the end of message)"""
    # where `render postfix --write-maps` puts the regexp maps main.cf refers to
    postfix_maps_dir: str = "/etc/postfix/smtp-balancer"
    """Where `render postfix --write-maps` puts the milter's header_checks maps."""

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
    """Where the rendered Exim files live: main.conf reads routes from it."""
    # the longest an SMTP session waits on the policy daemon before the default route
    readsocket_timeout_s: int = Field(default=2, ge=1, le=60)
    """An SMTP session waits no longer for a route."""

    @field_validator("config_dir")
    @classmethod
    def _dir(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._/-]*", value):
            raise ValueError(f"must be an absolute path of letters, digits and ._-/: {value!r}")
        return value.rstrip("/") or "/"
