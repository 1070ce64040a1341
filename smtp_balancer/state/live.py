"""The last-known live state, for decisions made while Redis is unavailable.

A Redis outage must not bring a drained, quarantined or suspended endpoint back
into service, nor undo a live weight change. The engine refreshes this snapshot
in the background while Redis is healthy; degraded decisions apply it on top of
the YAML. Suspensions keep their expiry, so they still lift on time.
Parsing only: the engine does the reads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from smtp_balancer.state.keys import ALL_PROVIDERS, KeySchema
from smtp_balancer.state.values import parse_state, parse_weight, text_of


@dataclass(frozen=True)
class LiveState:
    taken_at: float  # monotonic seconds
    weights: dict[str, dict[str, int]] = field(default_factory=dict)  # pool -> endpoint -> weight
    blocked: frozenset[str] = frozenset()  # drained or quarantined
    suspended_until: dict[tuple[str, str], float] = field(default_factory=dict)  # (endpoint, provider)

    def weight(self, pool: str, endpoint: str, yaml_weight: int) -> int:
        return self.weights.get(pool, {}).get(endpoint, yaml_weight)

    def suspended(self, endpoint: str, providers: Iterable[str], now: float) -> bool:
        for provider in (ALL_PROVIDERS, *providers):
            if self.suspended_until.get((endpoint, provider), 0.0) > now:
                return True
        return False


def parse_live_state(
    keys: KeySchema,
    pools: Sequence[str],
    weight_replies: Sequence[object],
    endpoints: Sequence[str],
    state_replies: Sequence[object],
    suspension_keys: Sequence[bytes],
    pttl_replies: Sequence[object],
    now: float,
) -> LiveState:
    """Build a LiveState from raw replies; junk is skipped exactly as select.lua skips it."""
    weights: dict[str, dict[str, int]] = {}
    for pool, reply in zip(pools, weight_replies, strict=True):
        if not isinstance(reply, list):
            continue  # missing, or a key of the wrong type: the YAML applies
        flat = [text_of(v) for v in reply]
        parsed = {}
        for name, raw in zip(flat[::2], flat[1::2], strict=True):
            w = parse_weight(raw)
            if name is not None and w is not None:
                parsed[name] = w
        weights[pool] = parsed
    blocked = frozenset(
        ep
        for ep, reply in zip(endpoints, state_replies, strict=True)
        if parse_state(text_of(reply)) in ("drained", "quarantined")
    )
    prefix = keys.suspension_prefix()
    suspended: dict[tuple[str, str], float] = {}
    for key, pttl in zip(suspension_keys, pttl_replies, strict=True):
        name = text_of(key) or ""
        endpoint, sep, provider = name.removeprefix(prefix).partition(":")
        if not sep or not isinstance(pttl, int) or pttl == -2:
            continue
        suspended[(endpoint, provider)] = math.inf if pttl == -1 else now + pttl / 1000
    return LiveState(now, weights, blocked, suspended)
