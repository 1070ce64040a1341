"""Judging managed warm-ups' days (their records: state/warmup_store.py).

The feedback daemon judges each managed endpoint once per UTC day: the record's
day, if it is before today, is judged from its counter and its per-day outcomes
(``{sb}:daily:<ep>:<day>``), and the record moves to today with the new step.
Only the last recorded day is judged: a day no daemon judged holds the step. A step
that would advance holds while the providers' newest verdict about one of the
endpoint's IPs is under ``reputation.hold_warmup_below`` (``reputation import``).
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
from smtp_balancer.reputation.rules import warmup_hold
from smtp_balancer.state.keys import KeySchema, day_bucket
from smtp_balancer.state.live import Junk
from smtp_balancer.state.reputation import ReputationStore
from smtp_balancer.state.warmup_store import WarmupState

log = logging.getLogger("smtp_balancer.feedback")


@dataclass(frozen=True)
class Judgement:
    endpoint: str
    step: int
    why: str


class WarmupRecords:
    def __init__(self, client: redis.Redis, config: BalancerConfig) -> None:
        keys = KeySchema(config.redis.prefix)
        self.state = WarmupState(client, keys)
        self.reputation = ReputationStore(client, keys, config.reputation.retention_days)
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
            junk: Junk = []
            record = self.state.record(name, junk)
            if junk:
                log.warning(
                    "warm-up record %s is not a step and a day: starting it again at step 1", junk[0][1]
                )
            if record is None:
                step, why = 1, "step 1: the first day of a managed warm-up"
            elif record[1] >= day:
                continue
            elif self.state.held(name):
                step, why = record[0], f"held by an operator (smtp-balancer warmup release {name})"
            else:
                judged = record[1]
                used, outcomes = self.state.day(name, judged)
                step, why = judge(record[0], self.schedules[name], used, outcomes, warmup, judged)
                if step > record[0] and (held := self._reputation_hold(name, today)):
                    step, why = record[0], held  # a step back, or a hold, stands as judged
            self.state.advance(name, step, day, why, record[1] if record else "")
            out.append(Judgement(name, step, why))
        return out

    def _reputation_hold(self, endpoint: str, today: date) -> str:
        """reputation.hold_warmup_below: why the providers' verdicts keep the step ("" when not)."""
        settings = self.config.reputation
        if settings.hold_warmup_below is None:
            return ""
        records = self.reputation.records_of(endpoint)
        return warmup_hold(records, today, settings.max_age_days, settings.hold_warmup_below)
