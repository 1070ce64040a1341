"""The live state in memory: weights, admin states, suspensions and throttles.

Two uses. While Redis tracks our keys (``state/tracker.py``) the engine keeps
this mirror exact and decides locally from it. While Redis is unavailable it is
the last-known state, applied on top of the YAML by degraded decisions, so an
outage neither brings a drained, quarantined or suspended endpoint back nor
undoes a live weight change. Suspensions and throttles keep their expiry.
Parsing only, with the same junk rules as select.lua: the engine does the reads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from smtp_balancer.state.keys import ALL_PROVIDERS, KeySchema, split_scoped
from smtp_balancer.state.values import parse_state, parse_weight, text_of

NEVER = math.inf


@dataclass(frozen=True)
class LiveState:
    taken_at: float  # monotonic seconds
    weights: dict[str, dict[str, int]] = field(default_factory=dict)  # pool -> endpoint -> weight
    # drained or quarantined endpoint -> wall-clock second its block lifts (NEVER: until changed)
    blocked: dict[str, float] = field(default_factory=dict)
    suspended_until: dict[tuple[str, str], float] = field(default_factory=dict)  # monotonic
    # (endpoint, provider) -> (factor, monotonic expiry)
    throttles: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    # hand-edited values skipped by the last read: (kind, key, field), as select.lua reports them
    junk: tuple[tuple[str, str, str], ...] = ()

    def weight(self, pool: str, endpoint: str, yaml_weight: int) -> int:
        return self.weights.get(pool, {}).get(endpoint, yaml_weight)

    def is_blocked(self, endpoint: str, wall_now: float) -> bool:
        return self.blocked.get(endpoint, 0.0) > wall_now

    def suspended(self, endpoint: str, providers: Iterable[str], now: float) -> bool:
        for provider in (ALL_PROVIDERS, *providers):
            if self.suspended_until.get((endpoint, provider), 0.0) > now:
                return True
        return False

    def throttle(self, endpoint: str, providers: Iterable[str], now: float) -> float:
        """The smallest live factor for this endpoint and these providers; 1 when none."""
        factor = 1.0
        for provider in (ALL_PROVIDERS, *providers):
            hit = self.throttles.get((endpoint, provider))
            if hit is not None and hit[1] > now and 0 < hit[0] < factor:
                factor = hit[0]
        return factor

    # -- one key changed (a tracked key's new value) ----------------------------
    def _with(self, attr: str, scope: object, value: object, junk: Junk | None = None) -> LiveState:
        """A copy with ``attr[scope]`` set to ``value``, or removed when it is None."""
        entries = dict(getattr(self, attr))
        if value is None:
            entries.pop(scope, None)
        else:
            entries[scope] = value
        return replace(self, **{attr: entries}, junk=tuple(junk or ()))

    def with_weights(self, pool: str, key: str, reply: object) -> LiveState:
        junk: Junk = []
        return self._with("weights", pool, _weights(reply, key, junk), junk)

    def with_state(self, endpoint: str, key: str, reply: object) -> LiveState:
        junk: Junk = []
        return self._with("blocked", endpoint, _block(reply, key, junk), junk)

    def with_suspension(self, endpoint: str, provider: str, pttl: object, now: float) -> LiveState:
        return self._with("suspended_until", (endpoint, provider), _expiry(pttl, now))

    def with_throttle(
        self, endpoint: str, provider: str, value: object, pttl: object, now: float
    ) -> LiveState:
        return self._with("throttles", (endpoint, provider), _throttle(value, pttl, now))


Junk = list[tuple[str, str, str]]


def _weights(reply: object, key: str, junk: Junk) -> dict[str, int] | None:
    if not isinstance(reply, list):
        if isinstance(reply, Exception):
            junk.append(("weights", key, ""))
        return None  # missing, or a key of the wrong type: the YAML applies
    flat = [text_of(v) for v in reply]
    parsed = {}
    for name, raw in zip(flat[::2], flat[1::2], strict=True):
        w = parse_weight(raw)
        if name is not None and w is not None:
            parsed[name] = w
        else:
            junk.append(("weight", key, name or ""))
    return parsed


def _block(reply: object, key: str, junk: Junk) -> float | None:
    """From HMGET state until: when the block lifts, or None when not blocked."""
    if not isinstance(reply, list) or len(reply) != 2:
        if isinstance(reply, Exception):
            junk.append(("state", key, ""))
        return None  # a key of the wrong type is junk: treated as active, as in select.lua
    state = parse_state(text_of(reply[0]))
    if state is None:
        junk.append(("state", key, ""))
    if state == "drained":
        return NEVER
    if state != "quarantined":
        return None
    try:
        lifts = float(text_of(reply[1]) or "")  # a response rule's quarantine lifts at `until`
    except ValueError:
        return NEVER
    return NEVER if math.isnan(lifts) else lifts


def _expiry(pttl: object, now: float) -> float | None:
    if not isinstance(pttl, int) or pttl == -2:
        return None
    return NEVER if pttl == -1 else now + pttl / 1000


def _throttle(value: object, pttl: object, now: float) -> tuple[float, float] | None:
    text = text_of(value)
    until = _expiry(pttl, now)
    if not text or until is None:
        return None
    try:
        factor = float(text.split(None, 1)[0])
    except (ValueError, IndexError):
        return None
    return (factor, until) if 0 < factor < 1 else None


def parse_live_state(
    keys: KeySchema,
    pools: Sequence[str],
    weight_replies: Sequence[object],
    endpoints: Sequence[str],
    state_replies: Sequence[object],
    suspension_keys: Sequence[bytes],
    pttl_replies: Sequence[object],
    now: float,
    throttle_keys: Sequence[bytes] = (),
    throttle_replies: Sequence[tuple[object, object]] = (),
) -> LiveState:
    """Build a LiveState from raw replies; junk is skipped exactly as select.lua skips it.

    ``state_replies`` are HMGET state until; ``throttle_replies`` are (GET, PTTL).
    """
    junk: Junk = []
    weights = {}
    for pool, reply in zip(pools, weight_replies, strict=True):
        parsed = _weights(reply, keys.pool_weights(pool), junk)
        if parsed is not None:
            weights[pool] = parsed
    blocked = {}
    for endpoint, reply in zip(endpoints, state_replies, strict=True):
        lifts = _block(reply, keys.endpoint_state(endpoint), junk)
        if lifts is not None:
            blocked[endpoint] = lifts
    suspended: dict[tuple[str, str], float] = {}
    for key, pttl in zip(suspension_keys, pttl_replies, strict=True):
        scope = split_scoped(text_of(key) or "", keys.suspension_prefix())
        until = _expiry(pttl, now)
        if scope is not None and until is not None:
            suspended[scope] = until
    throttles: dict[tuple[str, str], tuple[float, float]] = {}
    for key, (value, pttl) in zip(throttle_keys, throttle_replies, strict=True):
        scope = split_scoped(text_of(key) or "", keys.throttle_prefix())
        parsed = _throttle(value, pttl, now)
        if scope is not None and parsed is not None:
            throttles[scope] = parsed
    return LiveState(now, weights, blocked, suspended, throttles, tuple(junk))
