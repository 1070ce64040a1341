"""What the feedback daemon tells about each applied batch: metrics for every line,
delivery, rule hit and rate rule, and log lines for actions and trouble (the
frequent ones through a LogLimiter). The daemon's loop reads and applies; this
turns the results into what operators see."""

from __future__ import annotations

import logging
from collections import Counter

from smtp_balancer.config.feedback import STATUSES
from smtp_balancer.feedback import metrics
from smtp_balancer.feedback.processor import Batch
from smtp_balancer.observe.ratelimit import LogLimiter
from smtp_balancer.state.feedback_store import HitResult
from smtp_balancer.state.rates import RateResult

log = logging.getLogger("smtp_balancer.feedback")


def count_arm_outcomes(counts: Counter[tuple[str, str, str]]) -> None:
    for (experiment, arm, name), n in counts.items():
        if name in STATUSES:
            metrics.EXPERIMENT_OUTCOMES.labels(experiment, arm, name).inc(n)


def endpoint_label(name: str, known: set[str]) -> str:
    """A bounded metrics label: configured endpoints by name, anything else grouped."""
    if name in known:
        return name
    return "default" if name == "" else "unconfigured"


class BatchReport:
    def __init__(self, endpoints: set[str], notes: LogLimiter) -> None:
        self.endpoints, self.notes = endpoints, notes

    def batch(self, batch: Batch, results: list[HitResult], rates: list[RateResult]) -> None:
        """Count what a batch applied, and say what it did (rule actions, bind errors,
        unparsable lines: the rarer ones rate-limited)."""
        metrics.LOG_LINES.labels("other").inc(batch.ignored)
        metrics.LOG_LINES.labels("delivery").inc(len(batch.deliveries))
        if batch.garbage:
            metrics.LOG_LINES.labels("garbage").inc(len(batch.garbage))
            for line in batch.garbage:
                self.notes.warning("unparsable log line", "log line skipped: %s", line)
        for name, n in batch.bind_errors.items():
            label = endpoint_label(name, self.endpoints)
            metrics.BIND_ERRORS.labels(label).inc(n)
            self.notes.warning(
                f"bind error {label}",
                "endpoint %s: Postfix cannot bind its source address (%d times) and sends from the"
                " host's default address; the deciders leave it out while decision.bind_check_s is on",
                label,
                n,
            )
        for d in batch.deliveries:
            ep = endpoint_label(d.endpoint, self.endpoints)
            metrics.DELIVERIES.labels(ep, d.provider, d.status, d.bounce_class, d.tenant).inc()
            if d.status == "sent":
                metrics.DELIVERY_SECONDS.labels(ep, d.provider).observe(d.delay_s)
        for res in results:
            rule = res.hit.rule.config
            metrics.RULE_HITS.labels(rule.name, res.outcome).inc()
            if res.outcome == "acted":
                scope = "all" if rule.action in ("suspend_all", "quarantine") else res.hit.provider
                metrics.ACTIONS.labels(rule.name, res.hit.endpoint, scope, rule.action).inc()
                log.warning(
                    "%s %s for %s for %ds (rule %s, strike %d): %s",
                    rule.action,
                    res.hit.endpoint,
                    scope,
                    res.seconds,
                    rule.name,
                    res.strike,
                    " ".join(res.hit.response.split())[:200],
                )
        for rate in rates:
            metrics.RULE_HITS.labels(rate.rule, rate.outcome).inc()
            if rate.outcome == "tripped":
                metrics.ACTIONS.labels(rate.rule, rate.endpoint, rate.scope, rate.action).inc()
                log.warning(
                    "rate rule %s tripped for %s/%s: %.2f%% of %d (%s %s for %s)",
                    rate.rule,
                    rate.endpoint,
                    rate.provider,
                    rate.rate_percent,
                    rate.attempts,
                    rate.action,
                    rate.endpoint,
                    rate.scope,
                )
            elif rate.outcome == "recovered":
                log.info("rate rule %s re-armed for %s/%s", rate.rule, rate.endpoint, rate.provider)
        count_arm_outcomes(batch.arm_outcomes)
