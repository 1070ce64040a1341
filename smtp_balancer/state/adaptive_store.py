"""Adaptive factors in Redis: the outcome window they are computed from, and
``{sb}:adaptive:<ep>:<provider>`` (``"<factor> <cause>"``, with a TTL). What the
numbers mean is feedback/adaptive.py's; feedback/adaptive_store.py decides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.values import parse_count, text_of


@dataclass(frozen=True)
class Window:
    """One (endpoint, provider)'s outcome counts per minute (``fields`` of each), and
    its factor key's value and TTL (seconds; negative: none, or no TTL)."""

    rows: list[list[int]]
    factor: str | None
    ttl: object
    junk: int  # counts that were not integers (read as 0)


class AdaptiveState:
    def __init__(self, client: redis.Redis, keys: KeySchema) -> None:
        self.r, self.keys = client, keys

    def windows(
        self, pairs: Sequence[tuple[str, str]], minutes: Sequence[str], fields: Sequence[str]
    ) -> list[Window]:
        """Each pair's window over ``minutes`` (UTC minute buckets), in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for ep, provider in pairs:
            for m in minutes:
                pipe.hmget(self.keys.outcomes(ep, provider, m), list(fields))
            pipe.get(self.keys.adaptive(ep, provider))
            pipe.ttl(self.keys.adaptive(ep, provider))
        replies = iter(pipe.execute(raise_on_error=False))
        out = []
        for _ in pairs:
            rows, junk = [], 0
            for _ in minutes:
                reply = next(replies)
                row = []
                for v in reply if isinstance(reply, list) else []:
                    n = parse_count(text_of(v))
                    junk += n is None
                    row.append(n or 0)
                if row:
                    rows.append(row)
            out.append(Window(rows, text_of(next(replies)), next(replies), junk))
        return out

    def write(self, factors: Sequence[tuple[str, str, str | None]], ttl_s: int) -> None:
        """Set each (endpoint, provider)'s factor value for ``ttl_s``; None deletes it."""
        if not factors:
            return
        pipe = self.r.pipeline(transaction=False)
        for ep, provider, value in factors:
            key = self.keys.adaptive(ep, provider)
            if value is None:
                pipe.delete(key)
            else:
                pipe.set(key, value, ex=ttl_s)
        pipe.execute()
