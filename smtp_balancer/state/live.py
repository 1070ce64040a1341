"""The live state in memory: weights, admin states, suspensions, throttles and
adaptive factors.

Two uses. While Redis tracks our keys (``state/tracker.py``) the engine keeps
this mirror exact and decides from it without a round trip. While Redis is
unavailable it is the last-known state, applied on top of the YAML by degraded
decisions, so an outage neither brings a drained, quarantined or suspended
endpoint back nor undoes a live weight change. Suspensions and throttles keep
their expiry. Parsing only, with the value grammar of select.lua
(``state/values.py``): the engine does the reads.

A changed key updates its one entry in place, so an update costs O(1) whatever
the mirror's size. Readers on other threads (the milter's) see each entry
replaced atomically; the engine stops local decisions while a change is being
re-read, so no decision sees a half-applied burst.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from smtp_balancer.state.keys import ALL_PROVIDERS, KeySchema, split_scoped
from smtp_balancer.state.values import (
    parse_int,
    parse_state,
    parse_throttle,
    parse_until,
    parse_weight,
    text_of,
)

NEVER = math.inf

# a hand-edited value that was skipped: (kind, key, field), as select.lua reports it
Junk = list[tuple[str, str, str]]


@dataclass
class LiveState:
    taken_at: float  # monotonic seconds of the full load
    weights: dict[str, dict[str, int]] = field(default_factory=dict)  # pool -> endpoint -> weight
    # drained or quarantined endpoint -> wall-clock second it returns (NEVER: until changed)
    out_of_service: dict[str, float] = field(default_factory=dict)
    suspended_until: dict[tuple[str, str], float] = field(default_factory=dict)  # monotonic
    # (endpoint, provider) -> (factor, monotonic expiry)
    throttles: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    # the same for adaptive factors, applied in the pools that opt in
    adaptive: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    # endpoint -> (warm-up step, UTC day it applies to) of managed warm-ups; replaced,
    # never changed in place, so a reader can tell a new one by identity
    warmup: dict[str, tuple[int, str]] = field(default_factory=dict)
    running: frozenset[str] = frozenset()  # experiments started (state=running)

    def weight(self, pool: str, endpoint: str, yaml_weight: int) -> int:
        live = self.weights.get(pool)
        return yaml_weight if live is None else live.get(endpoint, yaml_weight)

    def is_out_of_service(self, endpoint: str, wall_now: float) -> bool:
        return self.out_of_service.get(endpoint, 0.0) > wall_now

    def suspended(self, endpoint: str, providers: Iterable[str], now: float) -> bool:
        until = self.suspended_until
        if not until:
            return False
        if until.get((endpoint, ALL_PROVIDERS), 0.0) > now:
            return True
        return any(until.get((endpoint, p), 0.0) > now for p in providers)

    def throttle(self, endpoint: str, providers: Iterable[str], now: float, adaptive: bool = False) -> float:
        """The smallest live factor for this endpoint and these providers: its throttles,
        and with ``adaptive`` its adaptive factors; 1 when none."""
        factor = _smallest(self.throttles, endpoint, providers, now) if self.throttles else 1.0
        if adaptive and self.adaptive:
            factor = min(factor, _smallest(self.adaptive, endpoint, providers, now))
        return factor

    # -- one key changed: its new value replaces its one entry --------------------
    def set_weights(self, pool: str, key: str, members: Sequence[str], reply: object, junk: Junk) -> None:
        """``reply``: HMGET of the pool's members, as select.lua reads them."""
        _put(self.weights, pool, _weights(reply, key, members, junk))

    def set_state(self, endpoint: str, key: str, reply: object, junk: Junk) -> None:
        _put(self.out_of_service, endpoint, _returns_at(reply, key, junk))

    def set_suspension(self, endpoint: str, provider: str, pttl: object, now: float) -> None:
        _put(self.suspended_until, (endpoint, provider), _expiry(pttl, now))

    def set_throttle(
        self, endpoint: str, provider: str, key: str, value: object, pttl: object, now: float, junk: Junk
    ) -> None:
        _put(self.throttles, (endpoint, provider), _factor("throttle", key, value, pttl, now, junk))

    def set_warmup(self, endpoint: str, key: str, reply: object, junk: Junk) -> None:
        """``reply``: HMGET step day."""
        steps = dict(self.warmup)
        _put(steps, endpoint, parse_warmup(reply, key, junk))
        self.warmup = steps

    def set_experiment(self, name: str, reply: object) -> None:
        """``reply``: HGET state."""
        running = text_of(reply) == "running"
        if running != (name in self.running):
            self.running = self.running | {name} if running else self.running - {name}

    def set_adaptive(
        self, endpoint: str, provider: str, key: str, value: object, pttl: object, now: float, junk: Junk
    ) -> None:
        _put(self.adaptive, (endpoint, provider), _factor("adaptive", key, value, pttl, now, junk))


def parse_warmup(reply: object, key: str, junk: Junk) -> tuple[int, str] | None:
    """A managed warm-up's (step, day); None when absent or junk (the first step applies)."""
    if not isinstance(reply, list) or len(reply) != 2:
        if isinstance(reply, Exception):
            junk.append(("warmup", key, ""))
        return None
    step_raw, day = text_of(reply[0]), text_of(reply[1])
    if step_raw is None and day is None:
        return None
    step = parse_int(step_raw, 4)
    if not step or day is None or len(day) != 8 or not day.isascii() or not day.isdigit():
        junk.append(("warmup", key, ""))
        return None
    return step, day


