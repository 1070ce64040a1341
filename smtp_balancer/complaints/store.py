"""The complaint side of Redis for the intake: which experiment arm a reported
message is in, its counts (``state/complaints.py``), and the complaint rate rules
they feed. The report's original message carries our MTA's Received header, whose
queue id names the arm record (``state/arm_book.py``, 5 days).
"""

from __future__ import annotations

import redis

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.complaints.attribute import Attribution
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.experiments.records import configured_record, counts_in_run, read_runs_since
from smtp_balancer.state.complaints import ComplaintCounts, ComplaintScope
from smtp_balancer.state.experiments import ExperimentStore
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.rates import RateResult, evaluate_rates
from smtp_balancer.state.status_reads import StatusReads
from smtp_balancer.state.tenant_holds import TenantHolds

RESULTS = ("complaint", "not_counted", "unattributed", "malformed", "no_source_ip", "too_large")


class ComplaintStore:
    def __init__(self, client: redis.Redis, config: BalancerConfig, clock: Clock = SYSTEM) -> None:
        self.r = client
        self.config = config
        self.clock = clock
        self.keys = KeySchema(config.redis.prefix)
        self.arms = config.experiment_arms
        self.counts = ComplaintCounts(client, self.keys, config.feedback.rate_retention, bool(config.tenants))
        self.experiments = ExperimentStore(client, self.keys)

    def arm_of(self, queue_ids: tuple[str, ...]) -> tuple[str, str] | None:
        """The experiment arm of the reported message: the first of its Received ids with
        an arm record of a configured experiment (a provider's own ids have none)."""
        if not queue_ids or not self.arms:
            return None
        for raw in self.experiments.arm_records(queue_ids, self.clock.wall()):
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
        scope = None
        if attribution is not None and attribution.endpoint is not None:
            scope = ComplaintScope(attribution.endpoint, attribution.provider, attribution.tenant)
        self.counts.record(result, self.clock.wall(), scope, arm)

    def hold_tenant(self, attribution: Attribution) -> str:
        """feedback.complaints.tenant_hold, after a complaint about one of the tenant's
        messages: hold its new mail (or move it to the rule's pool) when its last 24 h
        pass the share; returns what was done ("" when nothing)."""
        rule = self.config.feedback.complaints.tenant_hold
        tenant = attribution.tenant
        if rule is None or tenant not in self.config.tenants:
            return ""
        day = StatusReads(self.r, self.keys).tenant_days([tenant], self.clock.wall())[tenant]
        sent, complained = day["sent"], day["complained"]
        if sent < rule.min_delivered or complained * 100 <= rule.above_percent * sent:
            return ""
        share = f"{complained} complaints of {sent} delivered in 24 h ({100 * complained / sent:.2f}%)"
        reason = f"{share}, over feedback.complaints.tenant_hold's {rule.above_percent:g}%"
        holds = TenantHolds(self.r, self.keys)  # not an operator's write: no audit entry
        if rule.pool is not None:
            placed = holds.move(tenant, rule.pool, rule.duration, reason, "fbl")
            return f"tenant {tenant} {'moved' if placed else 'already moved'} to pool {rule.pool}: {share}"
        placed = holds.hold(tenant, rule.duration, reason, "fbl")
        return f"tenant {tenant} {'held' if placed else 'already held'}: {share}"

    def evaluate(self, attribution: Attribution) -> list[RateResult]:
        """Run the complaint rate rules for the complaint's (endpoint, provider)."""
        rules = self.config.feedback.complaint_rules
        if attribution.endpoint is None or not rules:
            return []
        pair = (attribution.endpoint, attribution.provider)
        return evaluate_rates(self.r, self.keys, rules, {pair}, self.clock.wall())
