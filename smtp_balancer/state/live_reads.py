"""Reading the live state from Redis for the mirror (engine/mirror.py): the whole of
it in pipelined rounds, or the keys tracking named as changed. What the replies
mean is ``state/live.py``'s; which keys to read, and how, is here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from smtp_balancer.state.channel import ScriptChannel
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.live import Junk, LiveState, parse_live_state

BATCH = 500  # commands per pipelined round: never a queue of 100,000 on Redis

Command = tuple[object, ...]
# a changed key's name, its kind (KeySchema.tracked_key) and scope
Tracked = tuple[str, str, tuple[str, ...]]
PLAIN_KINDS = frozenset({"weights", "state", "warmup", "experiment", "suspend"})  # one reply each


async def call_batched(channel: ScriptChannel, commands: Sequence[Command]) -> list[object]:
    """call_many in pipelined rounds of BATCH."""
    out: list[object] = []
    for start in range(0, len(commands), BATCH):
        out += await channel.call_many(list(commands[start : start + BATCH]))
    return out


async def scan(channel: ScriptChannel, pattern: str) -> list[bytes]:
    """Every key matching ``pattern`` (SCAN, 1,000 a round)."""
    found: list[bytes] = []
    cursor: bytes = b"0"
    while True:
        cursor, batch = await channel.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        found += batch
        if cursor == b"0":
            return found


async def read_live_state(
    channel: ScriptChannel,
    keys: KeySchema,
    members: Mapping[str, list[str]],
    endpoints: list[str],
    managed: list[str],
    experiments: list[str],
    now: float,
    junk: Junk,
) -> LiveState:
    """Weights, admin states, warm-up records, experiments, suspensions, throttles and
    adaptive factors, as one new LiveState (``now``: the monotonic clock). A key of the
    wrong type comes back as an error value: junk, skipped as select.lua skips it."""
    replies = await call_batched(
        channel,
        [("HMGET", keys.pool_weights(p), *m) for p, m in members.items()]
        + [("HMGET", keys.endpoint_state(e), "state", "until") for e in endpoints]
        + [("HMGET", keys.warmup(e), "step", "day") for e in managed]
        + [("HGET", keys.experiment(x), "state") for x in experiments],
    )
    suspension_keys = await scan(channel, keys.suspension_pattern())
    throttle_keys = await scan(channel, keys.throttle_pattern())
    adaptive_keys = await scan(channel, keys.adaptive_pattern())
    pttls = await call_batched(channel, [("PTTL", k) for k in suspension_keys])
    flat = await call_batched(
        channel, [c for k in throttle_keys + adaptive_keys for c in (("GET", k), ("PTTL", k))]
    )
    factors = list(zip(flat[::2], flat[1::2], strict=True))
    throttles, adaptive = factors[: len(throttle_keys)], factors[len(throttle_keys) :]
    p, e, m = len(members), len(endpoints), len(managed)
    return parse_live_state(
        keys,
        members,
        replies[:p],
        endpoints,
        replies[p : p + e],
        suspension_keys,
        pttls,
        now,
        throttle_keys,
        throttles,
        junk,
        adaptive_keys,
        adaptive,
        managed,
        replies[p + e : p + e + m],
        experiments,
        replies[p + e + m :],
    )


async def reread(
    channel: ScriptChannel, keys: KeySchema, members: Mapping[str, list[str]], changed: Iterable[bytes]
) -> list[tuple[Tracked, object, object]]:
    """The changed keys this process reads, each with its value (and its PTTL for a
    throttle or adaptive factor, else None), in pipelined rounds."""
    tracked: list[tuple[Tracked, bool]] = []  # and whether its PTTL is read too
    commands: list[Command] = []
    for raw in changed:
        name = raw.decode(errors="replace")
        kind_scope = keys.tracked_key(name)
        if kind_scope is None:
            continue
        kind, scope = kind_scope
        if kind == "weights":
            pool = members.get(scope[0])
            if pool is None:
                continue  # not a pool of ours: nothing reads it
            commands.append(("HMGET", raw, *pool))
        elif kind == "state":
            commands.append(("HMGET", raw, "state", "until"))
        elif kind == "warmup":
            commands.append(("HMGET", raw, "step", "day"))
        elif kind == "experiment":
            commands.append(("HGET", raw, "state"))
        elif kind == "suspend":
            commands.append(("PTTL", raw))
        else:  # a throttle or an adaptive factor: its value and how long it lasts
            commands += [("GET", raw), ("PTTL", raw)]
        tracked.append(((name, kind, scope), kind not in PLAIN_KINDS))
    replies = iter(await call_batched(channel, commands))
    return [(t, next(replies), next(replies) if with_ttl else None) for t, with_ttl in tracked]
