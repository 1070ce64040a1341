"""One Redis connection that carries many concurrent commands as a pipeline.

The decision hot path sends one EVALSHA per message from many concurrent
callers. redis-py takes a pooled connection per command and pays for its
generality each time; here every caller writes into one connection, writes are
flushed once per event-loop turn, and because Redis answers in request order a
FIFO of futures pairs each reply with its caller. hiredis parses the replies.

It speaks AUTH (password or ACL user), SELECT, TLS and Sentinel (the master is
looked up again on every reconnect, so a failover is followed).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio.sentinel
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from smtp_balancer.config.services import RedisConfig
from smtp_balancer.state import cluster
from smtp_balancer.state.client import resolve_password, resolve_username, sentinel_kwargs, tls_hint
from smtp_balancer.state.scripts import LuaScript

MAX_PENDING = 100_000  # beyond this Redis is not keeping up: fail fast, the engine degrades


def pack_command(args: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


# a TIME reply slower than this measures the clocks' offset too loosely to replace a
# tighter one (a handshake queued behind a stalled Redis takes seconds)
OFFSET_MAX_RTT_S = 0.25


def _offset(reply: object, sent_at: float, received_at: float) -> float | None:
    """Redis's clock minus ours from a TIME reply: the lowest value the round trip allows.

    Redis read its clock somewhere between ``sent_at`` and ``received_at``. Taking the
    latest moment puts a script's deadline early rather than late: a slow round trip
    can make a call count nothing, never make a late one count.
    """
    if not isinstance(reply, list) or len(reply) != 2:
        return None  # refused (an ACL without +time): scripts then get no deadline
    try:
        redis_now = int(reply[0]) + int(reply[1]) / 1e6
    except (TypeError, ValueError):
        return None
    return redis_now - received_at


def _ssl_context(cfg: RedisConfig) -> ssl.SSLContext:
    tls = cfg.tls
    ctx = ssl.create_default_context(cafile=tls.ca_file if tls else None)
    if tls and tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls and not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _retrieve_closing(writer: asyncio.StreamWriter) -> None:
    """Await the stream's end in the background, so that the error it ended with (a TLS
    alert such as TLSV13_ALERT_CERTIFICATE_REQUIRED, read after the handshake) is
    retrieved: left to the garbage collector, the stream's closed-future may be
    finalized before its protocol and log "Future exception was never retrieved"."""
    try:
        closing = asyncio.get_running_loop().create_task(writer.wait_closed())
    except RuntimeError:  # no running loop: nothing will finalize it in one either
        return
    closing.add_done_callback(lambda task: task.cancelled() or task.exception())


class _Moved(Exception):
    """A MOVED, ASK or READONLY reply from a cluster node: reconnect, asking anew."""


class ScriptChannel:
    """``on_push`` receives pub/sub messages (a subscribed connection's pushes);
    ``on_reset`` is told when the connection is gone."""

    def __init__(
        self,
        cfg: RedisConfig,
        *,
        on_push: Callable[[Any], None] | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.on_push = on_push
        self.on_reset = on_reset
        self._params = parse_url(cfg.url)  # host/port or path, db, credentials from the URL
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        self._read_task: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()
        # Redis's TIME minus our wall clock, measured at connect (None: unknown);
        # scripts get deadlines in Redis's time, so clocks need not agree
        self.redis_offset_s: float | None = None
        self._offset_rtt = float("inf")  # the round trip of the TIME that measured it
        # when Redis last sent anything (time.monotonic): its silence is a stall
        self.last_reply_at = time.monotonic()
        self._owed_since = self.last_reply_at  # when a reply was last owed after none was

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    # -- connection ------------------------------------------------------------
    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        cfg, params = self.cfg, self._params
        if cfg.sentinel:
            hosts, skw = sentinel_kwargs(cfg)
            sentinel = redis.asyncio.sentinel.Sentinel(hosts, sentinel_kwargs=skw)
            host, port = await sentinel.discover_master(cfg.sentinel.service_name)
        elif cfg.cluster:
            username = resolve_username(cfg) or params.get("username")
            password = resolve_password(cfg) or params.get("password")
            host, port = await cluster.find_master_async(cfg, cluster.node_kwargs(cfg, username, password))
        elif "path" in params:
            return await asyncio.open_unix_connection(params["path"])
        else:
            host, port = params.get("host", "127.0.0.1"), params.get("port", 6379)
        tls = cfg.url.startswith("rediss://") or (cfg.sentinel is not None and cfg.tls is not None)
        ctx = _ssl_context(cfg) if tls else None
        return await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if ctx else None)

    async def _ensure(self) -> None:
        if self.connected:
            return
        async with self._connect_lock:
            if self.connected:
                return
            # a cluster's nodes are asked in turn first: a connect timeout each
            asks = 1 + (len(self.cfg.cluster.nodes) if self.cfg.cluster else 0)
            async with asyncio.timeout(asks * self.cfg.connect_timeout_ms / 1000):
                reader, writer = await self._open()
            self._reader, self._writer = reader, writer
            self._read_task = asyncio.get_running_loop().create_task(self._read_loop(reader))
            params = self._params
            username = resolve_username(self.cfg) or params.get("username")
            password = resolve_password(self.cfg) or params.get("password")
            handshake: list[tuple[Any, ...]] = []
            if password:
                handshake.append(("AUTH", username, password) if username else ("AUTH", password))
            if params.get("db"):
                handshake.append(("SELECT", params["db"]))
            handshake.append(("CLIENT", "SETNAME", "smtp-balancer"))
            handshake.append(("TIME",))
            sent_at = time.time()
            replies = [self._send(cmd) for cmd in handshake]
            try:
                for cmd, fut in zip(handshake, replies, strict=True):
                    result = await fut
                    if cmd[0] == "TIME":
                        self._measured(_offset(result, sent_at, now := time.time()), now - sent_at)
                    # a name only helps CLIENT LIST, and TIME only deadlines: an ACL may refuse them
                    elif isinstance(result, ResponseError) and cmd[0] != "CLIENT":
                        # AUTH/SELECT refused: a connection problem, not a script one
                        raise RedisConnectionError(
                            f"Redis refused the connection setup: {result}"
                        ) from result
            except BaseException:
                self.reset()
                raise

    def _measured(self, offset: float | None, rtt: float) -> None:
        """Keep the tightest offset: a new one if its round trip was quick or quicker."""
        if offset is None:
            self.redis_offset_s, self._offset_rtt = None, float("inf")
        elif self.redis_offset_s is None or rtt <= max(OFFSET_MAX_RTT_S, self._offset_rtt):
            self.redis_offset_s, self._offset_rtt = offset, rtt

    def reset(self, why: str = "connection reset") -> None:
        """Drop the connection and fail everything still waiting on it."""
        writer, self._writer, self._reader = self._writer, None, None
        if self._read_task is not None:
            self._read_task.cancel()
            self._read_task = None
        if writer is not None:
            writer.close()
            _retrieve_closing(writer)
        self._outbox.clear()
        pending, self._pending = self._pending, deque()
        for fut in pending:
            if not fut.done():
                fut.set_exception(RedisConnectionError(why))
                # a caller that awaits it still gets the error; one that never will (the
                # rest of a failed handshake) must not leave "exception never retrieved"
                fut.exception()
        if writer is not None and self.on_reset is not None:
            self.on_reset()

    async def close(self) -> None:
        writer = self._writer
        self.reset("channel closed")
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader(replyError=ResponseError)
        why = "Redis closed the connection" + tls_hint(self.cfg)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                self.last_reply_at = time.monotonic()
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if self.on_push is not None and isinstance(reply, list) and reply[:1] == [b"message"]:
                        self.on_push(reply[2])  # in subscribed mode only pushes are "message"
                        continue
                    fut = self._pending.popleft()
                    if self.cfg.cluster is not None and cluster.moved(reply):
                        # our slot is served elsewhere now: ask the cluster on reconnect
                        raise _Moved(f"the cluster moved our slot: {reply}")
                    if not fut.done():  # a caller that timed out has gone
                        fut.set_result(reply)
        except _Moved as exc:
            why = str(exc)
            self._pending.appendleft(fut)  # fails with the rest, as a connection error
        except (OSError, IndexError):
            pass
        except asyncio.CancelledError:
            return
        self.reset(why)

    def silent_s(self) -> float:
        """How long Redis has owed a reply and sent nothing (0 when nothing is owed).
        Not the age of the last reply: a daemon that was itself stopped, or idle, has
        owed nothing meanwhile."""
        if not self._pending:
            return 0.0
        return time.monotonic() - max(self.last_reply_at, self._owed_since)

    # -- commands -----------------------------------------------------------------
    def _send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if len(self._pending) >= MAX_PENDING:
            raise RedisConnectionError(f"{MAX_PENDING} commands already waiting on Redis")
        if not self._pending:
            self._owed_since = time.monotonic()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(fut)
        self._outbox.append(pack_command(args))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._outbox and self._writer is not None:
            self._writer.write(b"".join(self._outbox))
            self._outbox.clear()

    def fire(self, *args: Any) -> None:
        """A command whose reply nobody waits for, sent only over a connection already
        open (tidying that may be skipped)."""
        if self.connected and len(self._pending) < MAX_PENDING:
            self._send(args)

    async def call(self, *args: Any) -> Any:
        """One command; a Redis error reply is raised as ResponseError."""
        await self._ensure()
        reply = await self._send(args)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def call_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Several commands in one pipelined write, without a task each; a Redis error
        reply comes back as a ResponseError value in its place (a key of the wrong type
        is data to report, not a failure). A lost connection raises."""
        if not commands:
            return []
        await self._ensure()
        futures = [self._send(command) for command in commands]
        results: list[Any] = []
        lost: BaseException | None = None
        for future in futures:
            try:
                results.append(await future)
            except RedisConnectionError as exc:  # every future is awaited: none left unretrieved
                lost = lost or exc
                results.append(None)
        if lost is not None:
            raise lost
        return results

    async def load_script(self, script: LuaScript) -> None:
        await self.call("SCRIPT", "LOAD", script.text)

    async def ensure(self) -> None:
        """Connect (with the handshake) unless connected."""
        await self._ensure()

    async def send_script(self, script: LuaScript, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """Send an EVALSHA and return the future of its reply, uncancelled by whoever
        stops waiting for it: the reply still arrives in its turn, so a caller that gave
        up can hand it on (a Redis error reply is its value, NOSCRIPT included)."""
        await self._ensure()
        return self.send_now("EVALSHA", script.sha, len(keys), *keys, *args)

    def send_script_now(self, script: LuaScript, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """``send_script`` over the open connection (``ensure`` first)."""
        return self.send_now("EVALSHA", script.sha, len(keys), *keys, *args)

    async def ping(self) -> None:
        await self.call("PING")

    def send_now(self, *args: Any) -> asyncio.Future[Any]:
        """Send a command over the open connection (``ensure`` first) and return the
        future of its reply, as ``send_script`` does."""
        if not self.connected:
            raise RedisConnectionError("not connected to Redis")
        return self._send(args)

    async def evalsha(self, script: LuaScript, keys: list[Any], args: list[Any]) -> Any:
        """Run a script by its SHA, loading it when Redis lacks it."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # a restarted or flushed Redis forgot the script: load it and retry once
            await self.load_script(script)
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
