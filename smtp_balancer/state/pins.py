"""Pins: the route mail moved off an ineligible endpoint leaves by, per recipient.

``{sb}:pin:<address>`` is a hash (endpoint, provider, units, reason, since). The
sweeper writes it before it requeues a message; the delivery-time table answers
it to Postfix's qmgr for mail that has no FILTER. Mappings in and out, the counter
deltas (count.lua arguments) that keep warm-up counts on the route mail actually
leaves by, and the Redis reads and writes of requeue's two daemons: ``PinStore``
for the sweeper (redis-py), the ``async`` functions for the table (the channel).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from redis.exceptions import ResponseError

from smtp_balancer.state import scripts
from smtp_balancer.state.channel import ScriptChannel
from smtp_balancer.state.keys import DAY_TTL_S, HOUR_TTL_S, KeySchema, day_bucket, hour_bucket, split_scoped
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


def pairs(reply: object) -> dict[bytes, bytes]:
    """HGETALL's reply as a dict, RESP2 (flat list) or RESP3 (map)."""
    if isinstance(reply, dict):
        return reply
    if isinstance(reply, list):
        return dict(zip(reply[::2], reply[1::2], strict=False))
    return {}


def fields_of(reply: object) -> dict[str | None, str | None]:
    """A hash reply as text; {} for an error value (a key of another type)."""
    return {text_of(k): text_of(v) for k, v in pairs(reply).items()}


@dataclass(frozen=True)
class EndpointRecords:
    """What Redis holds about moving one endpoint's mail: its state hash, and the
    providers it is suspended for (with the reason) or asked to move mail for."""

    fields: dict[str | None, str | None]
    suspensions: dict[str, str]
    requested: list[str]


class PinStore:
    """The sweeper's reads and writes (requeue/sweeper.py)."""

    def __init__(self, client: redis.Redis, keys: KeySchema) -> None:
        self.r, self.keys = client, keys

    def endpoints(self, names: Sequence[str]) -> dict[str, EndpointRecords]:
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.endpoint_state(name))
        replies = pipe.execute(raise_on_error=False)
        suspensions = self._scoped(self.keys.suspension_pattern(), self.keys.suspension_prefix())
        requested = self._scoped(self.keys.requeue_pattern(), self.keys.requeue_prefix())
        return {
            name: EndpointRecords(
                fields_of(raw),
                {p: reason for (ep, p), reason in suspensions.items() if ep == name},
                [p for (ep, p) in requested if ep == name],
            )
            for name, raw in zip(names, replies, strict=True)
        }

    def _scoped(self, pattern: str, prefix: str) -> dict[tuple[str, str], str]:
        keys = list(self.r.scan_iter(match=pattern, count=1000))
        if not keys:
            return {}
        out = {}
        for key, value in zip(keys, self.r.mget(keys), strict=True):
            scope = split_scoped(text_of(key) or "", prefix)
            if scope is not None and value is not None:
                out[scope] = text_of(value) or ""
        return out

    def pins(self, addresses: Sequence[str], endpoints: Mapping[str, object]) -> dict[str, Pin]:
        """The readable pins of these addresses."""
        pipe = self.r.pipeline(transaction=False)
        for address in addresses:
            pipe.hgetall(self.keys.pin(address))
        out = {}
        for address, raw in zip(addresses, pipe.execute(raise_on_error=False), strict=True):
            pin = parse_pin(raw, endpoints) if isinstance(raw, dict) else None
            if pin is not None:
                out[address] = pin
        return out

    def count(self, deltas: list[tuple[str, str]]) -> None:
        if deltas:
            self.r.execute_command(*count_command(deltas))

    def write_pins(self, pins: Iterable[tuple[str, Pin]], since: float, ttl_s: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        for address, pin in pins:
            key = self.keys.pin(address)
            pipe.delete(key)
            pipe.hset(key, mapping=pin_mapping(pin, since))
            pipe.expire(key, ttl_s)
        pipe.execute()

    def publish_queued(self, instance: str, bound: Mapping[str, int], ttl_s: int) -> None:
        """This host's deferred mail per endpoint (``status`` sums the hosts')."""
        key = self.keys.queued(instance)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=dict(bound))
        pipe.expire(key, ttl_s)
        pipe.execute()


async def read_pin(
    channel: ScriptChannel, keys: KeySchema, address: str, endpoints: Mapping[str, object]
) -> tuple[Pin | None, dict[bytes, bytes]]:
    """The table's one-pin read: the pin (None when absent or junk) and its raw hash."""
    try:
        raw = pairs(await channel.call("HGETALL", keys.pin(address)))
    except ResponseError as exc:  # a hand-made key of another type: junk, decided anew
        return None, {b"junk": str(exc).encode()}
    return (parse_pin(raw, endpoints) if raw else None), raw


async def read_endpoint(
    channel: ScriptChannel, keys: KeySchema, endpoint: str, scopes: Sequence[str]
) -> EndpointRecords:
    """One endpoint's records, for these provider scopes, in one round trip."""
    replies = await channel.call_many(
        [
            ("HGETALL", keys.endpoint_state(endpoint)),
            ("MGET", *(keys.suspension(endpoint, p) for p in scopes)),
            ("MGET", *(keys.requeue(endpoint, p) for p in scopes)),
        ]
    )
    suspended = replies[1] if isinstance(replies[1], list) else []
    requested = replies[2] if isinstance(replies[2], list) else []
    return EndpointRecords(
        fields_of(replies[0]),
        {p: text_of(v) or "" for p, v in zip(scopes, suspended, strict=False) if v is not None},
        [p for p, v in zip(scopes, requested, strict=False) if v is not None],
    )


async def write_move(
    channel: ScriptChannel,
    keys: KeySchema,
    address: str,
    pin: Pin,
    since: float,
    ttl_s: int,
    deltas: list[tuple[str, str]],
) -> None:
    """Pin ``address`` (replacing junk of any type) and apply the counter deltas."""
    mapping = pin_mapping(pin, since)
    commands: list[tuple[object, ...]] = [
        ("DEL", keys.pin(address)),
        ("HSET", keys.pin(address), *(x for kv in mapping.items() for x in kv)),
        ("EXPIRE", keys.pin(address), ttl_s),
    ]
    if deltas:
        commands.append(count_command(deltas))
    await channel.call_many(commands)
