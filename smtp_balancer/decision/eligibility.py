"""Which endpoints may take a message: one model for every path, sans I/O.

The paths differ only in where the data comes from and who settles quota:
- **mirror**: the exact, Redis-tracked live state; a capped (warming) endpoint
  is eligible while this process's quota lease covers the message. When only
  Redis can tell (the lease is short), ``choose`` stops with ``NeedRedis`` and the
  same draw is settled by select.lua.
- **degraded**: the last-known live state (or the YAML alone); a capped endpoint
  is never eligible, because its quota cannot be counted without Redis, nor is
  a rate-capped one for the providers it caps.
On the mirror path a provider's warm-up cap is leased like the total (its own
field of the counters) and a rate cap as slots of its window (``rates.py``);
a lease that falls short hands the draw to select.lua (``NeedRedis``).
select.lua is the third path, with the same rules read from Redis itself.
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import mypyc_attr

from smtp_balancer.decision.choice import NeedRedis
from smtp_balancer.decision.draw import Draw
from smtp_balancer.decision.quota import Counters
from smtp_balancer.state.live import LiveState

OUT_OF_SERVICE: Final = "out of service"
SUSPENDED: Final = "suspended"
UNCOUNTABLE: Final = "warming: its quota cannot be counted without Redis"
UNRATED: Final = "rate-capped: its rate cannot be counted without Redis"


# tests subclass it (a fixed answer per endpoint); compiled instances keep native calls
@mypyc_attr(allow_interpreted_subclasses=True)
class Eligibility:
    """Which endpoints may take this message, and the share each keeps of its draws
    (``choice.choose`` asks it). ``quota`` is the lease book on the mirror path, None
    on the degraded path."""

    __slots__ = ("draw", "live", "now", "quota")

    def __init__(self, draw: Draw, live: LiveState | None, quota: Counters | None, now: float) -> None:
        self.draw, self.live, self.quota, self.now = draw, live, quota, now  # now: monotonic

    def weight(self, pool: str, endpoint: str, yaml_weight: int) -> int:
        live = self.live
        return yaml_weight if live is None else live.weight(pool, endpoint, yaml_weight)

    def why_not(self, endpoint: str, ignore_caps: bool) -> str | None:
        """Why the endpoint cannot take the message, or None; raises NeedRedis when only Redis knows."""
        live, draw = self.live, self.draw
        if live is not None:
            if live.is_out_of_service(endpoint, draw.wall):
                return OUT_OF_SERVICE
            if live.suspended(endpoint, draw.providers, self.now):
                return SUSPENDED
        caps = draw.caps[endpoint]
        if self.quota is None:
            if ignore_caps:
                return None
            if caps.capped:
                return UNCOUNTABLE
            return UNRATED if caps.needs_redis(draw.providers) else None
        quota = self.quota
        if caps.redis_only:
            scopes = caps.rate_scopes(draw.providers)
            if scopes and ignore_caps:
                raise NeedRedis(endpoint)  # not checked, but counted: select.lua does both
            for scope in scopes:
                why = quota.rate_counter().check(endpoint, scope, caps.rates[scope])
                if why:
                    return why
        if ignore_caps or not caps.capped:
            return None
        day, hour = draw.buckets
        why = quota.check(endpoint, draw.facts.quota_count, day, hour, caps.day, caps.hour)
        if why or not caps.providers:
            return why
        for provider, count in draw.provider_counts:
            pcap = caps.providers.get(provider)
            if pcap is not None:
                why = quota.check(endpoint, count, day, hour, pcap[0], pcap[1], provider)
                if why:
                    return why
        return None

    def throttle(self, endpoint: str, adaptive: bool = False) -> float:
        """The share an endpoint keeps of its draws: throttles, and adaptive factors in
        the pools that opt in."""
        live = self.live
        return 1.0 if live is None else live.throttle(endpoint, self.draw.providers, self.now, adaptive)


__all__ = ["OUT_OF_SERVICE", "SUSPENDED", "UNCOUNTABLE", "UNRATED", "Eligibility", "NeedRedis"]
