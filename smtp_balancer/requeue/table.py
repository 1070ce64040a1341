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

from redis.exceptions import RedisError

from smtp_balancer.activation import inherited_sockets
from smtp_balancer.config.base import parse_hostport
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.plan import route_for
from smtp_balancer.decision.providers import domain_of
from smtp_balancer.engine import Engine
from smtp_balancer.feedback.responses import builtin_rules
from smtp_balancer.observe.metrics import ListenError
from smtp_balancer.observe.ratelimit import LogLimiter
from smtp_balancer.requeue.metrics import MOVED, TABLE_LOOKUPS
from smtp_balancer.requeue.plan import AutomaticRules, EndpointState, endpoint_state, move_reason
from smtp_balancer.requeue.socketmap import RequestParser, SocketmapError, TableRequest, netstring
from smtp_balancer.requeue.sweeper import reason_kind
from smtp_balancer.state.keys import ALL_PROVIDERS, KeySchema
from smtp_balancer.state.pins import Pin, given_back, read_endpoint, read_pin, write_move
from smtp_balancer.state.values import parse_int

log = logging.getLogger("smtp_balancer.table")
TABLE_NAME = "route"  # Postfix: transport_maps = socketmap:inet:HOST:PORT:route
REROUTE_NAME = "reroute"  # Exim: a router's ${readsocket} at each retry
NOTFOUND = "NOTFOUND "


