"""What a route would have answered, from what the MTA log says it did. Sans I/O.

The MTA log is read once, in time order, a little ahead of the messages being
replayed, and only a bounded part of it is held: each route's and each
provider's latest replies, and the replies read ahead or just passed, by queue id.

- A message replayed onto the route it actually took gets its own attempts, at
  their own times: replaying the live config reproduces the log exactly. Those
  logged within ``AHEAD_S`` of its decision are found at once; a later retry of a
  recipient still deferred reaches it when the log is read that far.
- Otherwise the reply is drawn (seeded) from the route's ``latest`` attempts at or
  before the message's time: never from after it, so a throttle is not felt
  before the log shows it.
- A route with no reply yet borrows the provider's latest replies on the other
  routes; when the log never shows that route at all, the report marks it
  unobserved: how a new IP would be received is a guess.
- A provider with no reply yet gets none: counted as delivered.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable

from smtp_balancer.replay.inputs import Attempt

LATEST = 20  # a reply is drawn from the route's latest this many before the message
AHEAD_S = 300.0  # how far past a message the log is read before it is decided
BACK_S = 5.0  # replies kept by queue id after their time: a whole-second stamp can put
# a reply up to a second before the decision it followed


class ReplyModel:
    """One for a replay: the configs replayed side by side share it, each drawing with
    its own random source."""

    def __init__(self, latest: int = LATEST) -> None:
        self.latest = latest
        self.routes: dict[tuple[str, str], deque[Attempt]] = {}
        self.providers: dict[str, deque[Attempt]] = {}
        self.seen_routes: set[tuple[str, str]] = set()  # every route read so far
        self.by_queue_id: dict[str, list[Attempt]] = {}  # replies read ahead or just passed
        self.listeners: list[Callable[[Attempt], None]] = []  # told of each reply as it is read
        self.reached = -math.inf  # replies up to this time are in the routes' histories
        self._ahead: deque[Attempt] = deque()
        self._passed: deque[Attempt] = deque()

    @classmethod
    def of(cls, attempts: Iterable[Attempt], latest: int = LATEST) -> ReplyModel:
        """A model with a whole (small) log read at once: for tests and short periods."""
        model = cls(latest)
        for attempt in sorted(attempts, key=lambda a: a.at):
            model.read(attempt)
        return model

    def read(self, attempt: Attempt) -> None:
        """The next reply of the log (in time order)."""
        d = attempt.delivery
        self._ahead.append(attempt)
        self.by_queue_id.setdefault(d.queue_id, []).append(attempt)
        self.seen_routes.add((d.endpoint, d.provider))
        for listener in self.listeners:
            listener(attempt)

    def reach(self, at: float) -> None:
        """Time moves to ``at``: the replies up to it join their routes' histories, and
        those more than BACK_S before it leave the queue-id index."""
        if at <= self.reached:
            return
        self.reached = at
        ahead, passed = self._ahead, self._passed
        while ahead and ahead[0].at <= at:
            attempt = ahead.popleft()
            d = attempt.delivery
            route = self.routes.get((d.endpoint, d.provider))
            if route is None:
                route = self.routes[(d.endpoint, d.provider)] = deque(maxlen=self.latest)
            route.append(attempt)
            provider = self.providers.get(d.provider)
            if provider is None:
                provider = self.providers[d.provider] = deque(maxlen=self.latest)
            provider.append(attempt)
            passed.append(attempt)
        while passed and passed[0].at < at - BACK_S:
            qid = passed.popleft().delivery.queue_id
            held = self.by_queue_id.get(qid)
            if held is not None:
                held.pop(0)  # read in time order: the oldest is first
                if not held:
                    del self.by_queue_id[qid]

    def own(self, queue_id: str, endpoint: str) -> list[Attempt]:
        """The message's own attempts through ``endpoint`` (its actual route) read so far
        and not yet left behind, in time order."""
        if not queue_id:
            return []
        return [a for a in self.by_queue_id.get(queue_id, ()) if a.delivery.endpoint == endpoint]

    def drawn(self, endpoint: str, provider: str, rng: random.Random) -> tuple[Attempt | None, bool]:
        """A reply for a message sent now by (endpoint, provider), and whether it came
        from that route's own replies."""
        series = self.routes.get((endpoint, provider))
        if series:
            return series[rng.randrange(len(series))], True
        series = self.providers.get(provider)
        if series:
            return series[rng.randrange(len(series))], False
        return None, False
