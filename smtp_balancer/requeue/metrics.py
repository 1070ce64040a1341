"""Metrics of moving queued mail (the requeue daemon) and of the delivery-time table (policyd)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MOVED = Counter(
    "smtp_balancer_requeue_moved_total",
    "Queued messages moved off an ineligible route, by old and new endpoint and reason (suspended, "
    "drained, quarantined, unplumbed); from the requeue and table daemons",
    ["from_endpoint", "to_endpoint", "reason"],
)
SKIPPED = Counter(
    "smtp_balancer_requeue_skipped_total",
    "Messages due to move that stayed this sweep, by why (no_route, degraded, not_deferred, unreadable,"
    " postfix_wiring)",
    ["why"],
)
QUEUED = Gauge(
    "smtp_balancer_requeue_queued_messages",
    "Deferred messages bound to each endpoint by their FILTER, at the last sweep",
    ["endpoint"],
)
SWEEPS = Counter(
    "smtp_balancer_requeue_sweeps_total",
    "Deferred-queue sweeps, by outcome (ok, redis_error, postfix_error, error)",
    ["outcome"],
)
TABLE_LOOKUPS = Counter(
    "smtp_balancer_table_lookups_total",
    "Delivery-time table lookups, by answer (pinned, stays, moved, notfound, temp, junk_pin, bad_request)",
    ["answer"],
)
WIRED = Gauge(
    "smtp_balancer_requeue_postfix_wired",
    "1 when qmgr resolves moved mail through the table (the daemon moves mail), 0 when not (it refuses)",
)
