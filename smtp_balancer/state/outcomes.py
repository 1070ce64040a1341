"""Reading the feedback daemon's outcome counts per endpoint, provider and UTC minute
(``{sb}:outcomes:<ep>:<provider>:<minute>``), for `status --watch`."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.values import parse_count, text_of

FIELDS = ("sent", "deferred", "bounced")


@dataclass(frozen=True)
class MinuteOutcomes:
    endpoint: str
    provider: str
    sent: int
    deferred: int
    bounced: int


def minute_outcomes(
    client: redis.Redis, keys: KeySchema, minute: str, endpoints: set[str]
) -> list[MinuteOutcomes]:
    """The outcomes counted in one UTC minute (YYYYMMDDHHMM), per endpoint and provider."""
    prefix = f"{keys.base}:outcomes:"
    names = sorted(
        (text_of(k) or "" for k in client.scan_iter(match=f"{prefix}*:{minute}", count=1000)),
    )
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hmget(name, *FIELDS)
    out = []
    for name, values in zip(names, pipe.execute(raise_on_error=False), strict=True):
        endpoint, _, rest = name[len(prefix) :].partition(":")
        provider = rest.rpartition(":")[0]
        if endpoint not in endpoints or not provider or not isinstance(values, list):
            continue
        counts = [parse_count(text_of(v)) or 0 for v in values]
        out.append(MinuteOutcomes(endpoint, provider, *counts))
    return out
