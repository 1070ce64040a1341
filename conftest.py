"""Root conftest: fixtures both tests/ and integration/ use (a real redis-server per test).

Every process the tests start (daemons included) runs on a clock that showed
TEST_TIME when this session started and ticks from there, whatever the real date:
warm-up days and counter keys never depend on when the suite runs, and a daemon
started late reads the same time as the test that started it. Unit tests inject
their own FixedClock.
"""

import os
import time

# set before smtp_balancer.clock is imported: its SYSTEM clock reads this once
_pinned = os.environ.setdefault("SMTP_BALANCER_TEST_TIME", "2026-11-24T10:30:00+00:00")
if "@" not in _pinned:  # anchored to this session's start, for every child process
    os.environ["SMTP_BALANCER_TEST_TIME"] = f"{_pinned}@{time.time():.3f}"

pytest_plugins = ["integration.fixtures"]
