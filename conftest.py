"""Root conftest: fixtures both tests/ and integration/ use (a real redis-server per test).

Every process the tests start (daemons included) runs on a clock that starts at
TEST_TIME and ticks from there, whatever the real date: warm-up days and counter
keys never depend on when the suite runs. Unit tests inject their own FixedClock.
"""

import os

os.environ.setdefault("SMTP_BALANCER_TEST_TIME", "2026-11-24T10:30:00+00:00")

pytest_plugins = ["integration.fixtures"]
