"""Managed warm-ups in Redis: ``{sb}:warmup:<ep>`` (step, day, why, judged, hold) and
the inputs of a day's judgement: the endpoint's day counter and its per-day outcomes
(``{sb}:daily:<ep>:<day>``). feedback/warmup_store.py judges."""

from __future__ import annotations

import redis

from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.live import Junk, parse_warmup
from smtp_balancer.state.values import parse_count, text_of

HOLD = "hold"  # "1": an operator holds the step (smtp-balancer warmup hold); the day moves on


class WarmupState:
    def __init__(self, client: redis.Redis, keys: KeySchema) -> None:
        self.r, self.keys = client, keys

    def record(self, endpoint: str, junk: Junk) -> tuple[int, str] | None:
        """The record's (step, day); None when there is none or it is junk (in ``junk``)."""
        key = self.keys.warmup(endpoint)
        return parse_warmup(self.r.hmget(key, ["step", "day"]), key, junk)

    def held(self, endpoint: str) -> bool:
        return text_of(self.r.hget(self.keys.warmup(endpoint), HOLD)) == "1"

    def day(self, endpoint: str, day: str) -> tuple[int, dict[str, int]]:
        """What the endpoint sent on ``day`` (its counter's total) and the day's outcomes."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(self.keys.day_counter(endpoint, day), "total")
        pipe.hgetall(self.keys.daily(endpoint, day))
        used_raw, outcomes_raw = pipe.execute()
        outcomes = {(text_of(k) or ""): parse_count(text_of(v)) or 0 for k, v in (outcomes_raw or {}).items()}
        return parse_count(text_of(used_raw)) or 0, outcomes

    def advance(self, endpoint: str, step: int, day: str, why: str, judged: str) -> None:
        """The record moves to ``day`` at ``step`` (``judged``: the day judged, if any)."""
        self.r.hset(
            self.keys.warmup(endpoint), mapping={"step": step, "day": day, "why": why, "judged": judged}
        )
