"""Tenant holds: a tenant whose new mail goes to Postfix's hold queue.

A hold is one key with a TTL, ``{sb}:tenanthold:<tenant>``, whose value says why.
``smtp-balancer fbl`` sets it when a complaint takes the tenant's rate over
``feedback.complaints.tenant_hold``; ``smtp-balancer tenant hold`` sets it by hand;
``tenant release`` (or the TTL) ends it. The policy daemon reads every hold once a
second (``read_holds``) and answers HOLD at RCPT for the held tenants' mail.
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

    def release(self, tenant: str) -> bool:
        released = bool(self.r.delete(self.keys.tenant_hold(tenant)))
        if released and self.audit is not None:
            self.audit.record("tenant release", tenant, "held", "none")
        return released

    def holds(self) -> dict[str, tuple[int, str]]:
        """tenant -> (seconds left, -1 for none; the reason)."""
        out: dict[str, tuple[int, str]] = {}
        prefix = self.keys.tenant_hold_prefix()
        for raw in self.r.scan_iter(match=prefix + "*", count=500):
            key = text_of(raw)
            pipe = self.r.pipeline(transaction=False)
            pipe.ttl(key)
            pipe.get(key)
            ttl, reason = pipe.execute(raise_on_error=False)
            if isinstance(ttl, int) and ttl != -2 and isinstance(reason, bytes | str):
                out[key[len(prefix) :]] = (ttl, text_of(reason))
        return out


async def read_holds(channel: ScriptChannel, keys: KeySchema) -> dict[str, str]:
    """tenant -> reason, for every hold in force (the policy daemon's read)."""
    prefix = keys.tenant_hold_prefix()
    names = await scan(channel, prefix + "*")
    values = await call_batched(channel, [("GET", k) for k in names])
    return {
        text_of(k)[len(prefix) :]: text_of(v)
        for k, v in zip(names, values, strict=True)
        if isinstance(v, bytes | str)
    }