class RouteTable:
    def __init__(self, engine: Engine, timeout_s: float) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self.notes = LogLimiter(log)
        config = engine.config
        self.keys = KeySchema(config.redis.prefix)
        self.rules = AutomaticRules.from_config(
            config.feedback, builtin_rules(), config.requeue.health_quarantines
        )

    async def answer(self, request: TableRequest) -> str:
        try:
            async with asyncio.timeout(self.timeout_s + self.engine.budget_s):
                if request.name == TABLE_NAME:
                    return await self.route(request.key.strip().lower())
                if request.name == REROUTE_NAME:
                    return await self.reroute(request.key)
        except (TimeoutError, RedisError, OSError) as exc:  # an answer always: the MTA retries later
            TABLE_LOOKUPS.labels("temp").inc()
            self.notes.warning("redis", "table lookup %r: Redis unusable (%s)", request.key[:80], exc)
            return "TEMP Redis unavailable to smtp-balancer"
        except Exception:  # a bug must not leave qmgr or Exim without an answer
            TABLE_LOOKUPS.labels("temp").inc()
            log.exception("table lookup %r failed", request.key[:80])
            return "TEMP internal error in smtp-balancer's table"
        TABLE_LOOKUPS.labels("bad_request").inc()
        return f"PERM no table {request.name[:40]!r}: this socketmap serves {TABLE_NAME!r}"

    # -- Postfix: qmgr asks for mail without a FILTER -------------------------------
    async def route(self, address: str) -> str:
        if "@" not in address:
            TABLE_LOOKUPS.labels("notfound").inc()
            return NOTFOUND
        pin, raw = await self.pin(address)
        if not raw:
            TABLE_LOOKUPS.labels("notfound").inc()
            return NOTFOUND
        provider = self.provider_of(address)
        if pin is None:
            TABLE_LOOKUPS.labels("junk_pin").inc()
            self.notes.warning("junk pin", "pin of %s is unreadable (%r); deciding anew", address, raw)
            return await self.move(address, provider, "(junk pin)", 1, "-", "its pin is unreadable", 0.0)
        # the same test as for queued mail: does the pinned route's state call for a move?
        why = move_reason(await self.endpoint_state(pin.endpoint), provider, self.rules)
        if why is None:
            TABLE_LOOKUPS.labels("pinned").inc()
            return "OK " + self.target(pin.endpoint)
        return await self.move(address, provider, pin.endpoint, max(pin.units, 1), "-", why, 0.0)

    # -- Exim: a router asks at each retry whether the stored route still holds --------
    async def reroute(self, key: str) -> str:
        """``<route> <message age s> <message id> <address>``: the route to use now."""
        parts = key.split(" ", 3)
        age = parse_int(parts[1], 15) if len(parts) == 4 else None
        if age is None or "@" not in parts[3]:
            TABLE_LOOKUPS.labels("bad_request").inc()
            return f"PERM expected '<route> <age> <message id> <address>', got {key[:80]!r}"
        old, message_id, address = parts[0], parts[2], parts[3].strip().lower()
        if old not in self.engine.config.endpoints:
            TABLE_LOOKUPS.labels("notfound").inc()
            return NOTFOUND  # not ours: the router keeps what it had
        provider = self.provider_of(address)
        why = move_reason(await self.endpoint_state(old), provider, self.rules)
        if why is None:
            TABLE_LOOKUPS.labels("stays").inc()
            return "OK " + self.target(old)
        pin, _ = await self.pin(address)
        if pin is not None and pin.endpoint != old and await self.still_eligible(pin.endpoint, provider):
            TABLE_LOOKUPS.labels("pinned").inc()
            return "OK " + self.target(pin.endpoint)
        counted_at = self.engine.clock.wall() - age
        return await self.move(address, provider, old, 1, message_id, why, counted_at)

    # -- shared ---------------------------------------------------------------------------
    async def pin(self, address: str) -> tuple[Pin | None, dict[bytes, bytes]]:
        return await read_pin(self.engine.channel, self.keys, address, self.engine.config.endpoints)

    async def endpoint_state(self, endpoint: str) -> EndpointState:
        """What Redis says now about moving this endpoint's mail (one round trip)."""
        scopes = [p for p in self.engine.planner.providers.names | {"other", ALL_PROVIDERS}]
        r = await read_endpoint(self.engine.channel, self.keys, endpoint, scopes)
        return endpoint_state(r.fields, r.suspensions, r.requested, self.engine.clock.wall())

    def provider_of(self, address: str) -> str:
        return self.engine.planner.providers.for_domain(domain_of(address))

    async def still_eligible(self, endpoint: str, provider: str) -> bool:
        """Whether a pin may be followed: active, and not suspended for the provider."""
        state = await self.endpoint_state(endpoint)
        return state.admin == "active" and not ({provider, ALL_PROVIDERS} & set(state.suspensions))

    def target(self, endpoint: str) -> str:
        ep = self.engine.config.endpoints[endpoint]
        return route_for(endpoint, ep.nexthop).filter_target

    async def move(
        self, address: str, provider: str, old: str, units: int, message_id: str, why: str, counted_at: float
    ) -> str:
        """A new route for one recipient, counted once there; pinned, so later attempts
        follow it without counting again. ``counted_at``: when ``old`` counted it
        (0: unknown, nothing given back)."""
        decision = await self.engine.decide(
            Facts(recipients=(address,), recipient_count=units, queue_id=message_id), record_arm=False
        )
        if decision.degraded or decision.outcome == "defer":
            TABLE_LOOKUPS.labels("temp").inc()
            return f"TEMP no route can be counted for {provider} now"
        if decision.outcome != "route" or decision.endpoint is None:
            TABLE_LOOKUPS.labels("notfound").inc()
            return NOTFOUND  # the rules say: the MTA's own transport
        if decision.endpoint == old:  # it became eligible again meanwhile
            TABLE_LOOKUPS.labels("stays").inc()
            return "OK " + self.target(old)
        new = Pin(decision.endpoint, provider, units, f"moved from {old}: {why}")
        wall = self.engine.clock.wall()
        deltas = []
        if counted_at and old in self.engine.config.endpoints:
            deltas = given_back(self.keys, old, {provider: units}, counted_at, wall)
        await write_move(
            self.engine.channel, self.keys, address, new, wall, self.engine.config.requeue.pin_ttl, deltas
        )
        TABLE_LOOKUPS.labels("moved").inc()
        MOVED.labels(
            old if old in self.engine.config.endpoints else "unknown", decision.endpoint, reason_kind(why)
        ).inc()
        log.info(
            "moved %s of queue id %s from %s to %s at delivery (%s)",
            address,
            message_id,
            old,
            decision.endpoint,
            why,
        )
        return "OK " + self.target(decision.endpoint)


class TableServer:
    """asyncio TCP listener for the socketmap; one request at a time per connection,
    as Postfix sends them."""

    def __init__(self, table: RouteTable, listen: str) -> None:
        self.table = table
        self.listen = listen
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        passed = inherited_sockets()  # smtp-balancer-table.socket: open across restarts
        if passed:
            self.server = await asyncio.start_server(self.serve, sock=passed[0])
            where = f"the socket systemd passed ({passed[0].getsockname()})"
        else:
            host, port = parse_hostport(self.listen)
            try:
                self.server = await asyncio.start_server(self.serve, host, port, reuse_address=True)
            except OSError as exc:
                raise ListenError("requeue.table_listen", self.listen, exc) from exc
            where = self.listen
        log.info("delivery-time table (socketmap %s) listening on %s", TABLE_NAME, where)

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
