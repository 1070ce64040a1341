"""The asyncio policy server: listeners, answering requests, and a clean stop.
Each connection is policyd/transport.py's; a worker's line to its supervisor is
policyd/worker_link.py.

Postfix keeps one connection per smtpd process and sends one request at a
time; Exim's ${readsocket} sends one request and shuts its side down. Both are
served by the same loop. A protocol error closes only the offending connection.
It is an asyncio Protocol rather than streams: most requests are answered
inside ``data_received`` (the engine decides locally), with no task, timer or
await per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Final, TypeVar, cast

from redis.exceptions import RedisError

from policyd import metrics
from policyd.listeners import (
    LISTEN_BACKLOG,
    WORKER_ALIVE,
    WORKER_CLOSED,
    address_of,
    bind_listeners,
)
from policyd.protocol import PolicyRequest
from policyd.session import (
    DEFER_ACTION,
    DUNNO,
    Client,
    Drawn,
    Immediate,
    Incomplete,
    InstanceJoin,
    Later,
    ShareRecipient,
    abandoned,
    action_for,
    facts_of,
    from_readsocket,
    handle,
)
from policyd.transport import PolicyConnection
from policyd.worker_link import WorkerLink
from smtp_balancer.clock import Clock, SystemClock
from smtp_balancer.config.services import PolicydConfig
from smtp_balancer.decision.classes import MessageClasses
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.engine import Engine, Pending, StillWaited
from smtp_balancer.engine.holds import HoldReader
from smtp_balancer.generation import ATTRIBUTE, EXIM_HOLD, GENERATION, MARKER, generation_of
from smtp_balancer.observe.decision_log import log_decision
from smtp_balancer.observe.metrics import observe
from smtp_balancer.observe.ratelimit import LogLimiter
from smtp_balancer.observe.tally import TallyChild
from smtp_balancer.state.joins import SharedJoins
from smtp_balancer.state.keys import KeySchema

log = logging.getLogger("smtp_balancer.policyd")
# counted per request: a static, where metrics.REQUESTS_BY_STAGE is two lookups each time
_BY_STAGE: Final[dict[str, TallyChild]] = metrics.REQUESTS_BY_STAGE
T = TypeVar("T")

# policyd settings a SIGHUP cannot change: they shape sockets opened at start
RESTART_SETTINGS = ("listen", "unix_mode", "unix_owner", "unix_group", "metrics_listen", "workers")


def restart_settings(old: PolicydConfig, new: PolicydConfig) -> list[str]:
    """The settings a reload changed that only a restart applies."""
    return [name for name in RESTART_SETTINGS if getattr(new, name) != getattr(old, name)]


def warn_restart(names: list[str]) -> None:
    for name in names:
        log.warning("policyd.%s changed: it takes effect on restart, not on reload", name)


# besides the decision's own budget, what answering takes on a loaded host: an Exim
# request this close to its readsocket timeout is not decided (its answer would land
# after Exim gave up, and its unit would count for mail that left by default)
ANSWER_MARGIN_S: Final = 0.2
# a decision made this soon after its request was found waited for needs no second look:
# the margins above cover it. Later (the process was stopped, or starved, in between),
# the client may have left: the route's units are given back and the answer is DUNNO
RECHECK_S: Final = 0.05
DRAIN_S: Final = 2.0  # at a stop: how long open connections get to have their requests answered


class PolicyServer:
    def __init__(
        self,
        engine: Engine,
        config: PolicydConfig,
        exim_timeout_s: float = 2.0,
        classes: MessageClasses | None = None,
        tenants: Iterable[str] = (),
        host_clock: Clock | None = None,
    ) -> None:
        """``exim_timeout_s``: exim.readsocket_timeout_s, after which Exim stops waiting;
        ``classes``: the message classes (milter settings) for Exim's header attributes;
        ``tenants``: the configured tenants, whose holds this daemon applies;
        ``host_clock``: the host's real time, never the engine's (Exim's sent_at is the
        host's), which tests move on."""
        self.engine = engine
        self.host_clock: Clock = host_clock or SystemClock()
        self.holds = HoldReader(tenants, log, moves_to=lambda moves: self.engine.move_tenants(moves))
        self.config = config
        self.exim_timeout_s = exim_timeout_s
        self.classes = classes or MessageClasses()
        self.join = InstanceJoin(
            config.join_max_instances, config.join_ttl_s, max_bytes=config.join_max_bytes
        )
        self.decisions = asyncio.Semaphore(config.max_concurrent_decisions)
        self.servers: list[asyncio.AbstractServer] = []
        self.connections = 0
        # lines about bad clients: a few per kind a minute, then a count (metrics stay exact)
        self.notes = LogLimiter(log)
        self._flusher: asyncio.TimerHandle | None = None
        # a worker's line to its supervisor (policyd/workers.py); None in a single process
        self.link: WorkerLink | None = None
        self.workers = 1  # processes sharing policyd.max_connections
        self.open_connections: set[PolicyConnection] = set()
        self._shared: SharedJoins | None = None
        observe(metrics.OPEN_INSTANCES, lambda: len(self.join))

    @property
    def shared(self) -> SharedJoins:
        """With workers, a message's RCPT and END-OF-MESSAGE may reach different ones."""
        if self._shared is None:
            self._shared = SharedJoins(
                lambda: self.engine.channel, self.engine.planner.keys, self.config.join_ttl_s
            )
        return self._shared

    @property
    def exim_margin_s(self) -> float:
        """How long before Exim's timeout a request is no longer decided (see ANSWER_MARGIN_S)."""
        return self.engine.budget_s + ANSWER_MARGIN_S

    @property
    def max_connections(self) -> int:
        return -(-self.config.max_connections // self.workers)

    def apply(self, config: PolicydConfig) -> list[str]:
        """Adopt a reloaded config's settings that can change live; return the names of
        those that need a restart (sockets and the metrics listener stay as they are)."""
        restart = restart_settings(self.config, config)
        if config.max_concurrent_decisions != self.config.max_concurrent_decisions:
            # decisions in flight keep the old semaphore; new ones take the new limit
            self.decisions = asyncio.Semaphore(config.max_concurrent_decisions)
        join = self.join
        join.max_instances, join.ttl_s, join.max_bytes = (
            config.join_max_instances,
            float(config.join_ttl_s),
            config.join_max_bytes,
        )
        self._shared = None  # made again with the new join_ttl_s
        # the rest (idle_timeout_s, max_connections, ...) is read from self.config as needed
        self.config = config.model_copy(update={name: getattr(self.config, name) for name in restart})
        return restart

    async def start(self) -> None:
        await self.serve(bind_listeners(self.config))
        log.info("policy service listening on %s", ", ".join(self.addresses))

    async def serve(self, socks: list[socket.socket]) -> None:
        """Accept on these listening sockets (bound here, passed by systemd, or handed
        over by the daemon this one replaces: policyd/handover.py)."""
        loop = asyncio.get_running_loop()
        try:
            for sock in socks:
                sock.setblocking(False)
                make = loop.create_unix_server if sock.family == socket.AF_UNIX else loop.create_server
                self.servers.append(await make(self.connection_protocol, sock=sock, backlog=LISTEN_BACKLOG))
        except BaseException:
            await self.close()
            for sock in socks:
                sock.close()  # those no server took yet (closing twice is harmless)
            raise
        if self._flusher is None:
            self._flush_notes()

    def adopt(self, control: socket.socket, orphaned: Callable[[], None]) -> None:
        """Serve the connections a supervisor passes over ``control`` instead of
        listening; ``orphaned`` is called when the supervisor is gone."""
        self.link = WorkerLink(control, self.connection_protocol, self.connection_gone, orphaned)
        log.info("policy worker serving the connections its supervisor passes")
        self._flush_notes()

    def alive(self) -> None:
        if self.link is not None:
            self.link.tell(WORKER_ALIVE)

    def connection_gone(self) -> None:
        """A worker tells its supervisor, which passes the next connection to the least busy."""
        if self.link is not None:
            self.link.tell(WORKER_CLOSED)

    def _flush_notes(self) -> None:
        self.notes.flush()
        self._flusher = asyncio.get_running_loop().call_later(self.notes.interval_s, self._flush_notes)

    @property
    def addresses(self) -> list[str]:
        return [address_of(sock) for server in self.servers for sock in server.sockets]  # type: ignore[attr-defined]

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self.notes.flush(everything=True)
        for server in self.servers:
            server.close()
        await self.drain()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def drain(self, grace_s: float = DRAIN_S) -> None:
        """With the listeners closed: answer what the open connections already sent, and
        close each as soon as it has nothing unanswered. A connection accepted just
        before a stop, its request not read yet, is answered rather than reset. Postfix
        reconnects the idle ones to the next process after its retry delay (1 s): a
        handover (policyd/handover.py) passes them on instead."""

        def close_settled(conn: PolicyConnection) -> None:
            if conn.settled():
                conn.close()

        await self.let_go_of_connections(close_settled, grace_s, 0.01)
        for conn in list(self.open_connections):
            conn.close()

    async def let_go_of_connections(
        self, step: Callable[[PolicyConnection], None], grace_s: float, poll_s: float
    ) -> None:
        """With the listeners closed: ``step`` each open connection every ``poll_s`` until
        none is left or ``grace_s`` has passed (it closes one, or hands it over, once it
        can: ``drain``, policyd/handover.py)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + grace_s
        # at least a moment: connections accepted just before the close are still being
        # set up (asyncio makes their transports in tasks of their own)
        while (self.open_connections or loop.time() < started + 0.1) and loop.time() < deadline:
            for conn in list(self.open_connections):
                step(conn)
            await asyncio.sleep(poll_s)

    def connection_protocol(self) -> asyncio.Protocol:
        """A new connection's protocol, for asyncio: a PolicyConnection, which has the
        methods of an ``asyncio.Protocol`` without inheriting it (policyd/transport.py)."""
        return cast(asyncio.Protocol, PolicyConnection(self))

    def answer_now(self, request: PolicyRequest, client: Client = Client()) -> str | Later:  # noqa: B008
        """The action for a request when it needs no waiting (most of them), else the
        message's Pending draw for ``answer_later``. ``client``: whether the client
        still waits (see ``session.abandoned``)."""
        if request.get(ATTRIBUTE) != MARKER:
            self._stale(request)
        shared = self.shared.shareable if self.workers > 1 else None
        outcome = handle(request, self.join, self.classes, self.notes, shared)
        if isinstance(outcome, ShareRecipient):
            _BY_STAGE["rcpt"].inc()
            return replace(outcome, action=self._rcpt_action(request))
        if isinstance(outcome, Immediate):
            state = request.get("protocol_state", "").lower()
            _BY_STAGE[state if state in ("rcpt", "connect", "data") else "other"].inc()
            if outcome.note:
                self.notes.info("odd request", "answering DUNNO: %s", outcome.note)
            return self._rcpt_action(request) if state == "rcpt" else outcome.action
        _BY_STAGE["end_of_message"].inc()
        if self._abandoned(request, client, self.exim_margin_s):
            return DUNNO
        if isinstance(outcome, Incomplete):
            return outcome
        if shared is not None and shared(instance := request.get("instance", "")):
            self.shared.drop(instance)
        waited = self.still_waited(request, client, checked_at=self.host_clock.monotonic())
        result = self.engine.decide_now(outcome, waited=waited)
        if isinstance(result, Pending):
            return Drawn(request, result)
        return self._action(outcome, result)

    async def answer_later(self, later: Later, client: Client = Client()) -> str:  # noqa: B008
        """The action for a request ``answer_now`` could not answer at once: a message's
        same draw, by Redis; a RCPT written to the shared join; a message whose other
        recipients are read from the shared join first. A route decided after its client
        stopped waiting is given back, and the answer is DUNNO (``still_waited``)."""
        if isinstance(later, ShareRecipient):
            await self._sharing(self.shared.add(later.instance, later.recipient))
            return later.action
        if isinstance(later, Incomplete):
            more = await self._sharing(self.shared.take(later.request.get("instance", "")))
            # the shared join holds every RCPT of the message, this worker's included
            collected = later.collected
            if more is not None and len(more) > len(collected):
                metrics.SHARED_JOIN_READS.inc()
                collected = more
            facts = facts_of(later.request, collected, self.classes, self.notes)
            waited = self.still_waited(later.request, client)
            async with self.decisions:
                decision = await self.engine.decide(facts, waited=waited)
            return self._action(facts, decision)
        waited = self.still_waited(later.request, client)
        async with self.decisions:
            decision = await self.engine.settle_pending(later.pending, waited)
        return self._action(later.pending.facts, decision)

    def _rcpt_action(self, request: PolicyRequest) -> str:
        """DUNNO; HOLD when the sender's tenant is held. Postfix keeps the message in its
        hold queue, with the route the END-OF-MESSAGE answer gives it, until released."""
        tenant = self._held(request.get("sender", ""))
        return DUNNO if tenant is None else f"HOLD tenant {tenant} is held by smtp-balancer"

    def _exim_hold(self, sender: str) -> str:
        """Exim asks once, at DATA: a held tenant's answer keeps its route and says HOLD
        after it, and the rendered ACL freezes the message (``control = freeze``)."""
        tenant = self._held(sender)
        return "" if tenant is None else f" {EXIM_HOLD} {tenant}"

    def _held(self, sender: str) -> str | None:
        """The sender's tenant when it is held (the message counted as held), else None."""
        tenant = self.holds.of(sender)
        if tenant is not None:
            metrics.HELD.labels(tenant).inc()
        return tenant

    async def watch_holds(self) -> None:
        """Keep the tenant holds fresh (HoldReader), on the engine's current channel."""
        await self.holds.keep_fresh(lambda: self.engine.channel, KeySchema(self.engine.config.redis.prefix))

    def _stale(self, request: PolicyRequest) -> None:
        """A request from MTA files an older release rendered: counted, and said (at
        most once a minute) with what to do about it."""
        mta = "exim" if from_readsocket(request) else "postfix"
        generation = generation_of(request.get(ATTRIBUTE))
        if generation >= GENERATION:
            return  # a newer one: files rendered by a release after this daemon's
        metrics.STALE_CONFIG.labels(mta, str(generation)).inc()
        self.notes.warning(
            f"stale {mta} config",
            "this request comes from %s files rendered by an older release (generation %d, this"
            " daemon expects %d): run `smtp-balancer render %s` again and apply the files"
            " (docs/getting-started.md: Upgrading)",
            mta.capitalize(),
            generation,
            GENERATION,
            mta,
        )

    def still_waited(
        self, request: PolicyRequest, client: Client, checked_at: float | None = None
    ) -> StillWaited:
        """What the engine asks once a decision is made: why the client gave up meanwhile
        ("" while it waits). Only the answer's own margin is left by then. ``checked_at``:
        when the request was last found waited for (monotonic); within RECHECK_S of it
        the answer is the same without asking again (a system call, for Postfix)."""

        def why() -> str:
            if checked_at is not None and self.host_clock.monotonic() - checked_at < RECHECK_S:
                return ""
            return self._abandoned(request, client, ANSWER_MARGIN_S, decided=True)

        return why

    def _abandoned(
        self, request: PolicyRequest, client: Client, margin_s: float, decided: bool = False
    ) -> str:
        """``session.abandoned``, counted and logged when the client no longer waits;
        ``decided``: asked again once the route was chosen (see ``still_waited``)."""
        # real time, not the engine's clock: Exim's sent_at is the host's (only Exim's
        # request is timed by it: a Postfix one skips the clock's call through Python)
        why = abandoned(
            request,
            self.host_clock.wall() if "sent_at" in request else 0.0,
            self.exim_timeout_s,
            self.config.postfix_timeout_s,
            client,
            margin_s,
        )
        if why:
            metrics.ABANDONED.labels("exim" if "sent_at" in request else "postfix").inc()
            queue_id = request.get("queue_id") or "-"
            if decided:
                self.notes.warning(
                    "abandoned request", "not routing queue id %s, decided too late: %s", queue_id, why
                )
            else:
                self.notes.warning("abandoned request", "not deciding for queue id %s: %s", queue_id, why)
        return why

    async def _sharing(self, step: Awaitable[T]) -> T | None:
        """A shared-join step within the decision budget; None when Redis cannot do it
        (the message is then decided with the recipients this worker saw)."""
        try:
            async with asyncio.timeout(self.engine.budget_s):
                return await step
        except (TimeoutError, RedisError, OSError) as exc:
            metrics.SHARED_JOIN_FAILURES.inc()
            self.notes.warning("shared join", "recipients not shared through Redis: %s", exc)
            return None

    def _action(self, facts: Facts, decision: Decision) -> str:
        action = action_for(decision)
        if facts.per_recipient and action != DEFER_ACTION:
            action += self._exim_hold(facts.sender)
        if facts.message_class is None:
            log_decision("policyd", facts, decision, action=action)
        else:  # Exim, classified from the headers its ACL sent
            log_decision("policyd", facts, decision, action=action, message_class=facts.message_class)
        return action
