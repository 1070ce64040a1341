"""Managed warm-ups in Redis: ``{sb}:warmup:<ep>`` (step, day, why, judged).

The feedback daemon judges each managed endpoint once per UTC day: the record's
day, if it is before today, is judged from its counter and its per-day outcomes
(``{sb}:daily:<ep>:<day>``), and the record moves to today with the new step.
Only the last recorded day is judged: a day no daemon judged holds the step.
Two daemons judging at once read the same inputs and write the same record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

import redis

from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.warmup import CapsTable
from smtp_balancer.feedback.warmup_days import judge
from smtp_balancer.state.keys import KeySchema, day_bucket
from smtp_balancer.state.live import parse_warmup
from smtp_balancer.state.values import parse_count, text_of

log = logging.getLogger("smtp_balancer.feedback")

HOLD = "hold"  # "1": an operator holds the step (smtp-balancer warmup hold); the day moves on


@dataclass(frozen=True)
class Judgement:
    endpoint: str
    step: int
    why: str


class WarmupRecords:
    def __init__(self, client: redis.Redis, config: BalancerConfig) -> None:
        self.r = client
        self.keys = KeySchema(config.redis.prefix)
        self.config = config
        self.schedules = CapsTable(config).schedules
        self.managed = config.managed_warmups

    def judge_days(self, today: date) -> list[Judgement]:
        """Move every managed record to today; the judgements made (none when all are current)."""
        day = day_bucket(today)
        out = []
        for name in self.managed:
            warmup = self.config.endpoints[name].warmup
            assert warmup is not None
            if today < warmup.start:
                continue
            key = self.keys.warmup(name)
            junk: list[tuple[str, str, str]] = []
            record = parse_warmup(self.r.hmget(key, ["step", "day"]), key, junk)
            if junk:
                log.warning("warm-up record %s is not a step and a day: starting it again at step 1", key)
            if record is None:
                step, why = 1, "step 1: the first day of a managed warm-up"
            elif record[1] >= day:
                continue
            elif text_of(self.r.hget(key, HOLD)) == "1":
                step, why = record[0], f"held by an operator (smtp-balancer warmup release {name})"
            else:
                judged = record[1]
                pipe = self.r.pipeline(transaction=False)
                pipe.hget(self.keys.day_counter(name, judged), "total")
                pipe.hgetall(self.keys.daily(name, judged))
                used_raw, outcomes_raw = pipe.execute()
                outcomes = {
                    (text_of(k) or ""): parse_count(text_of(v)) or 0 for k, v in (outcomes_raw or {}).items()
                }
                step, why = judge(
                    record[0],
                    self.schedules[name],
                    parse_count(text_of(used_raw)) or 0,
                    outcomes,
                    warmup,
                    judged,
                )
            self.r.hset(
                key, mapping={"step": step, "day": day, "why": why, "judged": record[1] if record else ""}
            )
            out.append(Judgement(name, step, why))
        return out
