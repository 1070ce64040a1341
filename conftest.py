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


# The longest tests go first, longest first (a full run's --durations): one started
# last would keep one xdist worker busy alone at the end of the run (pytest-xdist hands
# tests out in collection order). Its first chunk (a quarter of a worker's share) puts
# all seven on the first worker, about 13 minutes of work, while the other takes the
# rest; the short tests left at the end even the two out.
LONGEST_FIRST = (
    "integration/test_fleet_eight.py",
    "integration/test_limits_postfix.py::test_a_rate_cap_of_60_a_minute",
    "integration/test_requeue_postfix.py::test_killed_or_hung_daemons",
    "integration/test_adaptive_postfix.py::test_a_deferring_provider",
    "integration/test_replay_exim.py",
    "integration/test_watchdog.py",
    "integration/test_replay_postfix.py",
)


def _rank(item: pytest.Item) -> int:
    for rank, prefix in enumerate(LONGEST_FIRST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: the rest keep their order
