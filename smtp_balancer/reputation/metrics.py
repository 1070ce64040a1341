"""``smtp_balancer_reputation{endpoint,provider,source}``: what the imported exports
say of each endpoint, as a level every feedback daemon exports from Redis; and
``smtp_balancer_tenant_reported_spam_rate{tenant,provider}``: the spam rate Postmaster
Tools reports for each tenant's domain.

Levels, so that one alert covers both providers: 3 Postmaster HIGH or SNDS GREEN,
2 MEDIUM or YELLOW, 1 LOW or RED, 0 BAD or blocked (an SNDS IP-status row). An
endpoint with two addresses (IPv4 and IPv6) shows the worse; only the records of
the newest day a source holds for it count, so an old verdict about an address
that later left the providers' samples does not linger.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from datetime import date

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from smtp_balancer.decision.tenants import OTHER, TenantTable
from smtp_balancer.reputation.rules import LEVELS
from smtp_balancer.state.reputation import recent


def levels(
    records: Mapping[tuple[str, str], Mapping[str, str]], endpoints: frozenset[str]
) -> dict[tuple[str, str, str], int]:
    """(endpoint, provider, source) -> level, from ``ReputationStore.endpoint_records``;
    returns also how many fields were junk, under the key ("", "", "junk")."""
    newest: dict[tuple[str, str, str], tuple[str, int]] = {}
    junk = 0
    for (endpoint, provider), fields in records.items():
        if endpoint not in endpoints:
            junk += len(fields)
            continue
        for name, text in fields.items():
            source, _, rest = name.partition(":")
            signal = rest.partition(":")[0]
            scale = LEVELS.get((source, signal))
            parts = text.split(" ", 2)
            if scale is None:
                continue  # a number (complaint rate, trap hits): no level
            if len(parts) < 2 or parts[1] not in scale or len(parts[0]) != 10:
                junk += 1
                continue
            key, (day, level) = (endpoint, provider, source), (parts[0], scale[parts[1]])
            held = newest.get(key)
            if held is None or day > held[0] or (day == held[0] and level < held[1]):
                newest[key] = (day, level)
    out = {key: level for key, (_, level) in newest.items()}
    if junk:
        out[("", "", "junk")] = junk
    return out


def reported_spam(
    records: Mapping[tuple[str, str], Mapping[str, str]], tenants: TenantTable, today: date, max_age_days: int
) -> dict[tuple[str, str], float]:
    """(tenant, provider) -> the user-reported spam rate its domains' newest records give
    (``ReputationStore.domain_records``), of a day at most ``max_age_days`` ago; a tenant
    with several domains (its subdomains) shows the newest day's, the highest of that
    day. Domains of no tenant are left out."""
    newest: dict[tuple[str, str], tuple[str, float]] = {}
    for (domain, provider), fields in records.items():
        tenant = tenants.of(domain)
        text = fields.get("postmaster:spam_ratio")
        parts = text.split(" ", 2) if text else []
        if tenant == OTHER or len(parts) < 2 or not _recent(parts[0], today, max_age_days):
            continue
        try:
            ratio = float(parts[1])
        except ValueError:
            continue
        if not 0 <= ratio <= 1:
            continue
        key, held = (tenant, provider), newest.get((tenant, provider))
        if held is None or parts[0] > held[0] or (parts[0] == held[0] and ratio > held[1]):
            newest[key] = (parts[0], ratio)
    return {key: ratio for key, (_, ratio) in newest.items()}


def _recent(day: str, today: date, max_age_days: int) -> bool:
    try:
        return recent(date.fromisoformat(day), today, max_age_days)
    except ValueError:  # a hand-edited day
        return False


class ReputationGauges(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._levels: dict[tuple[str, str, str], int] = {}
        self._spam: dict[tuple[str, str], float] = {}

    def update(self, records: Mapping[tuple[str, str], Mapping[str, str]], endpoints: frozenset[str]) -> int:
        """Take a fresh read of the records; returns the number of junk fields."""
        found = levels(records, endpoints)
        junk = found.pop(("", "", "junk"), 0)
        with self._lock:
            self._levels = found
        return junk

    def update_tenants(self, rates: Mapping[tuple[str, str], float]) -> None:
        """The tenants' reported spam rates (``reported_spam``)."""
        with self._lock:
            self._spam = dict(rates)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            held, spam = dict(self._levels), dict(self._spam)
        family = GaugeMetricFamily(
            "smtp_balancer_reputation",
            "What the providers' exports (`reputation import`) say of the endpoint, newest day: "
            "3 HIGH/GREEN, 2 MEDIUM/YELLOW, 1 LOW/RED, 0 BAD/blocked",
            labels=["endpoint", "provider", "source"],
        )
        for labels, level in sorted(held.items()):
            family.add_metric(list(labels), level)
        yield family
        reported = GaugeMetricFamily(
            "smtp_balancer_tenant_reported_spam_rate",
            "The user-reported spam rate Postmaster Tools gives the tenant's domain (`reputation import`),"
            " newest day within reputation.max_age_days: complaints per message in the inbox",
            labels=["tenant", "provider"],
        )
        for (tenant, provider), ratio in sorted(spam.items()):
            reported.add_metric([tenant, provider], ratio)
        yield reported


GAUGES = ReputationGauges()
REGISTRY.register(GAUGES)
