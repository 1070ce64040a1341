"""LogLimiter: a few lines per kind and interval, then one summary with the count."""

from __future__ import annotations

import logging

import pytest

from smtp_balancer.clock import FixedClock
from smtp_balancer.observe.ratelimit import LogLimiter

log = logging.getLogger("test.ratelimit")


@pytest.fixture
def limiter() -> LogLimiter:
    return LogLimiter(log, burst=3, interval_s=60, clock=FixedClock(0))


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_first_burst_then_one_summary_per_kind(limiter: LogLimiter, caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    shown = [limiter.warning("bad", "bad request %d", i) for i in range(224)]
    assert shown == [True] * 3 + [False] * 221
    assert limiter.warning("other", "other thing") is True  # kinds are limited apart
    assert messages(caplog) == ["bad request 0", "bad request 1", "bad request 2", "other thing"]

    limiter.clock.advance(60)  # type: ignore[attr-defined]
    limiter.flush()
    summary = messages(caplog)[4:]
    assert summary == [
        "221 more bad line(s) left out of the log in 60s (the first 3 of each 60s are logged);"
        " latest: bad request 223"
    ]
    assert caplog.records[-1].levelno == logging.WARNING
    # a new interval: the burst is allowed again, and nothing is summarised twice
    assert limiter.warning("bad", "again") is True
    limiter.flush()
    assert messages(caplog)[-1] == "again"


def test_a_late_event_summarises_the_interval_before_it(limiter: LogLimiter, caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    for i in range(5):
        limiter.info("odd", "odd %d", i)
    limiter.clock.advance(61)  # type: ignore[attr-defined]
    limiter.info("odd", "odd late")
    assert messages(caplog)[-2:] == [
        "2 more odd line(s) left out of the log in 61s (the first 3 of each 60s are logged); latest: odd 4",
        "odd late",
    ]
    assert caplog.records[-2].levelno == logging.INFO


def test_nothing_is_counted_below_the_log_level(limiter: LogLimiter, caplog):
    caplog.set_level(logging.WARNING, logger=log.name)
    for _ in range(10):
        assert limiter.info("quiet", "not shown") is False
    limiter.clock.advance(60)  # type: ignore[attr-defined]
    limiter.flush()
    assert messages(caplog) == []
