"""What a route would have answered, from what the MTA log says it did. Sans I/O.

- A message replayed onto the route it actually took gets its own attempts, at
  their own times: replaying the live config reproduces the log exactly.
- Otherwise the reply is drawn (seeded) from the route's ``latest`` attempts at or
  before the message's time (its first one when it made none before): never from
  after it, so a throttle is not felt before the log shows it.
- A route the log never used (a new endpoint, or one that never sent to that
  provider) gets the provider's attempts on the other routes, and is marked
  unobserved: how a new IP would be received is a guess.
- A provider the log never saw at all gets no reply: counted as delivered,
  and marked unobserved.
"""

from __future__ import annotations

import copy
import random
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from smtp_balancer.replay.inputs import Attempt

LATEST = 20  # a reply is drawn from the route's latest this many before the message


@dataclass
class _Series:
    times: list[float]
    attempts: list[Attempt]

    def near(self, at: float, latest: int, rng: random.Random) -> Attempt:
        """One of the ``latest`` replies at or before ``at`` (the first after it when there
        is none): never a reply from after a change the route had not seen yet."""
        hi = bisect_right(self.times, at)
        if hi == 0:
            return self.attempts[0]
        return self.attempts[rng.randrange(max(0, hi - latest), hi)]


class ReplyModel:
    def __init__(self, attempts: Iterable[Attempt], latest: int = LATEST, seed: int = 1) -> None:
        self.latest = latest
        self.rng = random.Random(seed)
        by_route: dict[tuple[str, str], list[Attempt]] = defaultdict(list)
        by_provider: dict[str, list[Attempt]] = defaultdict(list)
        self.by_queue_id: dict[str, list[Attempt]] = defaultdict(list)
        for attempt in attempts:
            d = attempt.delivery
            by_route[(d.endpoint, d.provider)].append(attempt)
            by_provider[d.provider].append(attempt)
            self.by_queue_id[d.queue_id].append(attempt)
        self.routes = {key: self._series(items) for key, items in by_route.items()}
        self.providers = {key: self._series(items) for key, items in by_provider.items()}

    def again(self, seed: int) -> ReplyModel:
        """The same replies with draws of their own, for another config's replay: the
        indexes are shared, not built again."""
        other = copy.copy(self)
        other.rng = random.Random(seed)
        return other

    @staticmethod
    def _series(items: list[Attempt]) -> _Series:
        items.sort(key=lambda a: a.at)
        return _Series([a.at for a in items], items)

    def own(self, queue_id: str, endpoint: str) -> list[Attempt]:
        """The message's own attempts through ``endpoint`` (its actual route), in time order."""
        if not queue_id:
            return []
        return sorted(
            (a for a in self.by_queue_id.get(queue_id, ()) if a.delivery.endpoint == endpoint),
            key=lambda a: a.at,
        )

    def drawn(self, endpoint: str, provider: str, at: float) -> tuple[Attempt | None, bool]:
        """A reply for a message sent by (endpoint, provider) at ``at``, and whether that
        route was observed in the log."""
        series = self.routes.get((endpoint, provider))
        if series is not None:
            return series.near(at, self.latest, self.rng), True
        series = self.providers.get(provider)
        if series is not None:
            return series.near(at, self.latest, self.rng), False
        return None, False
