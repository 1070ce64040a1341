"""One sweep of the deferred queue: read, plan, decide, pin, requeue, account.

Order matters, so that a crash at any point loses nothing and moves nothing twice:
1. decide each moving recipient's new route (select.lua counts it there);
2. write the pins (the table answers them once the message has no FILTER);
3. ``postsuper -r`` the messages, deferred queue only;
4. give the old route back the units of the requeued recipients (same UTC day
   and hour only: an older unit is in a counter no cap reads any more).
A crash between 1 and 3 leaves the message where it was, with its new route's
units counted: a cap can end a few units short, never over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.classes import MessageClasses
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.plan import route_for
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.engine import Engine
from smtp_balancer.engine.plumbing import local_addresses, unplumbed
from smtp_balancer.feedback.responses import builtin_rules
from smtp_balancer.observe.ratelimit import LogLimiter
from smtp_balancer.render.postfix import table_map
from smtp_balancer.requeue import metrics
from smtp_balancer.requeue.plan import (
    AutomaticRules,
    EndpointState,
    Move,
    bound_counts,
    endpoint_state,
    plan_moves,
)
from smtp_balancer.requeue.postfix_queue import PostfixQueue
from smtp_balancer.requeue.queuefile import QueuedMessage, QueueFileError, parse_queue_file
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.pins import Pin, PinStore, counter_deltas, given_back

log = logging.getLogger("smtp_balancer.requeue")


@dataclass
class SweepResult:
    deferred: int = 0
    bound: dict[str, int] = field(default_factory=dict)
    planned: int = 0
    moved: list[tuple[str, str, str, str]] = field(default_factory=list)  # id, from, to, reason
    skipped: int = 0


def reason_kind(reason: str) -> str:
    return reason.partition(":")[0].split()[0] if reason else "unknown"


class Sweeper:
    def __init__(
        self,
        config: BalancerConfig,
        engine: Engine,
        client: redis.Redis,
        queue: PostfixQueue,
        instance: str,
        clock: Clock = SYSTEM,
    ) -> None:
        self.config = config
        self.engine = engine
        self.queue = queue
        self.instance = instance
        self.clock = clock
        self.keys = KeySchema(config.redis.prefix)
        self.store = PinStore(client, self.keys)
        self.providers = ProviderTable.from_config(config)
        self.rules = AutomaticRules.from_config(
            config.feedback, builtin_rules(), config.requeue.health_quarantines
        )
        self.targets = {
            name: route_for(name, ep.nexthop).filter_target for name, ep in config.endpoints.items()
        }
        self.notes = LogLimiter(log)
        self.table = table_map(config)
        self.classes = MessageClasses.from_config(config.milter)
        self._parsed: dict[str, tuple[tuple[int, int, int], QueuedMessage]] = {}

    async def wired(self) -> bool:
        """Whether moved mail would reach its new route (requeue/wiring.py); when it would
        not, say why (rate-limited) and move nothing."""
        problems = await asyncio.to_thread(self.queue.wiring, self.table)
        metrics.WIRED.set(0 if problems else 1)
        for problem in problems:
            self.notes.emit(logging.ERROR, "wiring", "refusing to move mail: %s", problem)
        return not problems

    # -- reading ----------------------------------------------------------------------
    def read_deferred(self) -> list[QueuedMessage]:
        """Every deferred message; a file unchanged since the last sweep is not read again."""
        messages = []
        seen: dict[str, tuple[tuple[int, int, int], QueuedMessage]] = {}
        for queue_id, path, stamp in self.queue.deferred():
            cached = self._parsed.get(queue_id)
            if cached is not None and cached[0] == stamp:
                seen[queue_id] = cached
                messages.append(cached[1])
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # delivered or moved meanwhile
            except OSError as exc:
                self.notes.warning("unreadable queue file", "cannot read queue file %s: %s", path, exc)
                metrics.SKIPPED.labels("unreadable").inc()
                continue
            try:
                message = parse_queue_file(queue_id, data)
            except QueueFileError as exc:
                # a file being written or rewritten right now: the next sweep sees it whole
                log.debug("queue file %s skipped: %s", queue_id, exc)
                continue
            seen[queue_id] = (stamp, message)
            messages.append(message)
        self._parsed = seen
        return messages

    def endpoint_states(self, now: float) -> dict[str, EndpointState]:
        records = self.store.endpoints(list(self.config.endpoints))
        plumbed = self.queue.transports()
        # the same check as the deciders' (engine/plumbing.py), when they make it
        missing = unplumbed(local_addresses(self.config)) if self.config.decision.bind_check_s else {}
        return {
            name: endpoint_state(
                r.fields,
                r.suspensions,
                r.requested,
                now,
                plumbed=name in plumbed,
                bind_missing=missing.get(name, ""),
            )
            for name, r in records.items()
        }

    # -- one sweep ----------------------------------------------------------------------
    async def sweep(self, limit: int) -> SweepResult:
        result = SweepResult()
        # a thread: a large queue must not stop the loop (and systemd's watchdog pings)
        messages = await asyncio.to_thread(self.read_deferred)
        result.deferred = len(messages)
        result.bound = bound_counts(messages, self.targets)
        self.publish_counts(result.bound)
        if not result.bound:
            return result  # nothing bound to our routes: no state to read, no postconf to run
        wall = self.clock.wall()
        states = self.endpoint_states(wall)
        moves = plan_moves(messages, self.targets, states, self.providers, self.rules, limit)
        result.planned = len(moves)
        if not moves:
            return result
        if not await self.wired():
            metrics.SKIPPED.labels("postfix_wiring").inc(len(moves))
            result.skipped += len(moves)
            return result
        eligible_pins = await self.existing_pins(moves, states)
        routed: dict[str, list[tuple[str, Pin]]] = {}  # queue id -> (address, pin)
        for move in moves:
            pins = await self.route(move, eligible_pins)
            if pins is None:
                result.skipped += 1
                continue
            routed[move.queue_id] = pins
        self.write_pins(routed)
        try:
            done = await asyncio.to_thread(self.queue.requeue, list(routed))
        finally:
            self.notes.flush()
        by_id = {m.queue_id: m for m in moves}
        for queue_id in sorted(routed):
            if queue_id not in done:
                metrics.SKIPPED.labels("not_deferred").inc()  # went active meanwhile: it stays put
                result.skipped += 1
        for queue_id in sorted(done):
            move = by_id[queue_id]
            self.give_back(move)
            to = sorted({pin.endpoint for _, pin in routed[queue_id] if pin.provider in move.moving})
            for new in to:
                metrics.MOVED.labels(move.endpoint, new, reason_kind(move.reason)).inc()
            log.info(
                "moved queue id %s from %s to %s (%s); its new queue id is logged by pickup as orig_id=%s",
                queue_id,
                move.endpoint,
                ",".join(to),
                move.reason,
                queue_id,
            )
            result.moved.append((queue_id, move.endpoint, ",".join(to), move.reason))
        if done:
            self.queue.kick_pickup()
        log.info(
            "sweep: %d deferred, %d due to move (at most %d a sweep), %d moved, %d left in place",
            result.deferred,
            result.planned,
            limit,
            len(result.moved),
            result.skipped,
        )
        return result

    async def existing_pins(self, moves: list[Move], states: Mapping[str, EndpointState]) -> dict[str, Pin]:
        """Pins of moving recipients from earlier sweeps that still point somewhere
        eligible: another message for the same recipient follows the same pin."""
        addresses = sorted({a for m in moves for group in m.moving.values() for a in group})
        out = {}
        for address, pin in self.store.pins(addresses, self.config.endpoints).items():
            state = states.get(pin.endpoint, EndpointState())
            live = state.admin == "active" and not ({pin.provider, "all"} & set(state.suspensions))
            if live and state.plumbed:
                out[address] = pin
        return out

    async def route(self, move: Move, pinned: dict[str, Pin]) -> list[tuple[str, Pin]] | None:
        """Every pending recipient's pin: a new route for the moving ones, the old one
        for the staying ones. None when some moving group has no route now."""
        message = move.message
        out: list[tuple[str, Pin]] = []
        for provider, addresses in move.moving.items():
            fresh = [a for a in addresses if a not in pinned]
            for address in addresses:
                if address in pinned:
                    old = pinned[address]
                    out.append((address, Pin(old.endpoint, provider, old.units + 1, old.reason)))
                    self.count_on(old.endpoint, provider, 1)
            if not fresh:
                continue
            facts = Facts(
                message_class=self.message_class(message),
                sender=message.sender,
                recipients=tuple(fresh),
                client_address=message.attribute("client_address"),
                sasl_username=message.attribute("sasl_username"),
                queue_id=message.queue_id,
                recipient_count=len(fresh),
            )
            # a move: the message keeps the arm record of its first decision
            decision = await self.engine.decide(facts, record_arm=False)
            if decision.degraded:
                metrics.SKIPPED.labels("degraded").inc()
                self.notes.warning(
                    "degraded",
                    "queue id %s stays on %s: Redis cannot count a new route now",
                    message.queue_id,
                    move.endpoint,
                )
                return None
            if decision.outcome != "route" or decision.endpoint is None or decision.endpoint == move.endpoint:
                if decision.endpoint == move.endpoint:
                    # Redis saw the old route as eligible (unplumbed, or resumed meanwhile):
                    # select.lua counted the units there for a move that does not happen
                    self.count_on(move.endpoint, provider, -len(fresh))
                metrics.SKIPPED.labels("no_route").inc()
                self.notes.warning(
                    "no route",
                    "queue id %s stays on %s: no other eligible route for %s (%s)",
                    message.queue_id,
                    move.endpoint,
                    provider,
                    decision.reason,
                )
                return None
            for address in fresh:
                pin = Pin(decision.endpoint, provider, 1, move.reason)
                pinned[address] = pin
                out.append((address, pin))
        for address in move.staying:
            out.append((address, Pin(move.endpoint, "", 0, "stays: its provider may use this route")))
        return out

    def message_class(self, message: QueuedMessage) -> str | None:
        """The class the first decision saw: the milter's (its route header is in the
        queued copy), or none for mail the policy daemon routed (it sees no headers)."""
        # without the milter nothing strips a client's own copy of the header
        if not self.config.milter.enabled or message.header(self.config.milter.route_header) is None:
            return None
        client = message.attribute("client_address")
        return self.classes.classify(message.headers, client, message.attribute("sasl_username"))[0]

    def count_on(self, endpoint: str, provider: str, units: int) -> None:
        now = datetime.fromtimestamp(self.clock.wall(), UTC)
        self._count(counter_deltas(self.keys, endpoint, provider, units, now))

    def give_back(self, move: Move) -> None:
        # Postfix stamps arrival by the system clock; our counters follow self.clock
        # (the same in production; a test clock shifts both alike)
        wall = self.clock.wall()
        counted_at = move.message.arrival + (wall - time.time())
        units = {provider: len(addresses) for provider, addresses in move.moving.items()}
        self._count(given_back(self.keys, move.endpoint, units, counted_at, wall))

    def _count(self, deltas: list[tuple[str, str]]) -> None:
        self.store.count(deltas)

    def write_pins(self, routed: Mapping[str, list[tuple[str, Pin]]]) -> None:
        pins = [pin for pins in routed.values() for pin in pins]
        self.store.write_pins(pins, self.clock.wall(), self.config.requeue.pin_ttl)

    def publish_counts(self, bound: dict[str, int]) -> None:
        for name in self.config.endpoints:
            metrics.QUEUED.labels(name).set(bound.get(name, 0))
        counts = {name: bound.get(name, 0) for name in self.config.endpoints}
        self.store.publish_queued(self.instance, counts, max(60, 3 * self.config.requeue.interval))
