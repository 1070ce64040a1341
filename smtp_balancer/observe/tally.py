"""Per-message metrics as plain numbers, read by Prometheus when it scrapes. Compiled
(setup.py).

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` are three Python calls
each, under a lock: a dozen calls a message in the policy daemon. A ``Tally`` child
is an add in compiled code, and its family is a collector that reports the sums.

With workers (``PROMETHEUS_MULTIPROC_DIR``), each worker's series must reach the
supervisor through prometheus_client's files, so a family is then a real
``Counter`` or ``Histogram`` and counts through it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString


class TallyChild:
    """One label set's count."""

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class CounterChild(TallyChild):
    """With workers: a real Counter's child behind a TallyChild's face, so that compiled
    callers call ``inc`` natively either way (an ``Any`` child is a Python method call)."""

    def __init__(self, real: Any) -> None:
        super().__init__()
        self.real = real

    def inc(self, amount: float = 1.0) -> None:
        self.real.inc(amount)


class Tally:
    """A counter family: ``labels(...)`` gives a child to ``inc()``, as a Counter's does."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        multiprocess: bool,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], TallyChild] = {}
        # with workers: the real thing, its files summed by the supervisor
        self.real: Counter | None = (
            Counter(name, documentation, labelnames, registry=registry) if multiprocess else None
        )
        if self.real is None:
            registry.register(self)  # type: ignore[arg-type]  # a collector: collect() and describe()

    def labels(self, *values: str) -> TallyChild:
        """The child for these label values (with workers, one that counts in the Counter's)."""
        if self.real is not None:
            return CounterChild(self.real.labels(*values))
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected, got {values!r}")
            # setdefault: one child even when two threads (the milter's) ask at once
            child = self.children.setdefault(values, TallyChild())
        return child

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):
            family.add_metric(values, child.value)
        return [family]

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]


class Timing:
    """A histogram without labels: ``observe(seconds)``, as a Histogram's."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        multiprocess: bool,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = [float(b) for b in buckets if b != math.inf]
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0
        self.real: Histogram | None = (
            Histogram(name, documentation, buckets=buckets, registry=registry) if multiprocess else None
        )
        if self.real is None:
            registry.register(self)  # type: ignore[arg-type]  # a collector: collect() and describe()

    def observe(self, amount: float) -> None:
        if self.real is not None:
            self.real.observe(amount)
            return
        self.sum += amount
        i = 0
        bounds = self.bounds
        while i < len(bounds) and amount > bounds[i]:
            i += 1
        self.counts[i] += 1

    def collect(self) -> Iterable[Metric]:
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip([*self.bounds, math.inf], list(self.counts), strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), float(cumulative)))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, self.sum)
        return [family]

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]
