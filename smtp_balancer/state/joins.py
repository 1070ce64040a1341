"""RCPT recipients shared by policyd's worker processes, in Redis for a short while.

With ``policyd.workers`` above 1, the kernel hands each connection to any worker.
Postfix reconnects to the policy service (``smtpd_policy_service_max_ttl``,
``request_limit``), so a message's END-OF-MESSAGE request can reach another
worker than its RCPT requests did. Each RCPT is therefore also written here (a
hash of recipient -> how many times it was given, with a TTL), before its DUNNO
goes back, and a worker that finds fewer recipients than Postfix counted reads
the rest from here. Only commands the policyd ACL user already has: HINCRBY,
EXPIRE, HGETALL.
"""

from __future__ import annotations

from collections.abc import Callable

from smtp_balancer.state.channel import ScriptChannel
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.values import parse_int, text_of

MAX_INSTANCE_CHARS = 200  # Postfix's instance is short; a longer one is not shared


class SharedJoins:
    def __init__(self, channel: Callable[[], ScriptChannel], keys: KeySchema, ttl_s: int) -> None:
        """``channel``: the engine's current channel (a reload may replace it)."""
        self.channel = channel
        self.keys = keys
        self.ttl_s = ttl_s

    @staticmethod
    def shareable(instance: str) -> bool:
        return 0 < len(instance) <= MAX_INSTANCE_CHARS

    async def add(self, instance: str, recipient: str) -> None:
        key = self.keys.join(instance)
        await self.channel().call_many([("HINCRBY", key, recipient, 1), ("EXPIRE", key, self.ttl_s)])

    async def take(self, instance: str) -> list[str]:
        """Every recipient given for the message, as often as it was given; the record
        is dropped (a message's END-OF-MESSAGE comes once)."""
        key = self.keys.join(instance)
        got, _ = await self.channel().call_many([("HGETALL", key), ("EXPIRE", key, 0)])
        if not isinstance(got, list):  # a hand-made key of another type: nothing to add
            return []
        out: list[str] = []
        for name, times in zip(got[::2], got[1::2], strict=True):
            recipient = text_of(name) or ""
            count = parse_int(text_of(times), 6)
            out += [recipient] * max(1, min(count or 1, 1000))
        return out

    def drop(self, instance: str) -> None:
        """A message decided with all its recipients at hand: its record is not needed
        (skipped when the connection is down; the TTL removes it then)."""
        self.channel().fire("EXPIRE", self.keys.join(instance), 0)
