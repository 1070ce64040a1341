"""Policy daemon metrics; the decision metrics themselves live in smtp_balancer.observe.metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from smtp_balancer.observe.metrics import MULTIPROCESS
from smtp_balancer.observe.tally import Tally

REQUESTS = Tally(
    "smtp_balancer_policy_requests_total",
    "Policy requests by protocol stage",
    ["stage"],
    MULTIPROCESS,
)
# the children, resolved once: the stage label is asked for on every request
REQUESTS_BY_STAGE = {
    stage: REQUESTS.labels(stage) for stage in ("connect", "rcpt", "data", "end_of_message", "other")
}
PROTOCOL_ERRORS = Counter(
    "smtp_balancer_policy_protocol_errors_total",
    "Policy requests refused (connection closed), by kind (malformed, oversized, too_many_attributes, "
    "not_utf8, truncated)",
    ["kind"],
)
CONNECTIONS = Gauge(
    "smtp_balancer_policy_connections", "Open policy client connections", multiprocess_mode="livesum"
)
REFUSED_CONNECTIONS = Counter(
    "smtp_balancer_policy_refused_connections_total",
    "Connections closed at once because max_connections was reached",
)
OPEN_INSTANCES = Gauge(
    "smtp_balancer_policy_open_instances",
    "Messages with recipients collected at RCPT and not yet decided",
    multiprocess_mode="livesum",
)
RELOADS = Counter(
    "smtp_balancer_config_reloads_total",
    "Config reloads of the policy daemon on SIGHUP, by result (ok, error)",
    ["result"],
)
JOINS_EVICTED = Counter(
    "smtp_balancer_policy_joins_evicted_total",
    "Recipient joins dropped before END-OF-MESSAGE (too many open, or older than join_ttl_s)",
)
RECIPIENTS_UNKNOWN = Counter(
    "smtp_balancer_policy_recipients_unknown_total",
    "END-OF-MESSAGE requests with fewer recipient addresses than their recipient_count: their"
    " RCPT requests went to another process (a reconnect to another worker, a restart), their"
    " join was evicted, or RCPT was not asked of the policy service",
)
STALE_CONFIG = Counter(
    "smtp_balancer_policy_stale_config_requests_total",
    "Requests from MTA files an older release rendered (no policy_context marker, or an"
    " older one): render them again and apply them (docs/getting-started.md: Upgrading)",
    ["mta", "generation"],
)
ABANDONED = Counter(
    "smtp_balancer_policy_abandoned_total",
    "END-OF-MESSAGE requests answered without deciding: their client had already given up"
    " (Postfix closed the connection; an Exim request older than exim.readsocket_timeout_s)",
    ["mta"],
)

SHARED_JOIN_FAILURES = Counter(
    "smtp_balancer_policy_shared_join_failures_total",
    "RCPT recipients that could not be shared with the other workers through Redis, or read"
    " back (policyd.workers; the message is decided with what its worker saw)",
)
SHARED_JOIN_READS = Counter(
    "smtp_balancer_policy_shared_join_reads_total",
    "END-OF-MESSAGE requests that read recipients from the shared join (policyd.workers:"
    " their RCPT requests reached another worker)",
)
HANDOVERS = Counter(
    "smtp_balancer_policy_handovers_total",
    "Restarts by SIGUSR2 that handed the listening sockets and open connections to a new"
    " process, by result (failed: the running daemon kept serving, or stopped if the new"
    " one failed after taking the listeners)",
    ["result"],
)

HELD = Counter(
    "smtp_balancer_policy_tenant_held_total",
    "RCPTs answered HOLD because their sender's tenant is held (`tenant hold`, or "
    "feedback.complaints.tenant_hold): the message goes to Postfix's hold queue",
    ["tenant"],
)
