"""Prometheus metric definitions shared by every daemon.

Labels are bounded: pool, endpoint, rule and provider names come from the
config, never from a message or an address.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Final

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    start_http_server,
)

from smtp_balancer.config.base import parse_hostport
from smtp_balancer.observe.tally import Tally, TallyChild, Timing

# set by the policy daemon's supervisor for its workers (policyd.workers > 1): every
# worker keeps its series in files there, and the supervisor serves their sum
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# per message: counted as plain numbers, reported at scrape time (tally.py)
DECISIONS: Final = Tally(
    "smtp_balancer_decisions_total",
    "Routing decisions by pool, endpoint, rule and outcome (route, default, defer, no_rule, inbound)",
    ["pool", "endpoint", "rule", "outcome"],
    MULTIPROCESS,
)
DECISION_SECONDS: Final = Timing(
    "smtp_balancer_decision_duration_seconds",
    "Time to make one routing decision, Redis round trip included",
    (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
    MULTIPROCESS,
)
DEGRADED = Counter(
    "smtp_balancer_degraded_decisions_total",
    "Decisions made without Redis, by reason",
    ["reason"],
)
DEGRADED_REASONS = (
    "timeout",
    "redis_error",
    "script_error",
    "circuit_open",
    "internal_error",
    "bridge_timeout",
)
for _reason in DEGRADED_REASONS:
    # exported at 0 from the start: "no degraded decisions" must be a series, not an absence
    DEGRADED.labels(_reason)

LATE_REPLIES = Counter(
    "smtp_balancer_late_replies_total",
    "select.lua replies that arrived after their decision had gone on without them"
    " (what they counted was given back)",
)
SCRIPT_LATE = Counter(
    "smtp_balancer_script_late_total",
    "select.lua calls that ran after their deadline and counted nothing (the decision degraded)",
)

# multiprocess_mode: how a supervisor sums its workers' values (ignored in one process)
QUOTA_LEASED = Gauge(
    "smtp_balancer_quota_leased_units",
    "Warm-up quota units this process has reserved in Redis and not yet spent",
    multiprocess_mode="livesum",
)

REDIS_REPLY_AGE = Gauge(
    "smtp_balancer_redis_last_reply_age_seconds",
    "Seconds since Redis last answered this process (it is asked at least every second); alert "
    "SmtpBalancerRedisStalled past 10 s",
    multiprocess_mode="livemax",
)

KEY_TRACKING_REFUSED = Gauge(
    "smtp_balancer_key_tracking_refused",
    "1 while Redis refuses key tracking (an ACL without +client|tracking, or Redis < 6):"
    " local decisions are off and every decision makes a round trip",
    multiprocess_mode="livemax",
)

_observed: dict[Gauge, Callable[[], float]] = {}


def observe(gauge: Gauge, value: Callable[[], float]) -> None:
    """``gauge.set_function(value)``, also in a worker: there a gauge is a file the
    supervisor reads, so ``refresh_observed`` writes the value every second instead."""
    if MULTIPROCESS:
        _observed[gauge] = value
    else:
        gauge.set_function(value)


def refresh_observed() -> None:
    for gauge, value in list(_observed.items()):
        try:
            gauge.set(value())
        except Exception as exc:  # a gauge never stops the loop that refreshes it
            logging.getLogger("smtp_balancer").debug("gauge refresh failed: %s", exc)


STATE_JUNK = Counter(
    "smtp_balancer_state_junk_total",
    "Hand-edited Redis values that were ignored in favour of the YAML default, by kind (weight, weights, "
    "state, until, throttle, adaptive, slow, warmup, counter; fbl_totals, arm_record, experiment_since and "
    "reputation "
    "from the feedback daemon)",
    ["kind"],
)


_decision_children: Final[dict[tuple[str, str, str, str], TallyChild]] = {}


def record_decision(pool: str | None, endpoint: str | None, rule: str | None, outcome: str) -> None:
    # label sets are bounded by the config, so caching the children is safe and
    # skips prometheus_client's per-call label validation on the hot path
    key = (pool or "", endpoint or "", rule or "", outcome)
    child = _decision_children.get(key)
    if child is None:
        child = _decision_children[key] = DECISIONS.labels(*key)
    child.inc()


SHADOW_DECISIONS = Counter(
    "smtp_balancer_shadow_decisions_total",
    "Shadow mode: messages also decided under the candidate config (shadow.config), by the live"
    " decision's rule and pool, and agreement: same (the same outcome and endpoint) or different",
    ["rule", "pool", "agreement"],
)
_shadow_children: Final[dict[tuple[str, str, bool], Counter]] = {}


def record_shadow(rule: str | None, pool: str | None, same: bool) -> None:
    key = (rule or "", pool or "", same)
    child = _shadow_children.get(key)
    if child is None:
        child = _shadow_children[key] = SHADOW_DECISIONS.labels(
            key[0], key[1], "same" if same else "different"
        )
    child.inc()


SHADOW_FAILURES = Counter(
    "smtp_balancer_shadow_failures_total",
    "Shadow mode: candidate decisions that failed (a bug; the live decision stood, and is logged)",
)
SHADOW_CONFIG_ERRORS = Counter(
    "smtp_balancer_shadow_config_errors_total",
    "Shadow mode: times the candidate config (shadow.config) could not be used, at start or reload",
)

EXPERIMENT_DECISIONS = Counter(
    "smtp_balancer_experiment_decisions_total",
    "Decisions made in an experiment's arm (experiments:), by experiment and arm",
    ["experiment", "arm"],
)
_arm_children: Final[dict[tuple[str, str], Counter]] = {}


def record_arm(experiment: str, arm: str) -> None:
    key = (experiment, arm)
    child = _arm_children.get(key)
    if child is None:
        child = _arm_children[key] = EXPERIMENT_DECISIONS.labels(*key)
    child.inc()


class ListenError(Exception):
    """A daemon cannot listen where its config says: the option, the address, why."""

    def __init__(self, option: str, address: str, exc: OSError | str) -> None:
        # asyncio wraps the bind error in a long text; the errno says it in a few words
        why = (os.strerror(exc.errno) if exc.errno else str(exc)) if isinstance(exc, OSError) else exc
        super().__init__(f"{option} {address}: cannot listen: {why}")


def serve_metrics(
    listen: str,
    log: logging.Logger,
    option: str = "metrics_listen",
    registry: CollectorRegistry | None = None,
) -> Callable[[], None]:
    """Serve /metrics on ``host:port`` (a daemon thread); "" serves nothing.
    ``registry``: another than this process's own (a supervisor's workers).
    Returns what stops serving and frees the port (a policy daemon's successor binds it)."""
    if not listen:
        return lambda: None
    # *_created series double every counter's cardinality and no dashboard uses them
    disable_created_metrics()
    host, port = parse_hostport(listen)
    try:
        served = start_http_server(port, addr=host, registry=REGISTRY if registry is None else registry)
    except OSError as exc:
        raise ListenError(option, listen, exc) from exc
    log.info("metrics on http://%s:%d/metrics", host, port)

    def close() -> None:
        if served is not None:  # prometheus_client returns (server, thread)
            httpd = served[0]
            httpd.shutdown()
            httpd.server_close()

    return close


LOOP_LAG = Gauge(
    "smtp_balancer_loop_lag_seconds",
    "How late this process's last watch tick fired (0.25 s ticks: its event loop or threads did not run "
    "meanwhile)",
    multiprocess_mode="livemax",
)
STALLS = Counter(
    "smtp_balancer_stalls_total",
    "Times this process stalled (a watch tick fired a second or more late)",
)
STALL_SECONDS = Counter(
    "smtp_balancer_stall_seconds_total",
    "Seconds this process spent stalled, summed over its stalls; alert SmtpBalancerDaemonStalled",
)
