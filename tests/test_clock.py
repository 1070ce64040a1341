import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from smtp_balancer.clock import TEST_TIME_ENV, ShiftedClock, parse_test_time

AT = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)


def test_an_anchored_test_time_is_the_same_in_every_process_whenever_it_starts():
    # two processes given one value: the later one reads the same time, not the start time
    since = time.time() - 600  # the session started ten minutes ago
    at, anchor = parse_test_time(f"{AT.isoformat()}@{since:.3f}")
    assert at == AT and anchor == pytest.approx(since, abs=1e-3)
    late = ShiftedClock(at, anchor)
    assert late.wall() - AT.timestamp() == pytest.approx(600, abs=5)


def test_a_plain_test_time_starts_at_the_process_start():
    at, anchor = parse_test_time(AT.isoformat())
    assert anchor is None
    assert ShiftedClock(at, anchor).wall() - AT.timestamp() == pytest.approx(0, abs=5)


@pytest.mark.parametrize(
    "value", ["2026-11-24T10:30:00", "2026-11-24T10:30:00+00:00@soon", "2026-11-24T10:30:00+00:00@-5", "noon"]
)
def test_a_bad_test_time_is_refused(value: str):
    with pytest.raises(ValueError):
        parse_test_time(value)


def test_the_suite_hands_every_process_one_anchored_clock():
    # the root conftest anchors the value, so a daemon started late reads the same time
    assert "@" in os.environ[TEST_TIME_ENV]
    since = time.time() - 600
    env = {**os.environ, TEST_TIME_ENV: f"{AT.isoformat()}@{since:.3f}"}
    before = time.time()
    child = subprocess.run(
        [sys.executable, "-c", "from smtp_balancer.clock import SYSTEM; print(SYSTEM.wall())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    after = time.time()
    shown = float(child.stdout) - AT.timestamp()  # the child's seconds since AT
    assert before - since <= shown <= after - since
