"""The reads behind ``smtp-balancer status`` and the state gauges, each one pipelined
round; replies come back raw (an error value where a key has another type), and
observe/status.py makes the snapshot of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import redis

from smtp_balancer.state.keys import KeySchema, hour_bucket
from smtp_balancer.state.values import parse_count, text_of

TENANT_HOURS = 24  # a tenant's day: the hour being counted and the 23 before it
TENANT_FIELDS = ("sent", "deferred", "bounced", "expired", "complained")


class StatusReads:
    def __init__(self, client: redis.Redis, keys: KeySchema) -> None:
        self.r, self.keys = client, keys

    def pools_and_endpoints(
        self, pools: Sequence[str], endpoints: Sequence[str], day: str, hour: str
    ) -> tuple[list[object], list[tuple[object, object, object]]]:
        """Each pool's live weights hash; each endpoint's state hash and day and hour totals."""
        k = self.keys
        pipe = self.r.pipeline(transaction=False)
        for pool in pools:
            pipe.hgetall(k.pool_weights(pool))
        for ep in endpoints:
            pipe.hgetall(k.endpoint_state(ep))
            pipe.hget(k.day_counter(ep, day), "total")
            pipe.hget(k.hour_counter(ep, hour), "total")
        replies = pipe.execute(raise_on_error=False)
        rest = replies[len(pools) :]
        return replies[: len(pools)], list(zip(rest[0::3], rest[1::3], rest[2::3], strict=True))

    def warmups(self, endpoints: Sequence[str]) -> list[object]:
        """Each managed warm-up record's [step, day, why]."""
        if not endpoints:
            return []
        pipe = self.r.pipeline(transaction=False)
        for ep in endpoints:
            pipe.hmget(self.keys.warmup(ep), ["step", "day", "why"])
        return pipe.execute(raise_on_error=False)

    def provider_counts(
        self, pairs: Sequence[tuple[str, str]], day: str, hour: str
    ) -> list[tuple[object, object]]:
        """Each (endpoint, provider)'s day and hour counts."""
        if not pairs:
            return []
        pipe = self.r.pipeline(transaction=False)
        for ep, provider in pairs:
            pipe.hget(self.keys.day_counter(ep, day), provider)
            pipe.hget(self.keys.hour_counter(ep, hour), provider)
        replies = pipe.execute(raise_on_error=False)
        return list(zip(replies[::2], replies[1::2], strict=True))

    def rate_windows(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[object, object, object]]:
        """Each rate-capped (endpoint, provider)'s window (its seconds, as a hash), and
        its slow-down factor's value and TTL."""
        if not pairs:
            return []
        pipe = self.r.pipeline(transaction=False)
        for ep, provider in pairs:
            pipe.hgetall(self.keys.rate(ep, provider))
            pipe.get(self.keys.slow(ep, provider))
            pipe.ttl(self.keys.slow(ep, provider))
        replies = pipe.execute(raise_on_error=False)
        return list(zip(replies[0::3], replies[1::3], replies[2::3], strict=True))

    def tenant_hours(self, tenants: Sequence[str], hours: Sequence[str]) -> list[list[object]]:
        """Each tenant's outcome hashes for these hours."""
        pipe = self.r.pipeline(transaction=False)
        for name in tenants:
            for hour in hours:
                pipe.hgetall(self.keys.tenant_outcomes(name, hour))
        replies = pipe.execute(raise_on_error=False)
        n = len(hours)
        return [replies[i * n : (i + 1) * n] for i in range(len(tenants))]

    def tenant_days(self, tenants: Sequence[str], now: float) -> dict[str, dict[str, int]]:
        """Per tenant, each of TENANT_FIELDS summed over the last TENANT_HOURS UTC hours
        up to ``now`` (epoch seconds); a junk count reads as 0."""
        at = datetime.fromtimestamp(now, UTC)
        hours = [hour_bucket(at - timedelta(hours=h)) for h in range(TENANT_HOURS)]
        out: dict[str, dict[str, int]] = {}
        for name, replies in zip(tenants, self.tenant_hours(tenants, hours), strict=True):
            sums = dict.fromkeys(TENANT_FIELDS, 0)
            for reply in replies:
                if isinstance(reply, dict):
                    fields = {text_of(k): v for k, v in reply.items()}  # a client decoding replies or not
                    for f in TENANT_FIELDS:
                        sums[f] += parse_count(text_of(fields.get(f))) or 0
            out[name] = sums
        return out

    def queued(self) -> list[object]:
        """Every host's deferred-mail hash (the requeue daemons write them)."""
        keys = sorted(self.r.scan_iter(match=self.keys.queued_pattern(), count=500))
        if not keys:
            return []
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return pipe.execute(raise_on_error=False)
