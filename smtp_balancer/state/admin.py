"""Operator actions on Redis state (the status snapshot is ``observe/status.py``).

Writes use the documented key schema, so anything done here can equally be
done with redis-cli, and the other way round.
"""

from __future__ import annotations

from typing import NamedTuple

import redis

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.config.builtins import OTHER, provider_names
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.durations import format_duration
from smtp_balancer.state.audit import AuditTrail
from smtp_balancer.state.factors import Factors, WarmupRecords
from smtp_balancer.state.keys import (
    ALL_PROVIDERS,
    KeySchema,
)
from smtp_balancer.state.values import parse_state, text_of


class AdminError(Exception):
    """An operator request that names something the config does not have."""


def _left(seconds: int) -> str:
    return "no expiry" if seconds < 0 else format_duration(seconds)


class Quarantine(NamedTuple):
    endpoint: str
    reason: str
    until: str | None  # epoch seconds, as stored (a junk value shows as it is)


class StateAdmin:
    def __init__(self, client: redis.Redis, config: BalancerConfig, clock: Clock = SYSTEM) -> None:
        self.r = client
        self.config = config
        self.clock = clock
        self.keys = KeySchema(config.redis.prefix)
        self.providers = provider_names(config.providers)
        self.audit = AuditTrail(client, self.keys, clock)  # every write below is recorded
        self.factors = Factors(client, self.keys, self.audit)
        self.warmups = WarmupRecords(client, self.keys, self.audit)

    # -- checks ----------------------------------------------------------------
    def check_endpoint(self, endpoint: str) -> None:
        """AdminError, naming the known ones, for an endpoint the config does not have."""
        if endpoint not in self.config.endpoints:
            known = ", ".join(sorted(self.config.endpoints))
            raise AdminError(f"unknown endpoint {endpoint!r} (known: {known})")

    def check_provider(self, provider: str) -> None:
        """AdminError, naming the known ones, for a provider no table has."""
        known = self.providers | {ALL_PROVIDERS, OTHER}
        if provider not in known:
            raise AdminError(f"unknown provider {provider!r} (known: {', '.join(sorted(known))})")

    # -- writes ------------------------------------------------------------------
    def set_weight(self, pool: str, endpoint: str, weight: int | None) -> None:
        """Set a live weight, or drop it (None) so the YAML weight applies again."""
        if pool not in self.config.pools:
            raise AdminError(f"unknown pool {pool!r} (known: {', '.join(sorted(self.config.pools))})")
        if endpoint not in {m.endpoint for m in self.config.pools[pool].endpoints}:
            raise AdminError(f"endpoint {endpoint!r} is not in pool {pool!r}")
        if weight is not None and not 0 <= weight <= 1_000_000:
            raise AdminError("weight must be between 0 and 1000000")
        key = self.keys.pool_weights(pool)
        old = text_of(self.r.hget(key, endpoint))
        if weight is None:
            self.r.hdel(key, endpoint)
        else:
            self.r.hset(key, endpoint, weight)
        new = "yaml" if weight is None else str(weight)
        self.audit.record("weight", f"{pool}/{endpoint}", "yaml" if old is None else old, new)

    def set_state(
        self,
        endpoint: str,
        state: str,
        reason: str,
        by: str = "cli",
        requeue: bool = False,
        until: float | None = None,
    ) -> None:
        """``requeue``: the requeue daemon also moves mail queued on it (a ``requeue``
        field in the state hash, so any later state change withdraws it); ``until``: a
        quarantine lifts by itself then (epoch seconds)."""
        self.check_endpoint(endpoint)
        key = self.keys.endpoint_state(endpoint)
        before = self.state_of(endpoint)
        mapping: dict[str, str | int] = {
            "state": state,
            "reason": reason,
            "since": int(self.clock.wall()),
            "by": by,
        }
        if requeue:
            mapping["requeue"] = 1
        if until is not None:
            mapping["until"] = int(until)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(key)  # replaces junk of any type too
        pipe.hset(key, mapping=mapping)
        pipe.execute()
        old = "junk" if before is None else before[0] + (f": {before[1]}" if before[1] else "")
        verb = {"drained": "drain", "active": "undrain", "quarantined": "quarantine"}.get(state, state)
        new = (
            state + (" (requeue)" if requeue else "") + (f" until {int(until)}" if until is not None else "")
        )
        self.audit.record(verb, endpoint, old, new, reason)

    def state_of(self, endpoint: str) -> tuple[str, str] | None:
        """The endpoint's admin state and its reason, as stored; None when unset or junk."""
        self.check_endpoint(endpoint)
        try:
            stored = self.r.hmget(self.keys.endpoint_state(endpoint), "state", "reason")
        except redis.ResponseError:  # a key of another type: junk, replaced by set_state
            return None
        state = parse_state(text_of(stored[0]))
        return None if state is None else (state, text_of(stored[1]) or "")

    def quarantines(self) -> list[Quarantine]:
        """Every quarantined endpoint, with ``until`` as stored (None: until undrain)."""
        names = sorted(self.config.endpoints)
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self.keys.endpoint_state(name), "state", "reason", "until")
        out = []
        for name, reply in zip(names, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, list) and parse_state(text_of(reply[0])) == "quarantined":
                out.append(Quarantine(name, text_of(reply[1]) or "", text_of(reply[2])))
        return out

    def suspension(self, endpoint: str, provider: str) -> tuple[int, str] | None:
        """The standing suspension: (seconds left, reason; -1 for no expiry), or None."""
        self.check_endpoint(endpoint)
        self.check_provider(provider)
        key = self.keys.suspension(endpoint, provider)
        pipe = self.r.pipeline(transaction=False)
        pipe.pttl(key)
        pipe.get(key)
        pttl, reason = pipe.execute(raise_on_error=False)
        if not isinstance(pttl, int) or pttl == -2:
            return None
        left = -1 if pttl < 0 else -(-pttl // 1000)
        return left, text_of(reason) if isinstance(reason, bytes | str) else ""

    def suspend(self, endpoint: str, provider: str, seconds: int, reason: str, requeue: bool = False) -> None:
        """``requeue``: queued mail for the provider moves too, for as long as the
        suspension. A marker left by an earlier ``--requeue`` ends with this suspension
        (it must not move mail after the endpoint is back)."""
        self.check_endpoint(endpoint)
        self.check_provider(provider)
        standing = self.suspension(endpoint, provider)
        marker = self.keys.requeue(endpoint, provider)
        left_ms = self.r.pttl(marker)  # not EXPIRE ... LT: that needs Redis 7
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.keys.suspension(endpoint, provider), reason, ex=seconds)
        if requeue:
            pipe.set(marker, f"suspended by cli: {reason}", ex=seconds)
        elif left_ms == -1 or left_ms > seconds * 1000:  # only ever shortened
            pipe.expire(marker, seconds)
        pipe.execute()
        old = "none" if standing is None else f"{_left(standing[0])}: {standing[1]}"
        new = f"{_left(seconds)}" + (" (requeue)" if requeue else "")
        self.audit.record("suspend", f"{endpoint}/{provider}", old, new, reason)

    def resume(self, endpoint: str, provider: str | None) -> int:
        """Lift one suspension, or every suspension of the endpoint; returns how many."""
        self.check_endpoint(endpoint)
        if provider is not None:
            self.check_provider(provider)
            self.r.delete(self.keys.requeue(endpoint, provider))
            lifted = int(self.r.delete(self.keys.suspension(endpoint, provider)))
        else:
            keys = list(self.r.scan_iter(match=self.keys.suspension_pattern(endpoint), count=500))
            requests = list(self.r.scan_iter(match=self.keys.requeue_pattern(endpoint), count=500))
            if requests:
                self.r.delete(*requests)
            lifted = int(self.r.delete(*keys)) if keys else 0
        target = endpoint if provider is None else f"{endpoint}/{provider}"
        self.audit.record("resume", target, f"{lifted} suspension(s)", "none")
        return lifted
