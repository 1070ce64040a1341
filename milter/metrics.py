"""Milter metrics; the decision metrics themselves live in smtp_balancer.observe.metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CLASSIFIED = Counter("smtp_balancer_milter_classified_total", "Messages by message class", ["message_class"])
SPOOFED = Counter(
    "smtp_balancer_milter_spoofed_route_headers_total",
    "Messages that arrived carrying their own routing header (removed)",
)
FAILURES = Counter(
    "smtp_balancer_milter_failures_total",
    "Messages left without a route header because of an error, by kind",
    ["kind"],
)
EOM_SECONDS = Histogram(
    "smtp_balancer_milter_eom_duration_seconds",
    "Time spent in the end-of-message callback, decision included",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

HELD = Counter(
    "smtp_balancer_milter_tenant_held_total",
    "Messages quarantined (Postfix's hold queue) because their sender's tenant is held",
    ["tenant"],
)
