"""The asyncio policy server: TCP and unix listeners, persistent connections.

Postfix keeps one connection per smtpd process and sends one request at a
time; Exim's ${readsocket} sends one request and shuts its side down. Both are
served by the same loop. A protocol error closes only the offending connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import stat
from pathlib import Path

from smtp_balancer_policyd import metrics
from smtp_balancer_policyd.protocol import ProtocolError, RequestParser, Truncated, format_reply
from smtp_balancer_policyd.session import Immediate, InstanceJoin, action_for, handle

from smtp_balancer.config.base import parse_hostport
from smtp_balancer.config.model import PolicydConfig
from smtp_balancer.decision_log import log_decision
from smtp_balancer.engine import Engine
from smtp_balancer.logs import fields

log = logging.getLogger("smtp_balancer.policyd")

READ_CHUNK = 65536
LISTEN_BACKLOG = 1024


class PolicyServer:
    def __init__(self, engine: Engine, config: PolicydConfig) -> None:
        self.engine = engine
        self.config = config
        self.join = InstanceJoin(config.join_max_instances, config.join_ttl_s)
        self.decisions = asyncio.Semaphore(config.max_concurrent_decisions)
        self.servers: list[asyncio.AbstractServer] = []
        self.connections = 0
        metrics.OPEN_INSTANCES.set_function(lambda: len(self.join))

    async def start(self) -> None:
        for spec in self.config.listen:
            if spec.startswith("unix:"):
                self.servers.append(await self._unix(spec[5:]))
            else:
                host, port = parse_hostport(spec.removeprefix("inet:"))
                server = await asyncio.start_server(
                    self._serve, host, port, backlog=LISTEN_BACKLOG, reuse_address=True
                )
                self.servers.append(server)
        log.info("policy service listening on %s", ", ".join(self.addresses))

    async def _unix(self, path: str) -> asyncio.AbstractServer:
        sock_path = Path(path)
        if sock_path.exists() and stat.S_ISSOCK(sock_path.stat().st_mode):
            sock_path.unlink()  # a stale socket from a previous run
        server = await asyncio.start_unix_server(self._serve, path, backlog=LISTEN_BACKLOG)
        os.chmod(path, int(self.config.unix_mode, 8))
        if self.config.unix_owner or self.config.unix_group:
            uid = pwd.getpwnam(self.config.unix_owner).pw_uid if self.config.unix_owner else -1
            gid = grp.getgrnam(self.config.unix_group).gr_gid if self.config.unix_group else -1
            os.chown(path, uid, gid)
        return server

    @property
    def addresses(self) -> list[str]:
        out = []
        for server in self.servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append(f"unix:{name}" if isinstance(name, str) else f"inet:{name[0]}:{name[1]}")
        return out

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or "unix"
        if self.connections >= self.config.max_connections:
            metrics.REFUSED_CONNECTIONS.inc()
            log.warning("refusing connection from %s: max_connections %d reached", peer, self.connections)
            writer.close()
            return
        self.connections += 1
        metrics.CONNECTIONS.inc()
        parser = RequestParser()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.config.idle_timeout_s):
                        data = await reader.read(READ_CHUNK)
                except TimeoutError:
                    if parser.pending:
                        raise Truncated(f"no complete request within {self.config.idle_timeout_s}s") from None
                    break
                if not data:
                    parser.eof()
                    break
                for request in parser.feed(data):
                    writer.write(format_reply(await self._answer(request)))
                await writer.drain()
        except ProtocolError as exc:
            metrics.PROTOCOL_ERRORS.labels(exc.kind).inc()
            log.warning(
                "closing policy connection: %s",
                exc,
                extra=fields(peer=str(peer), kind=exc.kind, error=str(exc)),
            )
        except (ConnectionError, OSError) as exc:
            log.debug("policy connection from %s lost: %s", peer, exc)
        finally:
            self.connections -= 1
            metrics.CONNECTIONS.dec()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, request: dict[str, str]) -> str:
        outcome = handle(request, self.join)
        if isinstance(outcome, Immediate):
            state = request.get("protocol_state", "").lower() or "none"
            metrics.REQUESTS.labels(state if state in ("rcpt", "connect", "data") else "other").inc()
            if outcome.note:
                log.info("answering DUNNO: %s", outcome.note)
            return outcome.action
        metrics.REQUESTS.labels("end_of_message").inc()
        async with self.decisions:
            decision = await self.engine.decide(outcome)
        action = action_for(decision)
        log_decision("policyd", outcome, decision, action=action)
        return action
