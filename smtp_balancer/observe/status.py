"""The status snapshot behind ``status``, the state gauges and ``trace``: pools with
their live weights, endpoints with their state, suspensions, counters and caps,
limits per provider, adaptive factors and throttles, queued mail and tenants.

It reads Redis with the key schema's names and the value grammar of state/, and
the caps from decision/ (a managed warm-up's step from its record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import redis

from smtp_balancer.clock import SYSTEM, Clock, utc_now
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.providers import OTHER
from smtp_balancer.decision.rates import window_count
from smtp_balancer.decision.warmup import Caps, CapsTable
from smtp_balancer.state.audit import AuditTrail
from smtp_balancer.state.factors import Factors, Standing, strings_with_ttl
from smtp_balancer.state.keys import KeySchema, day_bucket, hour_bucket
from smtp_balancer.state.live import parse_warmup, returns_at
from smtp_balancer.state.reputation import HeldRecord, ReputationStore
from smtp_balancer.state.status_reads import StatusReads
from smtp_balancer.state.tenant_holds import TenantHolds
from smtp_balancer.state.values import (
    parse_count,
    parse_state,
    parse_throttle,
    parse_until,
    parse_weight,
    text_of,
)


@dataclass(frozen=True)
class Suspension:
    provider: str
    ttl_s: int  # -1: no expiry
    reason: str


@dataclass
class EndpointStatus:
    name: str
    state: str
    reason: str
    state_junk: bool
    suspensions: list[Suspension]
    day_count: int | None  # None: junk counter
    hour_count: int | None
    day_cap: int | None
    hour_cap: int | None
    warmup_day: int | None
    warmup_why: str = ""  # a managed warm-up's last judgement (held, stepped back, advanced)
    # who set the state and when (epoch seconds), as the state hash has them
    state_by: str = ""
    state_since: int | None = None
    requeue: bool = False  # drain --requeue: queued mail moves too
    until: int | None = None  # a quarantine that lifts by itself then
    lifted: bool = False  # a quarantine whose `until` has passed: active, as the deciders read it


@dataclass
class MemberStatus:
    endpoint: str
    yaml_weight: int
    live_weight: int | None
    junk_weight: str | None

    @property
    def weight(self) -> int:
        return self.yaml_weight if self.live_weight is None else self.live_weight


@dataclass
class PoolStatus:
    name: str
    stickiness: str
    spread: int
    overflow: str
    members: list[MemberStatus] = field(default_factory=list)


@dataclass
class LimitStatus:
    """One endpoint x provider limit: a warm-up cap beside the total, or a rate cap."""

    endpoint: str
    provider: str  # or "all" for a rate cap over every provider
    day_count: int | None = None  # None: junk counter (or no cap)
    day_cap: int | None = None
    hour_count: int | None = None
    hour_cap: int | None = None
    rate_count: int | None = None  # messages in the last minute
    rate_cap: int | None = None  # as configured
    slow_factor: float | None = None  # a `slow` action in force
    slow_ttl_s: int = 0
    slow_reason: str = ""


@dataclass
class Snapshot:
    taken_at: datetime
    pools: list[PoolStatus]
    endpoints: dict[str, EndpointStatus]
    # deferred messages bound to each endpoint, summed over the hosts whose requeue
    # daemon reported in the last few sweeps; None: no host reports
    queued: dict[str, int] | None = None
    queued_hosts: int = 0
    # tenant -> sent/deferred/bounced/expired/complained over the last TENANT_HOURS;
    # empty when no tenants are configured
    tenants: dict[str, dict[str, int]] = field(default_factory=dict)
    limits: list[LimitStatus] = field(default_factory=list)
    adaptive: list[Standing] = field(default_factory=list)
    throttles: list[Standing] = field(default_factory=list)
    # tenant -> (seconds left, -1 for none; why): its new mail goes to the hold queue
    tenant_holds: dict[str, tuple[int, str]] = field(default_factory=dict)
    # the imported reputation records that may still act (reputation.max_age_days)
    reputation: list[HeldRecord] = field(default_factory=list)
    # tenant -> (seconds left, -1 for none; pool; why): its new mail goes to that pool
    tenant_moves: dict[str, tuple[int, str, str]] = field(default_factory=dict)


def _stored_int(mapping: dict[bytes, bytes] | None, name: bytes) -> int | None:
    """A hash field that holds a count or epoch seconds; None when absent or junk."""
    raw = text_of(mapping.get(name)) if mapping else None
    return None if raw is None else parse_count(raw)


class StatusReader:
    def __init__(self, client: redis.Redis, config: BalancerConfig, clock: Clock = SYSTEM) -> None:
        self.r = client
        self.config = config
        self.clock = clock
        self.keys = KeySchema(config.redis.prefix)
        self.reads = StatusReads(client, self.keys)
        self.caps = CapsTable(config)
        self.factors = Factors(client, self.keys, AuditTrail(client, self.keys, clock))  # reads only

    def snapshot(self, now: datetime | None = None, *, tenants: bool = True, limits: bool = True) -> Snapshot:
        """``tenants=False``, ``limits=False``: skip the per-tenant hours and the limits per
        provider (the state gauges show neither)."""
        now = now or utc_now(self.clock)
        steps, whys = self._warmup_records()
        caps = self.caps.on(now.date(), steps)
        pools = list(self.config.pools.items())
        names = list(self.config.endpoints)

        weights, per_endpoint = self.reads.pools_and_endpoints(
            [name for name, _ in pools], names, day_bucket(now), hour_bucket(now)
        )

        out_pools = []
        for (pool_name, pool), live in zip(pools, weights, strict=True):
            live = live if isinstance(live, dict) else {}
            status = PoolStatus(pool_name, pool.stickiness, pool.spread, pool.overflow)
            for m in pool.endpoints:
                raw = text_of(live.get(_enc(m.endpoint)) if live else None)
                parsed = parse_weight(raw)
                status.members.append(
                    MemberStatus(
                        m.endpoint, m.weight, parsed, raw if raw is not None and parsed is None else None
                    )
                )
            out_pools.append(status)

        endpoints: dict[str, EndpointStatus] = {}
        for ep, (state_raw, day_raw, hour_raw) in zip(names, per_endpoint, strict=True):
            state_map = state_raw if isinstance(state_raw, dict) else None
            stored = text_of(state_map.get(b"state")) if state_map else None
            state = parse_state(stored) if state_map is not None else None
            until_raw = text_of(state_map.get(b"until")) if state_map else None
            # the deciders' reading: a quarantine whose `until` has passed is active
            returns = returns_at(stored, until_raw)
            lifted = state == "quarantined" and returns is not None and returns <= now.timestamp()
            cap = caps[ep]
            endpoints[ep] = EndpointStatus(
                name=ep,
                state="active" if lifted else state or "active",
                lifted=lifted,
                reason=text_of(state_map.get(b"reason")) or "" if state_map else "",
                state_junk=state is None,
                suspensions=self._suspensions(ep),
                day_count=_count(day_raw),
                hour_count=_count(hour_raw),
                day_cap=cap.day,
                hour_cap=cap.hour,
                warmup_day=cap.warmup_day,
                warmup_why=whys.get(ep, ""),
                state_by=text_of(state_map.get(b"by")) or "" if state_map else "",
                state_since=_stored_int(state_map, b"since"),
                requeue=bool(state_map) and text_of(state_map.get(b"requeue")) == "1",
                until=None if (lifts := parse_until(until_raw)) is None else int(lifts),
            )
        queued, hosts = self._queued()
        return Snapshot(
            now,
            out_pools,
            endpoints,
            queued,
            hosts,
            self._tenants(now) if tenants else {},
            self._limits(now, caps) if limits else [],
            self.factors.standing("adaptive", set(names)) if limits else [],
            self.factors.standing("throttle", set(names)) if limits else [],
            TenantHolds(self.r, self.keys).holds() if tenants else {},
            self._reputation(now) if limits else [],
            TenantHolds(self.r, self.keys).moves() if tenants else {},
        )

    def _reputation(self, now: datetime) -> list[HeldRecord]:
        store = ReputationStore(self.r, self.keys, self.config.reputation.retention_days)
        return store.in_force(now.date(), self.config.reputation.max_age_days)

    def _warmup_records(self) -> tuple[dict[str, tuple[int, str]], dict[str, str]]:
        """Managed warm-ups' (step, day) and last judgement."""
        managed = self.config.managed_warmups
        if not managed:
            return {}, {}
        steps, whys = {}, {}
        for name, reply in zip(managed, self.reads.warmups(managed), strict=True):
            values = reply if isinstance(reply, list) else [None, None, None]
            found = parse_warmup(values[:2], self.keys.warmup(name), [])
            if found is not None:
                steps[name] = found
                whys[name] = text_of(values[2]) or ""
            elif values[0] is not None or isinstance(reply, Exception):
                whys[name] = "record unreadable: on step 1 until the feedback daemon rewrites it"
        return steps, whys

    def _limits(self, now: datetime, caps: dict[str, Caps]) -> list[LimitStatus]:
        out: list[LimitStatus] = []
        for ep, cap in caps.items():
            for provider, (day_cap, hour_cap) in sorted(cap.providers.items()):
                out.append(LimitStatus(ep, provider, day_cap=day_cap, hour_cap=hour_cap))
            for provider, rate in sorted(cap.rates.items()):
                out.append(LimitStatus(ep, provider, rate_cap=rate))
        counted = [limit for limit in out if limit.rate_cap is None]
        pairs = [(limit.endpoint, limit.provider) for limit in counted]
        counts = self.reads.provider_counts(pairs, day_bucket(now), hour_bucket(now))
        for limit, (day_raw, hour_raw) in zip(counted, counts, strict=True):
            limit.day_count, limit.hour_count = _count(day_raw), _count(hour_raw)
        rated = [limit for limit in out if limit.rate_cap is not None]
        pairs = [(limit.endpoint, limit.provider) for limit in rated]
        wall = self.clock.wall()
        for limit, (window, slow_raw, ttl) in zip(rated, self.reads.rate_windows(pairs), strict=True):
            slow = text_of(slow_raw)
            limit.rate_count = window_count(window, wall) if isinstance(window, dict) else None
            limit.slow_factor = parse_throttle(slow)
            if limit.slow_factor is not None:
                limit.slow_ttl_s = ttl if isinstance(ttl, int) else 0
                limit.slow_reason = slow.partition(" ")[2] if slow else ""
        return out

    def _tenants(self, now: datetime) -> dict[str, dict[str, int]]:
        if not self.config.tenants:
            return {}
        return self.reads.tenant_days([*self.config.tenants, OTHER], now.timestamp())

    def _queued(self) -> tuple[dict[str, int] | None, int]:
        replies = self.reads.queued()
        if not replies:
            return None, 0
        total: dict[str, int] = {}
        for reply in replies:
            if not isinstance(reply, dict):
                continue
            for name, raw in reply.items():
                n = parse_count(text_of(raw))
                endpoint = text_of(name) or ""
                if n is not None and endpoint in self.config.endpoints:
                    total[endpoint] = total.get(endpoint, 0) + n
        return total, len(replies)

    def _suspensions(self, endpoint: str) -> list[Suspension]:
        prefix = self.keys.suspension(endpoint, "")
        out = []
        for key, reason, ttl in strings_with_ttl(self.r, self.keys.suspension_pattern(endpoint)):
            text = text_of(reason) if isinstance(reason, bytes) else "(unreadable value: not a string)"
            ttl_s = ttl if isinstance(ttl, int) else -2
            out.append(Suspension((text_of(key) or "").removeprefix(prefix), ttl_s, text or ""))
        return out


def _enc(text: str) -> bytes:
    return text.encode()


def _count(raw: object) -> int | None:
    if isinstance(raw, Exception):
        return None
    return parse_count(text_of(raw))
