"""Operator writes and lists of what the deciders read beside the admin state:
throttles and slows (the feedback daemon's response rules write the same keys), and
managed warm-up records (step, hold). Every write goes to the audit trail."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import redis

from smtp_balancer.durations import format_duration
from smtp_balancer.state.audit import AuditTrail
from smtp_balancer.state.keys import KeySchema, split_scoped
from smtp_balancer.state.values import hash_texts, parse_throttle, text_of
from smtp_balancer.state.warmup_store import HOLD


def strings_with_ttl(client: redis.Redis, pattern: str) -> list[tuple[bytes, object, object]]:
    """(key, GET, TTL) of every key the pattern matches, in key order: one SCAN, one
    pipelined round. A reply Redis refused (a key of another type) is its error."""
    keys = sorted(client.scan_iter(match=pattern, count=500))
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
        pipe.ttl(key)
    replies = pipe.execute(raise_on_error=False)
    return [(key, replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(keys)]


@dataclass(frozen=True)
class Standing:
    """One stored factor or suspension: what the deciders read for (endpoint, provider)."""

    kind: str  # throttle, slow, adaptive or suspension
    endpoint: str
    provider: str
    factor: float | None  # None: junk (ignored by the deciders), or a suspension
    ttl_s: int  # -1: no expiry
    reason: str

    def as_json(self) -> dict[str, object]:
        return asdict(self)


class Factors:
    def __init__(self, client: redis.Redis, keys: KeySchema, audit: AuditTrail) -> None:
        self.r, self.keys, self.audit = client, keys, audit

    def _key(self, kind: str, endpoint: str, provider: str) -> str:
        return {
            "throttle": self.keys.throttle,
            "slow": self.keys.slow,
            "adaptive": self.keys.adaptive,
            "suspension": self.keys.suspension,
        }[kind](endpoint, provider)

    def _prefix(self, kind: str) -> str:
        return {
            "throttle": self.keys.throttle_prefix(),
            "slow": self.keys.slow_prefix(),
            "adaptive": self.keys.adaptive_prefix(),
            "suspension": self.keys.suspension_prefix(),
        }[kind]

    def set(self, kind: str, endpoint: str, provider: str, factor: float, seconds: int, reason: str) -> None:
        """Set a throttle or slow factor (strictly between 0 and 1) for ``seconds``."""
        if not 0 < factor < 1:
            raise ValueError(f"a {kind} factor is strictly between 0 and 1, not {factor:g}")
        key = self._key(kind, endpoint, provider)
        old = text_of(self.r.get(key))
        self.r.set(key, f"{factor:g} {reason}".rstrip(), ex=seconds)
        new = f"{factor:g} for {format_duration(seconds)}"
        self.audit.record(kind, f"{endpoint}/{provider}", old or "none", new, reason)

    def clear(self, kind: str, endpoint: str, provider: str | None) -> int:
        """Drop one factor, or every one of the endpoint's; returns how many."""
        if provider is not None:
            keys = [self._key(kind, endpoint, provider)]
        else:
            keys = list(self.r.scan_iter(match=f"{self._prefix(kind)}{endpoint}:*", count=500))
        dropped = int(self.r.delete(*keys)) if keys else 0
        target = endpoint if provider is None else f"{endpoint}/{provider}"
        self.audit.record(f"un{kind}", target, f"{dropped} {kind}(s)", "none")
        return dropped

    def standing(self, kind: str, endpoints: set[str]) -> list[Standing]:
        """Every stored ``kind`` (throttle, slow, adaptive, suspension) of these endpoints."""
        prefix = self._prefix(kind)
        out = []
        for name, value, ttl in strings_with_ttl(self.r, f"{prefix}*"):
            scope = split_scoped(text_of(name) or "", prefix)
            if scope is None or scope[0] not in endpoints or not isinstance(ttl, int) or ttl == -2:
                continue
            raw = text_of(value) if isinstance(value, bytes | str) else None
            if kind == "suspension":
                factor, reason = None, raw or ""
            else:
                factor, reason = parse_throttle(raw), (raw or "").partition(" ")[2]
            out.append(Standing(kind, scope[0], scope[1], factor, ttl, reason))
        return out


class WarmupRecords:
    """An operator's hand on a managed warm-up's record (``{sb}:warmup:<ep>``): its step,
    and a hold the feedback daemon respects (it moves the day on, not the step)."""

    def __init__(self, client: redis.Redis, keys: KeySchema, audit: AuditTrail) -> None:
        self.r, self.keys, self.audit = client, keys, audit

    def read(self, endpoint: str) -> dict[str, str]:
        return hash_texts(self.r.hgetall(self.keys.warmup(endpoint)))

    def set_step(self, endpoint: str, step: int, day: str) -> None:
        before = self.read(endpoint)
        why = f"set to step {step} by an operator"
        self.r.hset(self.keys.warmup(endpoint), mapping={"step": step, "day": day, "why": why})
        self.audit.record("warmup set", endpoint, f"step {before.get('step') or '-'}", f"step {step}")

    def hold(self, endpoint: str, held: bool) -> None:
        key = self.keys.warmup(endpoint)
        before = "held" if self.read(endpoint).get(HOLD) == "1" else "advancing"
        if held:
            self.r.hset(key, HOLD, 1)
        else:
            self.r.hdel(key, HOLD)
        self.audit.record(
            "warmup hold" if held else "warmup release", endpoint, before, "held" if held else "advancing"
        )
