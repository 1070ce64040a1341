"""Redis tells us when a key that local decisions read changes.

Server-assisted client-side caching (CLIENT TRACKING, Redis 6+) in broadcast
mode: every write to a key under our tracked prefixes, by anyone (redis-cli,
the CLI, the feedback daemon, an expiry), sends the key's name to this
connection. Its own id is the redirect target, so this works in RESP2 and
through any proxy-free connection, with AUTH, ACL users and TLS like every
other connection of ours. The ACL user needs ``+client|id +client|tracking
+subscribe +ping &__redis__:invalidate``.

A PING on the same connection is answered after every invalidation Redis
queued before it: ``barrier`` uses that to wait until all earlier writes are known.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from redis.exceptions import ConnectionError as RedisConnectionError

from smtp_balancer.config.services import RedisConfig
from smtp_balancer.state.channel import ScriptChannel

INVALIDATE_CHANNEL = "__redis__:invalidate"


class Tracker:
    def __init__(
        self,
        cfg: RedisConfig,
        prefixes: Sequence[str],
        on_invalidate: Callable[[list[bytes] | None], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.prefixes = tuple(prefixes)
        self.lost = asyncio.Event()
        self._on_invalidate = on_invalidate
        self._on_lost = on_lost
        self._channel = ScriptChannel(cfg, on_push=self._push, on_reset=self._reset)

    def _push(self, keys: object) -> None:
        # a list of key names, or nil when the whole database was flushed
        self._on_invalidate([k for k in keys if isinstance(k, bytes)] if isinstance(keys, list) else None)

    def _reset(self) -> None:
        self.lost.set()
        self._on_lost()

    async def start(self) -> None:
        """Connect and subscribe; raises RedisError (ResponseError: refused, e.g. by an ACL)."""
        self.lost.clear()
        channel = self._channel
        client_id = await channel.call("CLIENT", "ID")
        args: list[str] = []
        for prefix in self.prefixes:
            args += ["PREFIX", prefix]
        await channel.call("CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST", *args)
        await channel.call("SUBSCRIBE", INVALIDATE_CHANNEL)

    async def barrier(self) -> None:
        """Return once every invalidation Redis sent before now has been handled."""
        if not self._channel.connected:  # a reconnect here would not be tracking
            raise RedisConnectionError("the tracking connection is down")
        await self._channel.call("PING")

    async def close(self) -> None:
        await self._channel.close()
