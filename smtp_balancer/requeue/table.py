"""The delivery-time table: a Postfix socketmap (transport_maps) answering pins.

Postfix's qmgr asks it for each recipient of mail that has no FILTER, at every
delivery attempt; mail with a FILTER never reaches it (verified on Postfix 3.7:
with the table down, FILTERed mail is delivered). Only qmgr resolves through it:
the rendered main.cf gives everyone else (smtpd, cleanup) a trivial-rewrite
without the table (``rewrite-nomap``), so intake never depends on it. It answers
for mail the requeue daemon moved:
- a pin whose endpoint is still eligible: ``OK <endpoint>:<nexthop>``;
- a pin whose endpoint became ineligible since: a new decision (counted once, on
  the new route), written back to the pin;
- no pin: ``NOTFOUND`` (Postfix's own transport, as before);
- Redis unreachable, or no route that can be counted now: ``TEMP``, and the
  message waits in the queue rather than leaving by a route we cannot vouch for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from smtp_balancer.config.base import parse_hostport
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.plan import route_for
from smtp_balancer.decision.providers import domain_of
from smtp_balancer.engine import Engine
from smtp_balancer.observe.metrics import ListenError
from smtp_balancer.observe.ratelimit import LogLimiter
from smtp_balancer.requeue.metrics import TABLE_LOOKUPS
from smtp_balancer.requeue.pins import Pin, parse_pin, pin_mapping
from smtp_balancer.requeue.socketmap import RequestParser, SocketmapError, TableRequest, netstring
from smtp_balancer.state.keys import KeySchema

log = logging.getLogger("smtp_balancer.table")
TABLE_NAME = "route"
NOTFOUND = "NOTFOUND "


def pairs(reply: object) -> dict[bytes, bytes]:
    """HGETALL's reply as a dict, RESP2 (flat list) or RESP3 (map)."""
    if isinstance(reply, dict):
        return reply
    if isinstance(reply, list):
        return dict(zip(reply[::2], reply[1::2], strict=False))
    return {}


class RouteTable:
    def __init__(self, engine: Engine, timeout_s: float) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self.notes = LogLimiter(log)

    async def answer(self, request: TableRequest) -> str:
        if request.name != TABLE_NAME:
            TABLE_LOOKUPS.labels("bad_request").inc()
            return f"PERM no table {request.name[:40]!r}: this socketmap serves {TABLE_NAME!r}"
        address = request.key.strip().lower()
        if "@" not in address:
            TABLE_LOOKUPS.labels("notfound").inc()
            return NOTFOUND
        config = self.engine.config
        keys = KeySchema(config.redis.prefix)
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = pairs(await self.engine.channel.call("HGETALL", keys.pin(address)))
        except Exception as exc:  # a lookup must get an answer: Postfix then retries later
            TABLE_LOOKUPS.labels("temp").inc()
            self.notes.warning("redis", "table lookup for %s: Redis unusable (%s)", address, exc)
            return "TEMP Redis unavailable to smtp-balancer"
        if not raw:
            TABLE_LOOKUPS.labels("notfound").inc()
            return NOTFOUND
        pin = parse_pin(raw, config.endpoints)
        provider = self.engine.planner.providers.for_domain(domain_of(address))
        if pin is not None and self.still_eligible(pin.endpoint, provider):
            TABLE_LOOKUPS.labels("pinned").inc()
            return "OK " + self.target(pin.endpoint)
        return await self.move_again(address, provider, pin, keys)

    def still_eligible(self, endpoint: str, provider: str) -> bool:
        live = self.engine.live
        if live is None:
            return True  # no mirror (decision.local off): the sweeper moves it again
        clock = self.engine.clock
        if live.is_out_of_service(endpoint, clock.wall()):
            return False
        return not live.suspended(endpoint, (provider,), clock.monotonic())

    def target(self, endpoint: str) -> str:
        ep = self.engine.config.endpoints[endpoint]
        return route_for(endpoint, ep.nexthop).filter_target

    async def move_again(self, address: str, provider: str, pin: Pin | None, keys: KeySchema) -> str:
        """The pinned route became ineligible (or the pin is junk): decide anew, once."""
        units = pin.units if pin is not None and pin.units > 0 else 1
        decision = await self.engine.decide(
            Facts(recipients=(address,), recipient_count=units, queue_id="table")
        )
        if decision.degraded or decision.outcome == "defer":
            TABLE_LOOKUPS.labels("temp").inc()
            return f"TEMP no route can be counted for {provider} now"
        if decision.outcome != "route" or decision.endpoint is None:
            TABLE_LOOKUPS.labels("notfound").inc()
            return NOTFOUND
        old = pin.endpoint if pin is not None else "(junk pin)"
        new = Pin(decision.endpoint, provider, units, f"moved again from {old}: {decision.reason}")
        with contextlib.suppress(Exception):  # the answer stands; a later lookup decides again
            mapping = pin_mapping(new, self.engine.clock.wall())
            await self.engine.channel.call(
                "HSET", keys.pin(address), *(x for kv in mapping.items() for x in kv)
            )
        TABLE_LOOKUPS.labels("moved").inc()
        log.info("table: %s moved from %s to %s at delivery (%s)", address, old, decision.endpoint, provider)
        return "OK " + self.target(decision.endpoint)


class TableServer:
    """asyncio TCP listener for the socketmap; one request at a time per connection,
    as Postfix sends them."""

    def __init__(self, table: RouteTable, listen: str) -> None:
        self.table = table
        self.listen = listen
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        host, port = parse_hostport(self.listen)
        try:
            self.server = await asyncio.start_server(self.serve, host, port, reuse_address=True)
        except OSError as exc:
            raise ListenError("requeue.table_listen", self.listen, exc) from exc
        log.info("delivery-time table (socketmap %s) listening on %s", TABLE_NAME, self.listen)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = RequestParser()
        try:
            while data := await reader.read(4096):
                for request in parser.feed(data):
                    writer.write(netstring(await self.table.answer(request)))
                await writer.drain()
        except SocketmapError as exc:
            TABLE_LOOKUPS.labels("bad_request").inc()
            self.table.notes.warning("bad request", "closing table connection: %s", exc)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


__all__ = ["RouteTable", "TableServer"]
