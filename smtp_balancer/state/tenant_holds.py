"""Tenant holds and moves: a tenant whose new mail goes to Postfix's hold queue (or
is frozen by Exim), or to one pool whatever rule it matches.

A hold is one key with a TTL, ``{sb}:tenanthold:<tenant>``, whose value says why; a
move is ``{sb}:tenantpool:<tenant>``, whose value is the pool and why. ``smtp-balancer
fbl`` sets one when a complaint takes the tenant's rate over
``feedback.complaints.tenant_hold``, ``reputation import`` when a domain's record
trips a rule; ``smtp-balancer tenant hold|move`` set them by hand; ``tenant
release`` (or the TTL) ends both. The deciders read them once a second
(``read_guards``).
"""

from __future__ import annotations

import redis

from smtp_balancer.state.audit import AuditTrail
from smtp_balancer.state.channel import ScriptChannel
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.live_reads import call_batched, scan
from smtp_balancer.state.values import text_of


class TenantHolds:
    def __init__(self, client: redis.Redis, keys: KeySchema, audit: AuditTrail | None = None) -> None:
        self.r, self.keys, self.audit = client, keys, audit

    def hold(self, tenant: str, seconds: int, reason: str, by: str) -> bool:
        """Hold the tenant; False when it is held already (that hold is left as it is)."""
        placed = bool(self.r.set(self.keys.tenant_hold(tenant), reason, ex=seconds, nx=True))
        if placed and self.audit is not None:
            self.audit.record("tenant hold", tenant, "none", f"{seconds}s", f"{by}: {reason}")
        return placed

    def move(self, tenant: str, pool: str, seconds: int, reason: str, by: str) -> bool:
        """Send the tenant's new mail to ``pool``; False when it is moved already (that
        move is left as it is)."""
        placed = bool(self.r.set(self.keys.tenant_pool(tenant), f"{pool} {reason}", ex=seconds, nx=True))
        if placed and self.audit is not None:
            self.audit.record("tenant move", tenant, "none", f"pool {pool} {seconds}s", f"{by}: {reason}")
        return placed

    def release(self, tenant: str) -> bool:
        """End the tenant's hold and its move; False when it had neither."""
        released = bool(self.r.delete(self.keys.tenant_hold(tenant), self.keys.tenant_pool(tenant)))
        if released and self.audit is not None:
            self.audit.record("tenant release", tenant, "held or moved", "none")
        return released

    def guard(self, tenant: str) -> tuple[str | None, tuple[str, str] | None]:
        """The tenant's hold reason, and its move (pool, why); None where it has none."""
        held, moved = self.r.mget(self.keys.tenant_hold(tenant), self.keys.tenant_pool(tenant))
        return (None if held is None else text_of(held)), (
            None if moved is None else pool_and_why(text_of(moved))
        )

    def holds(self) -> dict[str, tuple[int, str]]:
        """tenant -> (seconds left, -1 for none; the reason)."""
        return self._read(self.keys.tenant_hold_prefix())

    def moves(self) -> dict[str, tuple[int, str, str]]:
        """tenant -> (seconds left, -1 for none; the pool; the reason)."""
        moved = self._read(self.keys.tenant_pool_prefix()).items()
        return {tenant: (ttl, *pool_and_why(value)) for tenant, (ttl, value) in moved}

    def _read(self, prefix: str) -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        for raw in self.r.scan_iter(match=prefix + "*", count=500):
            key = text_of(raw)
            pipe = self.r.pipeline(transaction=False)
            pipe.ttl(key)
            pipe.get(key)
            ttl, reason = pipe.execute(raise_on_error=False)
            if isinstance(ttl, int) and ttl != -2 and isinstance(reason, bytes | str):
                out[key[len(prefix) :]] = (ttl, text_of(reason))
        return out


async def read_guards(
    channel: ScriptChannel, keys: KeySchema
) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Every hold in force (tenant -> reason) and every move (tenant -> (pool, reason)),
    in one SCAN: the deciders' read, once a second."""
    hold, move = keys.tenant_hold_prefix(), keys.tenant_pool_prefix()
    # one glob for both families ("tenanthold:", "tenantpool:"), not "tenant:<t>:<hour>"
    names = await scan(channel, keys.base + ":tenant[hp]o[lo][dl]:*")
    values = await call_batched(channel, [("GET", k) for k in names])
    holds: dict[str, str] = {}
    moves: dict[str, tuple[str, str]] = {}
    for raw, value in zip(names, values, strict=True):
        key = text_of(raw)
        if not isinstance(value, bytes | str):
            continue  # gone since the SCAN, or not a string
        text = text_of(value)
        if key.startswith(hold):
            holds[key[len(hold) :]] = text
        elif key.startswith(move):
            moves[key[len(move) :]] = pool_and_why(text)
    return holds, moves


def pool_and_why(value: str) -> tuple[str, str]:
    """A move's value, ``<pool> <why>``, apart."""
    pool, _, why = value.partition(" ")
    return pool, why
