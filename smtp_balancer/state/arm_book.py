"""Arm records: which experiment arm each message is in, by queue id, for the
feedback daemon (delivery outcomes) and ``smtp-balancer fbl`` (complaints).

A record is a field of a small hash in its UTC day's book (``armbook.lua``): linear
hashing keeps each hash under Redis's listpack limit, so a record costs about 42
bytes whatever the day's volume, where a key of its own cost 165. The day's keys
expire ``ARM_RECORD_TTL_S`` after the day ends (Postfix's maximal_queue_lifetime),
and a lookup reads the books of those days, newest first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from smtp_balancer.state.keys import ARM_RECORD_TTL_S, KeySchema

DAY_S = 86_400
# the days a lookup reads: the tomorrow of a decider whose clock is ahead, today, and
# those a record outlives
LOOKBACK_DAYS = math.ceil(ARM_RECORD_TTL_S / DAY_S)


def arm_day(wall: float) -> int:
    """The UTC day (days since the epoch) a record written at ``wall`` goes in."""
    return int(wall // DAY_S)


def write_call(
    keys: KeySchema, wall: float, records: Sequence[tuple[str, str]]
) -> tuple[list[str], list[Any]]:
    """arms.lua's keys and arguments for ``records`` (queue id, value) written at ``wall``."""
    day = arm_day(wall)
    ttl = (day + 1) * DAY_S - int(wall) + ARM_RECORD_TTL_S
    args: list[Any] = [keys.base, day, ttl]
    for queue_id, value in records:
        args += [queue_id, value]
    return [keys.arm_dir(day)], args


def read_call(keys: KeySchema, wall: float, queue_ids: Sequence[str]) -> tuple[list[str], list[Any]]:
    """arm_read.lua's keys and arguments: the books from tomorrow's back."""
    newest = arm_day(wall) + 1
    return [keys.arm_dir(newest)], [keys.base, newest, LOOKBACK_DAYS + 1, *queue_ids]
