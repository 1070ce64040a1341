"""The feedback daemon's metrics. Labels come from the config (endpoint, provider, rule, zone)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "smtp_balancer_deliveries_total",
    "Delivery attempts read from the MTA log, by endpoint, provider, status, bounce class (none when "
    "delivered) and tenant (from tenants:, else other)",
    ["endpoint", "provider", "status", "class", "tenant"],
)
DELIVERY_SECONDS = Histogram(
    "smtp_balancer_delivery_delay_seconds",
    "Postfix delay= of delivered (sent) mail: arrival to delivery, by endpoint and provider",
    ["endpoint", "provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
)
LOG_LINES = Counter(
    "smtp_balancer_feedback_log_lines_total",
    "Log lines read, by kind (delivery, other, garbage)",
    ["kind"],
)
LOG_EVENTS = Counter(
    "smtp_balancer_feedback_log_events_total",
    "Log follower events: rotation, truncation, lost (a rotated file disappeared)",
    ["event"],
)
RULE_HITS = Counter(
    "smtp_balancer_feedback_rule_hits_total",
    "Response and rate rule evaluations, by rule and outcome (counting, acted, in_force, ...)",
    ["rule", "outcome"],
)
ACTIONS = Counter(
    "smtp_balancer_feedback_actions_total",
    "Suspensions, quarantines and throttles applied, by rule, endpoint, provider and action",
    ["rule", "endpoint", "provider", "action"],
)
REDIS_ERRORS = Counter(
    "smtp_balancer_feedback_redis_errors_total",
    "Batches that could not be applied to Redis (retried; the log position does not move)",
)
REREAD_BYTES = Counter(
    "smtp_balancer_feedback_reread_bytes_total",
    "Log bytes read again because Redis lost batches it had applied (a failover before"
    " replication): their outcomes are counted once, on the new master",
)
INSTANCE_WAITING = Gauge(
    "smtp_balancer_feedback_instance_waiting",
    "1 while another feedback daemon holds this one's feedback.instance: this one reads no log"
    " until it is gone",
)
DNSBL_LISTED = Gauge(
    "smtp_balancer_dnsbl_listed",
    "1 when one of the endpoint's public IPs (IPv4, IPv6) is listed on the zone at the last check",
    ["endpoint", "zone"],
)
DNSBL_CHECKS = Counter(
    "smtp_balancer_dnsbl_checks_total",
    "DNSBL lookups by zone and verdict (listed, clean, error)",
    ["zone", "verdict"],
)
RELAY_UP = Gauge("smtp_balancer_relay_up", "1 when the relay endpoint passes its probes", ["endpoint"])
RELAY_PROBES = Counter(
    "smtp_balancer_relay_probes_total", "Relay endpoint SMTP probes by result", ["endpoint", "result"]
)
BIND_ERRORS = Counter(
    "smtp_balancer_feedback_bind_errors_total",
    "Postfix could not bind an endpoint's source address and sent from the host's default one",
    ["endpoint"],
)
ADAPTIVE_FACTOR = Gauge(
    "smtp_balancer_adaptive_factor",
    "The adaptive weight factor of an endpoint for a provider (1: none), in pools with adaptive: true, for"
    " endpoints seen in the log within two windows",
    ["endpoint", "provider"],
)
EXPERIMENT_OUTCOMES = Counter(
    "smtp_balancer_experiment_outcomes_total",
    "Delivery attempts of messages in an experiment's arm, read from the MTA log, by status",
    ["experiment", "arm", "status"],
)
