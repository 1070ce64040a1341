"""Complaint counts in Redis.

A complaint lands in the outcome bucket of the minute it arrived (field
``complained``), beside the feedback daemon's ``sent`` counts, so a rate rule
with ``measure: complained`` reads complaints per delivered message over its
window; also in the endpoint's day, the tenant's hour and the experiment arm's
hash. Every report counts in one totals hash that each feedback daemon exports
as metrics (``report:<result>``, ``complaint:<endpoint>:<provider>:<tenant>``,
``arm:<experiment>:<arm>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from smtp_balancer.state.keys import (
    DAY_TTL_S,
    EXPSTATS_TTL_S,
    TENANT_TTL_S,
    KeySchema,
    hour_bucket,
    minute_bucket,
)


@dataclass(frozen=True)
class ComplaintScope:
    """Where a complaint counts: the route its message left by, and its tenant."""

    endpoint: str
    provider: str
    tenant: str


def total_field(scope: ComplaintScope) -> str:
    return f"complaint:{scope.endpoint}:{scope.provider}:{scope.tenant}"


def arm_field(experiment: str, arm: str) -> str:
    return f"arm:{experiment}:{arm}"


class ComplaintCounts:
    def __init__(self, client: redis.Redis, keys: KeySchema, retention_s: int, tenants: bool) -> None:
        """``retention_s``: how long minute buckets live (feedback.rate_retention);
        ``tenants``: whether tenants are configured (their hours are counted)."""
        self.r, self.keys, self.retention_s, self.tenants = client, keys, retention_s, tenants

    def record(
        self, result: str, now: float, scope: ComplaintScope | None = None, arm: tuple[str, str] | None = None
    ) -> None:
        """Count one report (epoch seconds ``now``) in one transaction: every result in
        the totals; a complaint with a scope also where rates read it, and in its arm."""
        pipe = self.r.pipeline(transaction=True)
        totals = self.keys.fbl_totals()
        pipe.hincrby(totals, f"report:{result}", 1)
        if result == "complaint" and scope is not None:
            pipe.hincrby(totals, total_field(scope), 1)
            bucket = self.keys.outcomes(scope.endpoint, scope.provider, minute_bucket(now))
            pipe.hincrby(bucket, "complained", 1)
            pipe.expire(bucket, self.retention_s)
            daily = self.keys.daily(scope.endpoint, minute_bucket(now)[:8])
            pipe.hincrby(daily, "complained", 1)
            pipe.expire(daily, DAY_TTL_S)
            if self.tenants:
                tenant = self.keys.tenant_outcomes(
                    scope.tenant, hour_bucket(datetime.fromtimestamp(now, UTC))
                )
                pipe.hincrby(tenant, "complained", 1)
                pipe.expire(tenant, max(self.retention_s, TENANT_TTL_S))
            if arm is not None:
                stats = self.keys.expstats(*arm)
                pipe.hincrby(stats, "complained", 1)
                pipe.expire(stats, EXPSTATS_TTL_S)
                pipe.hincrby(totals, arm_field(*arm), 1)
        pipe.execute()

    def totals(self) -> dict[object, object]:
        """The totals hash, raw (the metrics exporter reads it)."""
        raw = self.r.hgetall(self.keys.fbl_totals())
        return raw if isinstance(raw, dict) else {}