def _smallest(
    factors: dict[tuple[str, str], tuple[float, float]], endpoint: str, providers: Iterable[str], now: float
) -> float:
    factor = 1.0
    for provider in (ALL_PROVIDERS, *providers):
        hit = factors.get((endpoint, provider))
        if hit is not None and hit[1] > now and hit[0] < factor:
            factor = hit[0]
    return factor


def _put(entries: dict, scope: object, value: object) -> None:  # type: ignore[type-arg]
    if value is None:
        entries.pop(scope, None)
    else:
        entries[scope] = value


def _weights(reply: object, key: str, members: Sequence[str], junk: Junk) -> dict[str, int] | None:
    """Live weights of the pool's members; fields for other names are never read (as in
    select.lua), so a hash of any size costs what the pool costs."""
    if not isinstance(reply, list) or len(reply) != len(members):
        if isinstance(reply, Exception):
            junk.append(("weights", key, ""))
        return None  # a key of the wrong type: the YAML applies
    parsed = {}
    for name, value in zip(members, reply, strict=True):
        if value is None:
            continue
        w = parse_weight(text_of(value))
        if w is not None:
            parsed[name] = w
        else:
            junk.append(("weight", key, name))
    return parsed


def _returns_at(reply: object, key: str, junk: Junk) -> float | None:
    """From HMGET state until: when the endpoint returns to service, or None when in service."""
    if not isinstance(reply, list) or len(reply) != 2:
        if isinstance(reply, Exception):
            junk.append(("state", key, ""))
        return None  # a key of the wrong type is junk: treated as active, as in select.lua
    state, until = text_of(reply[0]), text_of(reply[1])
    if parse_state(state) is None:
        junk.append(("state", key, ""))
    elif parse_state(state) == "quarantined" and until is not None and parse_until(until) is None:
        junk.append(("until", key, ""))
    return returns_at(state, until)


def returns_at(state: str | None, until: str | None) -> float | None:
    """The one reading of an endpoint's state hash (``state`` and ``until`` as stored),
    for the deciders and ``status`` alike: None when in service, else the wall-clock
    second it returns (NEVER: when its state changes). Junk state is active, as in
    select.lua; a quarantine with a junk ``until`` never lifts by itself."""
    parsed = parse_state(state)
    if parsed == "drained":
        return NEVER
    if parsed != "quarantined":
        return None
    if until is None:
        return NEVER
    lifts = parse_until(until)  # a response rule's quarantine lifts at `until`
    return NEVER if lifts is None else lifts


def _expiry(pttl: object, now: float) -> float | None:
    if not isinstance(pttl, int) or pttl == -2:
        return None
    return NEVER if pttl == -1 else now + pttl / 1000


def _factor(
    kind: str, key: str, value: object, pttl: object, now: float, junk: Junk
) -> tuple[float, float] | None:
    """A "<factor> <reason>" value with its expiry; junk is reported as ``kind``."""
    text = text_of(value)
    until = _expiry(pttl, now)
    if text is None or until is None:
        return None
    factor = parse_throttle(text)
    if factor is None:
        junk.append((kind, key, ""))
        return None
    return factor, until


def parse_live_state(
    keys: KeySchema,
    pools: Mapping[str, Sequence[str]],
    weight_replies: Sequence[object],
    endpoints: Sequence[str],
    state_replies: Sequence[object],
    suspension_keys: Sequence[bytes],
    pttl_replies: Sequence[object],
    now: float,
    throttle_keys: Sequence[bytes],
    throttle_replies: Sequence[tuple[object, object]],
    junk: Junk,
    adaptive_keys: Sequence[bytes] = (),
    adaptive_replies: Sequence[tuple[object, object]] = (),
    warmup_endpoints: Sequence[str] = (),
    warmup_replies: Sequence[object] = (),
    experiments: Sequence[str] = (),
    experiment_replies: Sequence[object] = (),
) -> LiveState:
    """Build a LiveState from raw replies; junk is skipped exactly as select.lua skips it.

    ``pools`` maps each pool to its members; ``weight_replies`` are HMGET of them;
    ``state_replies`` are HMGET state until; ``throttle_replies`` are (GET, PTTL).
    """
    live = LiveState(now)
    for (pool, members), reply in zip(pools.items(), weight_replies, strict=True):
        live.set_weights(pool, keys.pool_weights(pool), members, reply, junk)
    for endpoint, reply in zip(endpoints, state_replies, strict=True):
        live.set_state(endpoint, keys.endpoint_state(endpoint), reply, junk)
    for key, pttl in zip(suspension_keys, pttl_replies, strict=True):
        scope = split_scoped(text_of(key) or "", keys.suspension_prefix())
        if scope is not None:
            live.set_suspension(*scope, pttl, now)
    for key, (value, pttl) in zip(throttle_keys, throttle_replies, strict=True):
        name = text_of(key) or ""
        scope = split_scoped(name, keys.throttle_prefix())
        if scope is not None:
            live.set_throttle(*scope, name, value, pttl, now, junk)
    for key, (value, pttl) in zip(adaptive_keys, adaptive_replies, strict=True):
        name = text_of(key) or ""
        scope = split_scoped(name, keys.adaptive_prefix())
        if scope is not None:
            live.set_adaptive(*scope, name, value, pttl, now, junk)
    steps = {}
    for endpoint, reply in zip(warmup_endpoints, warmup_replies, strict=True):
        found = parse_warmup(reply, keys.warmup(endpoint), junk)
        if found is not None:
            steps[endpoint] = found
    live.warmup = steps
    for name, reply in zip(experiments, experiment_replies, strict=True):
        live.set_experiment(name, reply)
    return live
