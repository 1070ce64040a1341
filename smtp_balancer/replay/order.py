"""Log records put in time order as they are read, holding only a few seconds of them.

A log is nearly in time order: a daemon's workers, or syslog, may write a line a
moment after a later one. Each log is set right within ``SLACK_S`` and the logs
(the files of a rotation, in any order) are merged by time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
SLACK_S = 10.0  # how far out of order a line may be and still take its place


def in_time_order(
    items: Iterable[T], at: Callable[[T], float], late: Callable[[T], None], slack_s: float = SLACK_S
) -> Iterator[T]:
    """``items`` by ``at``, set right within ``slack_s``. An item later than that still
    comes (nothing is dropped), out of order, and is passed to ``late`` first."""
    held: list[tuple[float, int, T]] = []
    newest = last = float("-inf")
    seq = itertools.count()
    for item in items:
        t = at(item)
        if t < last:
            late(item)
            yield item
            continue
        newest = max(newest, t)
        heapq.heappush(held, (t, next(seq), item))
        while held[0][0] < newest - slack_s:
            last, _, out = heapq.heappop(held)
            yield out
    while held:
        yield heapq.heappop(held)[2]


def merged(streams: Iterable[Iterator[T]], at: Callable[[T], float]) -> Iterator[T]:
    """Streams each in time order, as one."""
    return heapq.merge(*streams, key=at)
