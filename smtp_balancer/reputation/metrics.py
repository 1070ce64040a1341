"""``smtp_balancer_reputation{endpoint,provider,source}``: what the imported exports
say of each endpoint, as a level every feedback daemon exports from Redis.

Levels, so that one alert covers both providers: 3 Postmaster HIGH or SNDS GREEN,
2 MEDIUM or YELLOW, 1 LOW or RED, 0 BAD or blocked (an SNDS IP-status row). An
endpoint with two addresses (IPv4 and IPv6) shows the worse; only the records of
the newest day a source holds for it count, so an old verdict about an address
that later left the providers' samples does not linger.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from smtp_balancer.reputation.rules import LEVELS


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


class ReputationGauges(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._levels: dict[tuple[str, str, str], int] = {}

    def update(self, records: Mapping[tuple[str, str], Mapping[str, str]], endpoints: frozenset[str]) -> int:
        """Take a fresh read of the records; returns the number of junk fields."""
        found = levels(records, endpoints)
        junk = found.pop(("", "", "junk"), 0)
        with self._lock:
            self._levels = found
        return junk

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            held = dict(self._levels)
        family = GaugeMetricFamily(
            "smtp_balancer_reputation",
            "What the providers' exports (`reputation import`) say of the endpoint, newest day: "
            "3 HIGH/GREEN, 2 MEDIUM/YELLOW, 1 LOW/RED, 0 BAD/blocked",
            labels=["endpoint", "provider", "source"],
        )
        for labels, level in sorted(held.items()):
            family.add_metric(list(labels), level)
        yield family


GAUGES = ReputationGauges()
REGISTRY.register(GAUGES)
