"""Per-message metrics as plain numbers: scraped as prometheus_client's own would be."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from smtp_balancer.observe.tally import Tally, Timing

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


def exposition(registry: CollectorRegistry) -> list[str]:
    # prometheus_client's own metrics add a _created series (the daemons turn it off)
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_a_tally_is_scraped_as_the_counter_it_replaces() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = Tally("t_decisions_total", "Decisions", ["pool", "outcome"], False, registry=ours)
    counter = Counter("t_decisions_total", "Decisions", ["pool", "outcome"], registry=theirs)
    rng = random.Random(7)
    for _ in range(1000):
        labels = (rng.choice(["main", "bulk", 'odd "pool"\n']), rng.choice(["route", "default"]))
        amount = rng.choice([1, 1, 2.5])
        tally.labels(*labels).inc(amount)
        counter.labels(*labels).inc(amount)
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("t_decisions_total", {"pool": "main", "outcome": "route"}) > 0


def test_a_timing_is_scraped_as_the_histogram_it_replaces() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    timing = Timing("t_seconds", "Time", BUCKETS, False, registry=ours)
    histogram = Histogram("t_seconds", "Time", buckets=BUCKETS, registry=theirs)
    assert exposition(ours) == exposition(theirs)  # every bucket at 0 before the first
    rng = random.Random(8)
    # on the bounds themselves too: a bucket counts what is at most its bound
    for amount in [*BUCKETS, 0.0, 2.0, *(rng.uniform(0, 1.2) for _ in range(1000))]:
        timing.observe(amount)
        histogram.observe(amount)
    assert exposition(ours) == exposition(theirs)


def test_wrong_label_counts_are_refused() -> None:
    tally = Tally("t_total", "T", ["a", "b"], False, registry=CollectorRegistry())
    with pytest.raises(ValueError, match="2 label values"):
        tally.labels("x")


def test_with_workers_the_real_metrics_count() -> None:
    # PROMETHEUS_MULTIPROC_DIR: each worker's files reach the supervisor, so a family
    # counts through prometheus_client (in this test process, its in-memory values)
    registry = CollectorRegistry()
    tally = Tally("t_mp_total", "T", ["a"], True, registry=registry)
    timing = Timing("t_mp_seconds", "T", BUCKETS, True, registry=registry)
    tally.labels("x").inc()
    timing.observe(0.003)
    assert tally.real is not None and timing.real is not None and not tally.children
    assert registry.get_sample_value("t_mp_total", {"a": "x"}) == 1
    assert registry.get_sample_value("t_mp_seconds_bucket", {"le": "0.005"}) == 1
