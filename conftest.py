"""Root conftest: fixtures both tests/ and integration/ use (a real redis-server per test).

Every process the tests start (daemons included) runs on a clock that showed
TEST_TIME when this session started and ticks from there, whatever the real date:
warm-up days and counter keys never depend on when the suite runs, and a daemon
started late reads the same time as the test that started it. Unit tests inject
their own FixedClock.
"""

import logging
import os
import time
from collections.abc import Iterator

import pytest

# set before smtp_balancer.clock is imported: its SYSTEM clock reads this once
_pinned = os.environ.setdefault("SMTP_BALANCER_TEST_TIME", "2026-11-24T10:30:00+00:00")
if "@" not in _pinned:  # anchored to this session's start, for every child process
    os.environ["SMTP_BALANCER_TEST_TIME"] = f"{_pinned}@{time.time():.3f}"

from smtp_balancer.observe.logs import StructuredFormatter  # noqa: E402  (after the clock's variable)

pytest_plugins = ["integration.fixtures"]


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """A test that runs a daemon's or the CLI's main in-process configures the root
    logger (observe/logs.configure) with a handler on its captured stderr, closed after
    the test: later tests in the same process (pytest-xdist runs many per worker) would
    log into a closed file. Our handlers go, and the level comes back, after each test."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if isinstance(handler.formatter, StructuredFormatter):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


# The longest tests go first (a full run's --durations, three workers), so that none
# starts late and keeps one worker busy alone at the end of the run. make test runs
# pytest-xdist with --maxschedchunk 1: each worker starts with two tests, in this order
# (the fleet test and adaptive on the first, limits and requeue on the second, fuzz
# and replay on the third), then takes one test at a time as it finishes one. With
# xdist's default chunks, the first worker took all of these, over 20 minutes of work.
LONGEST_FIRST = (
    "integration/test_fleet_eight.py",  # 604 s
    "integration/test_adaptive_postfix.py::test_a_deferring_provider",  # 92 s
    "integration/test_limits_postfix.py::test_a_rate_cap_of_60_a_minute",  # 182 s
    "integration/test_requeue_postfix.py::test_killed_or_hung_daemons",  # 90 s
    "tests/policyd/test_fuzz.py",  # 162 s
    "integration/test_replay_postfix.py",  # 108 s
    "integration/test_replay_exim.py",  # 117 s
    "tests/state/test_key_lifetimes.py",  # 104 s
    "integration/test_redis_acl.py",  # 86 s
    "tests/policyd/test_activation.py",  # 67 s with two workers in the daemon
    "integration/test_redis_cluster.py",  # 62 s
    "integration/test_watchdog.py",  # 58 s
)


def _rank(item: pytest.Item) -> int:
    for rank, prefix in enumerate(LONGEST_FIRST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: the rest keep their order
