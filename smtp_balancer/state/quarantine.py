"""The health checks' quarantines (DNSBL listings, a relay that stopped answering):
an endpoint's state hash set by ``health.lua``, which never overrides what an
operator set (see the script)."""

from __future__ import annotations

import redis

from smtp_balancer.state import scripts
from smtp_balancer.state.keys import KeySchema


def set_health_state(
    client: redis.Redis, keys: KeySchema, endpoint: str, state: str, reason: str, by: str, now: float
) -> bool:
    """Set ``endpoint``'s state as check ``by`` found it; whether the hash changed."""
    wrote = client.eval(scripts.HEALTH.text, 1, keys.endpoint_state(endpoint), state, reason, by, int(now))
    return bool(wrote)
