"""Polling with a deadline, for tests and the demo: nothing here sleeps longer than it must."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How long a message may take through the test Postfix before a wait gives up. When qmgr
# scans the incoming queue in the moment between cleanup marking a queue file ready and
# closing it, the file is still locked: qmgr logs "skipped, still being delivered" and
# sets its time 60 s into the future, and no scan takes it before then. The next scan
# after that is the master's wakeup of qmgr, every 5 s in the test master.cf (300 s in
# Postfix's stock one). Mail that passed is seen as soon as it arrives; this is a ceiling.
MAIL_S = 120

# How long a daemon (ours, Postfix, Exim, Redis) may take to get ready before a start
# gives up. A ceiling for a hang, not a measure of speed: on a loaded 2-core CI host a
# restarted policyd took 15 s from exec to its first log line (its Python imports alone
# take over a second idle), and a fixed 15 s bound failed a run there.
START_S = 90


class WaitTimeout(AssertionError):
    """What was awaited did not happen in time; the message says what it was."""


def wait_until(check: Callable[[], T], timeout: float, what: str, step: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def wait_for_progress(count: Callable[[], int], target: int, stall_s: float, what: str) -> int:
    """Poll ``count`` until it reaches ``target``. Gives up only when it has not grown for
    ``stall_s``: a slow host that keeps delivering is waited for, however long the whole
    takes, and a stuck one still fails."""
    best = count()
    grew_at = time.monotonic()
    while best < target:
        time.sleep(0.05)
        now_count = count()
        if now_count > best:
            best, grew_at = now_count, time.monotonic()
        elif time.monotonic() - grew_at >= stall_s:
            raise WaitTimeout(f"{what}: stuck at {best} of {target} for {stall_s:.0f}s")
    return best
