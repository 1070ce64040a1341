"""How the quota book tells the lease service that work is queued.

The service sleeps while nothing is queued, instead of waking 20 times a second to
find nothing: that was over half of an idle daemon's CPU. A book raises its
signal when it queues a refill, a give-back or an arm record, or counts a
decision with none counted since the last write (the service then times when the
counts fall due); the service clears
it before it takes the work, so work queued while a round runs raises it again
and no wake-up is lost.
"""

from __future__ import annotations

from collections.abc import Callable


class WorkSignal:
    """Raised once until cleared: a busy decider calls back once per round, not per
    message. ``callback`` must be safe to call from any thread (the milter decides in
    its own threads): the lease service's calls ``loop.call_soon_threadsafe``."""

    def __init__(self) -> None:
        self.raised = False
        self.callback: Callable[[], None] | None = None

    def raise_(self) -> None:
        if not self.raised:
            self.raised = True
            if self.callback is not None:
                self.callback()

    def clear(self) -> None:
        self.raised = False
