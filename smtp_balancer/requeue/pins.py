"""Pins: the route mail moved off an ineligible endpoint leaves by, per recipient.

``{sb}:pin:<address>`` is a hash (endpoint, provider, units, reason, since). The
sweeper writes it before it requeues a message; the delivery-time table answers
it to Postfix's qmgr for mail that has no FILTER. Sans-I/O: mappings in and out,
and the counter deltas (count.lua arguments) that keep warm-up counts on the
route mail actually leaves by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from smtp_balancer.state import scripts
from smtp_balancer.state.keys import DAY_TTL_S, HOUR_TTL_S, KeySchema, day_bucket, hour_bucket
from smtp_balancer.state.values import parse_count, text_of


@dataclass(frozen=True, slots=True)
class Pin:
    endpoint: str
    provider: str
    units: int  # recipients of moved messages counted on endpoint for this address
    reason: str = ""


def parse_pin(raw: Mapping[bytes, bytes] | Mapping[str, str], endpoints: Mapping[str, object]) -> Pin | None:
    """A pin from HGETALL; None when absent or junk (a hand-edited endpoint we do not know)."""
    fields = {text_of(k): text_of(v) for k, v in raw.items()}
    endpoint = fields.get("endpoint") or ""
    if endpoint not in endpoints:
        return None
    units = parse_count(fields.get("units"))
    return Pin(
        endpoint, fields.get("provider") or "", units if units is not None else 1, fields.get("reason") or ""
    )


def pin_mapping(pin: Pin, since: float) -> dict[str, str]:
    return {
        "endpoint": pin.endpoint,
        "provider": pin.provider,
        "units": str(pin.units),
        "reason": pin.reason[:200],
        "since": str(int(since)),
    }


def counter_deltas(
    keys: KeySchema,
    endpoint: str,
    provider: str,
    delta: int,
    at: datetime,
    buckets: tuple[str, ...] = ("day", "hour"),
) -> list[tuple[str, str]]:
    """count.lua (key, "ttl field delta ...") pairs that add ``delta`` (negative: give
    back, never below 0) to an endpoint's day and hour counters of ``at``."""
    fields = f"total {delta} {provider} {delta}"
    out = []
    if "day" in buckets:
        out.append((keys.day_counter(endpoint, day_bucket(at)), f"{DAY_TTL_S} {fields}"))
    if "hour" in buckets:
        out.append((keys.hour_counter(endpoint, hour_bucket(at)), f"{HOUR_TTL_S} {fields}"))
    return out


def given_back(
    keys: KeySchema, endpoint: str, units_by_provider: Mapping[str, int], counted_at: float, now: float
) -> list[tuple[str, str]]:
    """The deltas that give ``endpoint`` back the units it counted at ``counted_at``
    (epoch seconds) for mail that left by another route; none from an earlier day."""
    buckets = refundable(counted_at, datetime.fromtimestamp(now, UTC))
    at = datetime.fromtimestamp(counted_at, UTC)
    deltas: list[tuple[str, str]] = []
    for provider, units in units_by_provider.items():
        deltas += counter_deltas(keys, endpoint, provider, -units, at, buckets) if buckets else []
    return deltas


def count_command(deltas: list[tuple[str, str]]) -> tuple[object, ...]:
    """The EVAL of count.lua that applies ``deltas`` (a Redis command's arguments)."""
    return ("EVAL", scripts.COUNT.text, len(deltas), *(k for k, _ in deltas), *(a for _, a in deltas))


def refundable(counted_at: float, now: datetime) -> tuple[str, ...]:
    """Which of the day and hour buckets a unit counted at ``counted_at`` (epoch seconds)
    is still in: a unit from an earlier day or hour is in a counter no cap reads now."""
    then = datetime.fromtimestamp(counted_at, UTC)
    if day_bucket(then) != day_bucket(now):
        return ()
    return ("day", "hour") if hour_bucket(then) == hour_bucket(now) else ("day",)
