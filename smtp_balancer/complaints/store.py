"""The complaint counts in Redis, and the complaint rate rules they feed.

A complaint lands in the outcome bucket of the minute it arrived (field
``complained``), beside the feedback daemon's ``sent`` counts, so a rate rule
with ``measure: complained`` reads complaints per delivered message over its
window. Totals for metrics go to one hash that every feedback daemon exports.
A complaint about a message in an experiment also counts in its arm's hash
(``complained``): the report's original message carries our MTA's Received
header, whose queue id names the arm record (``{sb}:arm:<queue id>``, 5 days).
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.complaints.attribute import Attribution
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.experiments.records import configured_record, counts_in_run, read_runs_since
from smtp_balancer.state.keys import (
    DAY_TTL_S,
    EXPSTATS_TTL_S,
    TENANT_TTL_S,
    KeySchema,
    hour_bucket,
    minute_bucket,
)
from smtp_balancer.state.rates import RateResult, evaluate_rates

RESULTS = ("complaint", "not_counted", "unattributed", "malformed", "no_source_ip", "too_large")


def total_field(attribution: Attribution) -> str:
    return f"complaint:{attribution.endpoint}:{attribution.provider}:{attribution.tenant}"


def arm_field(experiment: str, arm: str) -> str:
    return f"arm:{experiment}:{arm}"


class ComplaintStore:
    def __init__(self, client: redis.Redis, config: BalancerConfig, clock: Clock = SYSTEM) -> None:
        self.r = client
        self.config = config
        self.clock = clock
        self.keys = KeySchema(config.redis.prefix)
        self.retention_s = config.feedback.rate_retention
        self.arms = config.experiment_arms

    def arm_of(self, queue_ids: tuple[str, ...]) -> tuple[str, str] | None:
        """The experiment arm of the reported message: the first of its Received ids with
        an arm record of a configured experiment (a provider's own ids have none)."""
        if not queue_ids or not self.arms:
            return None
        for raw in self.r.mget([self.keys.arm_record(q) for q in queue_ids]):
            record = configured_record(raw, self.arms)
            if record is not None:
                # a message decided before the run began (start --reset) is not its run's
                since = read_runs_since(self.r, self.keys, [record.experiment]).get(record.experiment)
                return record.pair if counts_in_run(record, since) else None
        return None

    def record(
        self, result: str, attribution: Attribution | None = None, arm: tuple[str, str] | None = None
    ) -> None:
        """Count one report: every result in the totals, a complaint also where rates
        read it and in its message's experiment arm."""
        now = self.clock.wall()
        pipe = self.r.pipeline(transaction=True)
        totals = self.keys.fbl_totals()
        pipe.hincrby(totals, f"report:{result}", 1)
        if result == "complaint" and attribution is not None and attribution.endpoint is not None:
            pipe.hincrby(totals, total_field(attribution), 1)
            bucket = self.keys.outcomes(attribution.endpoint, attribution.provider, minute_bucket(now))
            pipe.hincrby(bucket, "complained", 1)
            pipe.expire(bucket, self.retention_s)
            daily = self.keys.daily(attribution.endpoint, minute_bucket(now)[:8])
            pipe.hincrby(daily, "complained", 1)
            pipe.expire(daily, DAY_TTL_S)
            if self.config.tenants:
                hour = hour_bucket(datetime.fromtimestamp(now, UTC))
                tenant = self.keys.tenant_outcomes(attribution.tenant, hour)
                pipe.hincrby(tenant, "complained", 1)
                pipe.expire(tenant, max(self.retention_s, TENANT_TTL_S))
            if arm is not None:
                stats = self.keys.expstats(*arm)
                pipe.hincrby(stats, "complained", 1)
                pipe.expire(stats, EXPSTATS_TTL_S)
                pipe.hincrby(totals, arm_field(*arm), 1)
        pipe.execute()

    def evaluate(self, attribution: Attribution) -> list[RateResult]:
        """Run the complaint rate rules for the complaint's (endpoint, provider)."""
        rules = self.config.feedback.complaint_rules
        if attribution.endpoint is None or not rules:
            return []
        pair = (attribution.endpoint, attribution.provider)
        return evaluate_rates(self.r, self.keys, rules, {pair}, self.clock.wall())
