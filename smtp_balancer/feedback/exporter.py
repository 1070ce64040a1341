"""The state gauges, the fleet's complaint totals and the reputation levels, exported
from Redis each round.

Every feedback daemon exports them (one per fleet is enough; several agree): the
endpoint states, suspensions, weights and warm-up counts from a ``status``
snapshot (``state_metrics.py``), and ``smtp-balancer fbl``'s totals, which that
command, running once per report, cannot export itself.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis

from smtp_balancer.clock import SYSTEM
from smtp_balancer.complaints import metrics as complaint_metrics
from smtp_balancer.complaints.metrics import ComplaintLabels
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.providers import OTHER, ProviderTable
from smtp_balancer.decision.tenants import TenantTable
from smtp_balancer.feedback import state_metrics
from smtp_balancer.observe.metrics import STATE_JUNK
from smtp_balancer.observe.status import StatusReader
from smtp_balancer.reputation import metrics as reputation_metrics
from smtp_balancer.state.complaints import ComplaintCounts
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.reputation import ReputationStore

log = logging.getLogger("smtp_balancer.feedback")


class StateExporter:
    def __init__(self, config: BalancerConfig, client: redis.Redis) -> None:
        self.r = client
        self.keys = KeySchema(config.redis.prefix)
        self.status = StatusReader(client, config)
        self.complaints = ComplaintCounts(
            client, self.keys, config.feedback.rate_retention, bool(config.tenants)
        )
        self.complaint_labels = ComplaintLabels.from_config(config, ProviderTable.from_config(config).names)
        self.reputation = ReputationStore(client, self.keys, config.reputation.retention_days)
        self.endpoints = frozenset(config.endpoints)
        self.tenants = [*config.tenants, OTHER] if config.tenants else []
        self.tenant_table = TenantTable(config.tenants)
        self.max_age_days = config.reputation.max_age_days

    def round(self) -> None:
        state_metrics.export(self.status.snapshot(tenants=False, limits=False))
        junk = complaint_metrics.TOTALS.update(self.complaints.totals(), self.complaint_labels)
        if junk:
            log.warning("%d junk fields in the complaint totals hash skipped", junk)
        if self.tenants:
            days = self.status.reads.tenant_days(self.tenants, SYSTEM.wall())
            complaint_metrics.TENANT_RATES.update({t: (d["sent"], d["complained"]) for t, d in days.items()})
        junk = reputation_metrics.GAUGES.update(self.reputation.endpoint_records(), self.endpoints)
        if junk:
            STATE_JUNK.labels("reputation").inc(junk)
            log.warning("%d reputation record fields that are not records skipped", junk)
        if self.tenants:
            today = datetime.fromtimestamp(SYSTEM.wall(), UTC).date()
            rates = reputation_metrics.reported_spam(
                self.reputation.domain_records(), self.tenant_table, today, self.max_age_days
            )
            reputation_metrics.GAUGES.update_tenants(rates)
