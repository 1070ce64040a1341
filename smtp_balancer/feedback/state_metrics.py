"""Gauges of the shared Redis state, for dashboards and alerts: states, suspensions, warm-up.

The feedback daemon exports them (one per fleet is enough; several agree). They
are rebuilt from a ``status`` snapshot each round, so a lifted suspension drops
out instead of lingering. Labels are config names only.
"""

from __future__ import annotations

from prometheus_client import Gauge

from smtp_balancer.observe.status import EndpointStatus, Snapshot
from smtp_balancer.state.keys import ADMIN_STATES

ENDPOINT_STATE = Gauge(
    "smtp_balancer_endpoint_state",
    "1 for the endpoint's current admin state (read from Redis every feedback.state_interval, as status "
    "reads it)",
    ["endpoint", "state"],
)
SUSPENDED = Gauge(
    "smtp_balancer_endpoint_suspended",
    "1 while the endpoint is suspended for the provider (all = every provider)",
    ["endpoint", "provider"],
)
WARMUP_SENT = Gauge(
    "smtp_balancer_warmup_sent_today", "Recipients counted today (UTC) against a warm-up cap", ["endpoint"]
)
WARMUP_CAP = Gauge(
    "smtp_balancer_warmup_daily_cap", "Today's warm-up cap of a warming endpoint", ["endpoint"]
)
POOL_WEIGHT = Gauge("smtp_balancer_pool_weight", "Effective weight (live or YAML)", ["pool", "endpoint"])
POOL_ELIGIBLE = Gauge(
    "smtp_balancer_pool_eligible_endpoints",
    "Endpoints that could take a message now: weight > 0, active, not suspended for all, under cap",
    ["pool"],
)


def _available(ep: EndpointStatus) -> bool:
    if ep.state != "active" or any(s.provider == "all" for s in ep.suspensions):
        return False
    if ep.day_cap is not None and (ep.day_count is None or ep.day_count >= ep.day_cap):
        return False
    return not (ep.hour_cap is not None and (ep.hour_count is None or ep.hour_count >= ep.hour_cap))


def export(snapshot: Snapshot) -> None:
    SUSPENDED.clear()
    WARMUP_SENT.clear()
    WARMUP_CAP.clear()
    for name, ep in snapshot.endpoints.items():
        for state in ADMIN_STATES:
            ENDPOINT_STATE.labels(name, state).set(1 if ep.state == state else 0)
        for s in ep.suspensions:
            SUSPENDED.labels(name, s.provider).set(1)
        if ep.day_cap is not None:
            WARMUP_CAP.labels(name).set(ep.day_cap)
            WARMUP_SENT.labels(name).set(ep.day_count or 0)
    for pool in snapshot.pools:
        eligible = 0
        for m in pool.members:
            POOL_WEIGHT.labels(pool.name, m.endpoint).set(m.weight)
            if m.weight > 0 and _available(snapshot.endpoints[m.endpoint]):
                eligible += 1
        POOL_ELIGIBLE.labels(pool.name).set(eligible)
