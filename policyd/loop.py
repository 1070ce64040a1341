"""The policy daemon's event loop: asyncio's own, with the start of each select() noted.

Deciding for a request its client gave up on spends quota on mail that leaves by
the default transport, so ``session.abandoned`` asks the kernel how old a
request is (TCP_INFO) and whether its client has closed (a peek): two system
calls per decision, about a sixth of a decision's CPU. While the loop keeps up,
the loop itself bounds a request's age, with no system call:

An I/O callback runs after the select() of its loop iteration. Bytes that were
already waiting when the *previous* select() started would have been read in
the previous iteration, if the transport was reading then and that read took
everything pending. So bytes read now arrived after the previous select()
started, and ``now - previous_select`` bounds their age. A frozen or stalled
loop makes that bound large, and then the kernel is asked as before.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from typing import Any


class NotedSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The platform's default selector; ``previous`` is when the select() before the
    latest one started (loop.time() terms: the monotonic clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.latest = float("-inf")
        self.previous = float("-inf")

    def select(self, timeout: float | None = None) -> list[Any]:
        self.previous = self.latest
        self.latest = time.monotonic()
        return super().select(timeout)  # type: ignore[no-any-return]


class PolicyLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.noted = NotedSelector()
        super().__init__(self.noted)


def noted_selector(loop: asyncio.AbstractEventLoop) -> NotedSelector | None:
    """``loop``'s selector, if it notes when each select() started."""
    return loop.noted if isinstance(loop, PolicyLoop) else None
