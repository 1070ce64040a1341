"""Complaint metrics: ``smtp-balancer fbl`` runs once per report, so its counts live in
Redis (``{sb}:fbl:totals``) and every feedback daemon exports them from there.

They are counters of the whole fleet since the first report: each feedback
daemon exports the same values, so dashboards take ``max`` across instances.
Fields outside the bounded label sets (hand-edited, or from a config that has
since dropped an endpoint or tenant) are skipped and counted as junk.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from smtp_balancer.complaints.attribute import BUILTIN_REPORTERS
from smtp_balancer.complaints.store import RESULTS
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.providers import OTHER
from smtp_balancer.observe.metrics import STATE_JUNK
from smtp_balancer.state.values import parse_count, text_of


@dataclass(frozen=True)
class ComplaintLabels:
    """The bounded label sets: config names, plus ``other``."""

    endpoints: frozenset[str]
    providers: frozenset[str]  # every provider name a complaint can carry
    tenants: frozenset[str]  # "other" included
    reporting: frozenset[str]  # the providers whose feedback loops send reports
    arms: frozenset[tuple[str, str]] = frozenset()  # (experiment, arm)

    @classmethod
    def from_config(cls, config: BalancerConfig, providers: set[str]) -> ComplaintLabels:
        reporting = set(BUILTIN_REPORTERS.values()) | set(config.feedback.complaints.reporters.values())
        return cls(
            frozenset(config.endpoints),
            frozenset(providers | {OTHER}),
            frozenset([*config.tenants, OTHER]),
            frozenset(reporting & (providers | {OTHER})),
            config.experiment_arms,
        )

    def zeros(self) -> Iterator[tuple[str, str, str]]:
        for endpoint in self.endpoints:
            for provider in self.reporting:
                for tenant in self.tenants:
                    yield endpoint, provider, tenant


class ComplaintTotals(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: dict[str, int] = {}
        self._complaints: dict[tuple[str, str, str], int] = {}
        self._arms: dict[tuple[str, str], int] = {}

    def update(self, raw: Mapping[object, object], labels: ComplaintLabels) -> int:
        """Take a fresh HGETALL of the totals hash; returns the number of junk fields."""
        endpoints, providers, tenants = labels.endpoints, labels.providers, labels.tenants
        reports: dict[str, int] = {}
        # every endpoint x reporting provider x tenant starts at 0, so that increase()
        # counts the first complaint of a series too
        complaints = dict.fromkeys(labels.zeros(), 0)
        arms = dict.fromkeys(labels.arms, 0)
        junk = 0
        for key, value in raw.items():
            name, count = text_of(key) or "", parse_count(text_of(value))
            kind, _, rest = name.partition(":")
            parts = rest.split(":")
            if count is None:
                junk += 1
            elif kind == "report" and rest in RESULTS:
                reports[rest] = count
            elif (
                kind == "complaint"
                and len(parts) == 3
                and parts[0] in endpoints
                and parts[1] in providers
                and parts[2] in tenants
            ):
                complaints[(parts[0], parts[1], parts[2])] = count
            elif kind == "arm" and len(parts) == 2 and (parts[0], parts[1]) in arms:
                arms[(parts[0], parts[1])] = count
            else:
                junk += 1
        if junk:
            STATE_JUNK.labels("fbl_totals").inc(junk)
        with self._lock:
            self._reports, self._complaints, self._arms = reports, complaints, arms
        return junk

    def collect(self) -> Iterator[CounterMetricFamily]:
        with self._lock:
            reports, complaints, arms = dict(self._reports), dict(self._complaints), dict(self._arms)
        family = CounterMetricFamily(
            "smtp_balancer_fbl_reports",
            "Feedback-loop reports read by `smtp-balancer fbl`, fleet-wide (from Redis), by result "
            "(complaint, not_counted, unattributed, malformed, no_source_ip, too_large)",
            labels=["result"],
        )
        for result in RESULTS:
            family.add_metric([result], reports.get(result, 0))
        yield family
        family = CounterMetricFamily(
            "smtp_balancer_complaints",
            "Spam complaints (ARF reports) fleet-wide (from Redis), by endpoint, provider and tenant; "
            "every endpoint, reporting provider and tenant from 0",
            labels=["endpoint", "provider", "tenant"],
        )
        for labels, count in sorted(complaints.items()):
            family.add_metric(list(labels), count)
        yield family
        family = CounterMetricFamily(
            "smtp_balancer_experiment_complaints",
            "Spam complaints about messages of an experiment arm, fleet-wide (`smtp-balancer fbl`'s "
            "totals, exported by every feedback daemon: take max)",
            labels=["experiment", "arm"],
        )
        for (experiment, arm), count in sorted(arms.items()):
            family.add_metric([experiment, arm], count)
        yield family


class TenantRates(Collector):
    """Each tenant's spam complaints per delivered message over the last 24 hours,
    with the sample (delivered): what Gmail and Yahoo hold bulk senders to (0.3%)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._days: dict[str, tuple[int, int]] = {}

    def update(self, days: Mapping[str, tuple[int, int]]) -> None:
        with self._lock:
            self._days = dict(days)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            days = dict(self._days)
        rate = GaugeMetricFamily(
            "smtp_balancer_tenant_spam_rate",
            "Spam complaints (`smtp-balancer fbl`) per message delivered, per tenant, last 24 h "
            "(absent while the tenant delivered nothing)",
            labels=["tenant"],
        )
        delivered = GaugeMetricFamily(
            "smtp_balancer_tenant_delivered",
            "Messages delivered per tenant in the last 24 h: the spam rate's sample",
            labels=["tenant"],
        )
        for tenant, (sent, complained) in sorted(days.items()):
            delivered.add_metric([tenant], sent)
            if sent:
                rate.add_metric([tenant], complained / sent)
        yield rate
        yield delivered


TOTALS = ComplaintTotals()
REGISTRY.register(TOTALS)
TENANT_RATES = TenantRates()
REGISTRY.register(TENANT_RATES)
