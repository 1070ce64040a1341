"""A message's experiment arm, as its record in Redis says (``{sb}:arm:<queue id>``),
and whether its outcomes count in the experiment's current run. Read by the
feedback daemon for deliveries and by ``smtp-balancer fbl`` for complaints."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NamedTuple

import redis

from smtp_balancer.observe.metrics import STATE_JUNK
from smtp_balancer.state.experiments import ExperimentStore
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.values import COUNT_DIGITS, parse_decimal, parse_int, text_of


class ArmRecord(NamedTuple):
    experiment: str
    arm: str
    decided_at: int | None  # epoch seconds; None in a record written before it had one

    @property
    def pair(self) -> tuple[str, str]:
        return self.experiment, self.arm


def read_arm_record(raw: object) -> ArmRecord | None:
    """An arm record's value "<experiment> <arm> <decided at>" (or, written by an
    earlier version, "<experiment> <arm>"), else None."""
    parts = (text_of(raw) or "").split(" ")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        return None
    if len(parts) == 2:
        return ArmRecord(parts[0], parts[1], None)
    decided_at = parse_int(parts[2], COUNT_DIGITS)
    return None if decided_at is None else ArmRecord(parts[0], parts[1], decided_at)


def configured_record(raw: object, arms: Collection[tuple[str, str]]) -> ArmRecord | None:
    """The arm record ``raw`` holds, if it names a configured (experiment, arm); one
    that does not parse or names another is junk, so Redis content never makes new
    keys or metric labels."""
    record = read_arm_record(raw)
    if (record is None and raw is not None) or (record is not None and record.pair not in arms):
        STATE_JUNK.labels("arm_record").inc()  # unreadable, or no configured arm
        return None
    return record


def read_runs_since(client: redis.Redis, keys: KeySchema, experiments: Iterable[str]) -> dict[str, float]:
    """experiment -> the ``since`` of its hash (``experiment start --reset``), where set."""
    out: dict[str, float] = {}
    for name, raw in ExperimentStore(client, keys).since(experiments).items():
        value = parse_decimal(text_of(raw))
        if value is None:  # hand-edited: every message counts, as before any reset
            STATE_JUNK.labels("experiment_since").inc()
        else:
            out[name] = value
    return out


def counts_in_run(record: ArmRecord, since: float | None) -> bool:
    """Whether a message's outcomes count in its experiment's current run: not when it
    was decided before ``experiment start --reset`` (``since``)."""
    return since is None or record.decided_at is None or record.decided_at >= int(since)
