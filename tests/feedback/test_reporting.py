"""The feedback daemon's reporting: lines counted exactly, trouble logged a few at a time."""

from __future__ import annotations

import logging
from collections import Counter

from smtp_balancer.feedback import metrics
from smtp_balancer.feedback.processor import Batch
from smtp_balancer.feedback.reporting import BatchReport
from smtp_balancer.observe.ratelimit import LogLimiter


def report() -> BatchReport:
    return BatchReport({"out1"}, LogLimiter(logging.getLogger("smtp_balancer.feedback")))


def test_a_log_full_of_garbage_is_counted_exactly_and_logged_briefly(caplog):
    reporting = report()
    caplog.set_level(logging.INFO, logger="smtp_balancer.feedback")
    garbage = metrics.LOG_LINES.labels("garbage")
    before = garbage._value.get()
    for _ in range(10):
        reporting.batch(Batch(garbage=[f"unparsable delay= in line {i}" for i in range(100)]), [], [])
    assert garbage._value.get() == before + 1000
    shown = [r.getMessage() for r in caplog.records if r.getMessage().startswith("log line skipped")]
    assert len(shown) == reporting.notes.burst
    reporting.notes.flush(everything=True)
    assert (
        caplog.records[-1].getMessage().startswith(f"{1000 - reporting.notes.burst} more unparsable log line")
    )


def test_bind_errors_are_counted_per_endpoint_and_logged_briefly(caplog):
    reporting = report()
    caplog.set_level(logging.WARNING, logger="smtp_balancer.feedback")
    counter = metrics.BIND_ERRORS.labels("out1")
    before = counter._value.get()
    for _ in range(20):
        reporting.batch(Batch(bind_errors=Counter({"out1": 3})), [], [])
    assert counter._value.get() == before + 60
    shown = [r.getMessage() for r in caplog.records if "cannot bind its source address" in r.getMessage()]
    assert 1 <= len(shown) <= reporting.notes.burst and shown[0].startswith(
        "endpoint out1: Postfix cannot bind"
    )
