"""The decision flow: a Draw settled by the mirror, by select.lua, or degraded.

Each message is prepared once (``Planner.prepare``: the rule and one uniform
value). ``decide_now`` settles it from the tracked mirror and this process's
quota leases when it can, at once and in the caller's thread. When it cannot
(the mirror is not fresh, a lease falls short, an MX lookup is due), it hands
back a ``Pending`` holding that same Draw, and ``settle`` sends it to select.lua
in one EVALSHA; when Redis cannot answer within the budget, the same Draw is
decided degraded. So a message draws exactly once, whichever path settles it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from redis.exceptions import RedisError, ResponseError

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.draw import Draw
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.decision.planner import Planner
from smtp_balancer.decision.providers import domain_of
from smtp_balancer.decision.quota import QuotaBook
from smtp_balancer.decision.script import Late, ScriptCodec
from smtp_balancer.decision.shadow import ShadowDecider, agrees
from smtp_balancer.engine.breaker import Breaker
from smtp_balancer.engine.giveback import StillWaited, give_back, unless_gone
from smtp_balancer.engine.health import STALL_AFTER_S, RedisHealth
from smtp_balancer.engine.junk import JunkReporter
from smtp_balancer.engine.leases import LeaseService
from smtp_balancer.engine.mirror import MirrorKeeper
from smtp_balancer.engine.mx import MxProviders
from smtp_balancer.engine.plumbing import PlumbingWatch, foreign_endpoints, local_addresses, this_host
from smtp_balancer.observe import metrics
from smtp_balancer.state import scripts
from smtp_balancer.state.channel import ScriptChannel
from smtp_balancer.state.client import describe
from smtp_balancer.state.live import LiveState

log = logging.getLogger("smtp_balancer.engine")
# read twice a decision: a static, where time.perf_counter is a lookup in the module each time
_perf_counter: Final = time.perf_counter

DEADLINE_SHARE = 0.8  # of the decision budget, for select.lua's deadline
# a decision timed out and Redis has owed a reply this long without sending anything:
# stop asking it for retry_after (a busy host delays replies by less; each late one is
# given back)
SILENT_BREAK_S = 1.0
SILENT_RESET_S = STALL_AFTER_S  # this long: the connection is dead (a blackholed Redis)


@dataclass(slots=True)
class Pending:
    """A message ``decide_now`` could not settle: its facts and, once made, its Draw."""

    facts: Facts
    draw: Draw | None


class Engine:
    def __init__(self, config: BalancerConfig, clock: Clock = SYSTEM, host: str | None = None) -> None:
        """``host``: the fleet host to decide for (default: this one, plumbing.this_host)."""
        self.clock = clock
        self.host = host or this_host()
        self.channel = ScriptChannel(config.redis)
        self.junk = JunkReporter(clock)
        self.health = RedisHealth(lambda: self.channel, describe(config.redis))
        # tenant -> pool (`tenant move`), from the daemon's HoldReader; kept across reloads
        self.tenant_moves: dict[str, str] = {}
        self._build(config)

    def move_tenants(self, moves: dict[str, str]) -> None:
        """The tenants whose new mail goes to one pool (tenant -> pool), as last read."""
        self.tenant_moves = moves

    def _build(self, config: BalancerConfig) -> None:
        """Everything that derives from the config: a SIGHUP builds it all again."""
        self.config = config
        self.planner = Planner(config, clock=self.clock)
        self.codec = ScriptCodec(self.planner)
        self.mx = MxProviders(config.mx_lookup, self.planner.providers) if config.mx_lookup.enabled else None
        if self.mx is not None:
            self.planner.providers.learned = self.mx.cached
        self.budget_s = config.decision.budget_ms / 1000
        self.breaker = Breaker(config.decision.retry_after_ms / 1000, self.clock)
        self.mirror = MirrorKeeper(config, self.junk, self.clock)
        mirror = self.mirror
        self.planner.warmup_steps = lambda: mirror.live.warmup if mirror.live is not None else None
        self.planner.running = lambda: mirror.live.running if mirror.live is not None else ()
        self.planner.tenant_pools = lambda: self.tenant_moves
        self.book = QuotaBook(self.planner.keys, self.clock)
        metrics.observe(metrics.QUOTA_LEASED, self.book.leased)
        self.leases = LeaseService(
            self.book, self.channel, self.breaker, self.junk, config.redis.admin_timeout_ms / 1000
        )
        self.health.where = describe(config.redis)  # where Redis is, for every log line
        # another host's endpoints are never this host's to use; the rest are if their
        # addresses are here (the bind check)
        self.foreign = foreign_endpoints(config, self.host)
        foreign, planner = self.foreign, self.planner
        addresses = {n: a for n, a in local_addresses(config).items() if n not in foreign}
        self.plumbing = PlumbingWatch(
            addresses, config.decision.bind_check_s, lambda found: planner.set_unplumbed({*found, *foreign})
        )
        if foreign:
            planner.set_unplumbed(foreign)
        self.shadow = self._shadow_decider(config)

    def _shadow_decider(self, config: BalancerConfig) -> ShadowDecider | None:
        """Shadow mode's decider, seeing the same live state as this engine's planner."""
        candidate = config.shadow_candidate
        if candidate is None:
            if config.shadow is not None:
                metrics.SHADOW_CONFIG_ERRORS.inc()
                log.error("%s; shadow mode is off, live routing goes on", config.shadow_error)
            return None
        shadow = ShadowDecider(candidate, self.clock)
        shadow.planner.warmup_steps = self.planner.warmup_steps
        shadow.planner.running = self.planner.running
        shadow.planner.tenant_pools = self.planner.tenant_pools
        if self.mx is not None:  # providers learned from MX hosts, for the same domains
            shadow.planner.providers.learned = self.mx.cached
        if foreign := foreign_endpoints(candidate, self.host):
            shadow.planner.set_unplumbed(foreign)
        log.info("shadow mode: deciding every message under %s too", config.shadow and config.shadow.config)
        return shadow

    @property
    def live(self) -> LiveState | None:
        """The live state: exact while tracked, else the last known (degraded decisions)."""
        return self.mirror.live

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> bool:
        """Connect, load the script and the mirror before the first message.

        A daemon calls this at start so its first decisions do not pay for the
        connection and SCRIPT LOAD inside their budget. Redis being down is not
        fatal: decisions degrade until it is back.
        """
        self._start_background()
        try:
            async with asyncio.timeout(self.config.redis.admin_timeout_ms / 1000):
                await self.channel.load_script(scripts.SELECT)
                await self.mirror.load()
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning(
                "Redis %s not usable at start (%s); deciding from YAML until it is", self.health.where, exc
            )
            return False
        await self.settle()  # the first decisions can be local
        log.info("Redis %s ready", self.health.where)
        return True

    def _start_background(self) -> None:
        self.health.start()  # in every mode: a stall is logged and measured
        self.plumbing.start()
        # in every mode: it also writes what degraded decisions counted, once Redis is back
        self.leases.start()
        if self.config.decision.local and not self.mirror.started:
            self.mirror.start()

    async def replace_config(self, config: BalancerConfig) -> None:
        """Adopt a new, already validated config (SIGHUP): the whole decider is built
        again (planner, mirror, leases, breaker, MX cache); leases are given back first.
        The Redis connection is kept unless the redis section changed."""
        await self._stop_background()
        if self.mx is not None:
            await self.mx.close()
        old_channel = None
        if config.redis != self.config.redis:
            old_channel, self.channel = self.channel, ScriptChannel(config.redis)
        self._build(config)
        if old_channel is not None:
            await old_channel.close()
        self._start_background()

    async def _stop_background(self) -> None:
        self.mirror.fresh = False
        await self.plumbing.stop()
        await self.leases.stop()
        await self.mirror.stop()

    async def aclose(self) -> None:
        await self.health.stop()
        await self._stop_background()
        if self.mx is not None:
            await self.mx.close()
        await self.channel.close()

    async def settle(self) -> None:
        """Wait until every write Redis took before this call is in the mirror (tests, the CLI)."""
        await self.mirror.settle()

    # -- deciding ------------------------------------------------------------------------
    def decide_now(
        self,
        facts: Facts,
        now: datetime | None = None,
        *,
        record_arm: bool = True,
        waited: StillWaited | None = None,
    ) -> Decision | Pending:
        """Decide at once in the caller's thread when the mirror can; else a Pending for
        ``settle``, carrying the message's one Draw. ``record_arm``: see ``decide``;
        ``waited``: asked once the route is counted, as ``settle_pending`` asks it."""
        if self.mx is not None and not self.mx.knows({domain_of(r) for r in facts.recipients}):
            return Pending(facts, None)  # the Draw waits until the provider is known
        started = _perf_counter()
        try:
            draw = self.planner.prepare(facts, now)
            if isinstance(draw, Decision):
                decision = draw
            else:
                mirror = self.mirror
                live = mirror.live
                local = self.planner.from_mirror(draw, live, self.book) if mirror.fresh and live else None
                if local is None:
                    return Pending(facts, draw)
                decision = local
                if waited is not None:
                    # a process stopped (or starved) between the caller's check and here
                    # resumes to a client that left: what the route counted goes back
                    decision = unless_gone(self.book, draw, decision, waited, rates=False)
        except Exception:  # settle() fails open if this is a bug
            log.exception("decision failed for queue id %s", facts.queue_id or "-")
            return Pending(facts, None)
        metrics.DECISION_SECONDS.observe(_perf_counter() - started)
        metrics.record_decision(decision.pool, decision.endpoint, decision.rule, decision.outcome)
        if record_arm and decision.arm is not None:
            self._note_arm(facts, decision)
        if self.shadow is not None:
            return self._shadowed(facts, draw, decision, now)
        return decision

    def _shadowed(
        self, facts: Facts, draw: Draw | Decision, decision: Decision, now: datetime | None
    ) -> Decision:
        """``decision`` with the candidate's for the same message (shadow mode), counted
        by agreement; a failure of the candidate never touches the live decision."""
        assert self.shadow is not None
        try:
            other = self.shadow.decide(
                facts, draw.r if isinstance(draw, Draw) else None, self.mirror.live, self.book, now
            )
        except Exception:
            log.exception("shadow decision failed for queue id %s", facts.queue_id or "-")
            metrics.SHADOW_FAILURES.inc()
            return decision
        metrics.record_shadow(decision.rule, decision.pool, agrees(decision, other))
        return replace(decision, shadow=other)

    def _note_arm(self, facts: Facts, decision: Decision) -> None:
        assert decision.experiment is not None and decision.arm is not None
        metrics.record_arm(decision.experiment, decision.arm)
        self.book.note_arm(facts.queue_id, decision.experiment, decision.arm, self.clock.wall())

    async def settle_pending(self, pending: Pending, waited: StillWaited | None = None) -> Decision:
        """Settle what ``decide_now`` could not: select.lua, or degraded. Never raises."""
        self._start_background()  # a caller that never called start() still gets a mirror
        return await self._decide(
            pending.facts, pending.draw, commit=True, explain=False, now=None, waited=waited
        )

    async def decide(
        self,
        facts: Facts,
        *,
        commit: bool = True,
        explain: bool = False,
        now: datetime | None = None,
        waited: StillWaited | None = None,
        record_arm: bool = True,
    ) -> Decision:
        """Decide a route; never raises and never waits longer than the budget.
        ``record_arm``: False for a message decided again (requeue's moves): it stays in
        the arm its first decision recorded, with that decision's time, and is counted
        once in the arm's decisions (its queue id gives it the same arm anyway)."""
        if commit and not explain:
            self._start_background()
            result = self.decide_now(facts, now, record_arm=record_arm, waited=waited)
            if isinstance(result, Decision):
                return result
            return await self._decide(
                facts, result.draw, commit=True, explain=False, now=now, waited=waited, record_arm=record_arm
            )
        return await self._decide(facts, None, commit=commit, explain=explain, now=now)

    async def _decide(
        self,
        facts: Facts,
        draw: Draw | None,
        *,
        commit: bool,
        explain: bool,
        now: datetime | None,
        waited: StillWaited | None = None,
        record_arm: bool = True,
    ) -> Decision:
        started = _perf_counter()
        prepared: Draw | Decision | None = draw
        try:
            if prepared is None:
                if self.mx is not None:
                    await self.mx.learn({domain_of(r) for r in facts.recipients})
                prepared = self.planner.prepare(facts, now, commit=commit, explain=explain)
            if isinstance(prepared, Decision):
                decision = prepared  # no rule matched, or mail received here: nothing to count
            else:
                decision = await self._by_script(prepared)
                if waited is not None and prepared.commit and not prepared.explain:
                    decision = unless_gone(self.book, prepared, decision, waited)
        except Exception:  # a bug must not stop mail: fail open to the MTA default
            log.exception("decision failed for queue id %s; answering default", facts.queue_id or "-")
            decision = Decision(outcome="default", reason="degraded (internal error)", degraded=True)
            metrics.DEGRADED.labels("internal_error").inc()
        if commit and not explain and record_arm and decision.arm is not None:
            self._note_arm(facts, decision)
        if commit and not explain and self.shadow is not None:
            decision = self._shadowed(facts, prepared if prepared is not None else decision, decision, now)
        return self._record(decision, commit, started)

    @staticmethod
    def _record(decision: Decision, commit: bool, started: float) -> Decision:
        metrics.DECISION_SECONDS.observe(_perf_counter() - started)
        if commit:
            metrics.record_decision(decision.pool, decision.endpoint, decision.rule, decision.outcome)
        return decision

    async def _by_script(self, draw: Draw) -> Decision:
        if not self.breaker.allows():
            return self._degraded(draw, "circuit_open")
        offset = self.channel.redis_offset_s
        # the script refuses to count once most of the budget is gone: past that, its
        # reply may arrive after we have decided without it (a stranded quota unit)
        deadline = 0.0 if offset is None else time.time() + offset + self.budget_s * DEADLINE_SHARE
        keys, args = self.codec.encode(draw, deadline)
        sent: asyncio.Future[Any] | None = None
        try:
            # asyncio.timeout, not wait_for: no extra Task per decision
            async with asyncio.timeout(self.budget_s):
                sent = await self.channel.send_script(scripts.SELECT, keys, args)
                # shielded: giving up must not drop the reply, it may have counted
                reply = await asyncio.shield(sent)
                if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
                    await self.channel.load_script(scripts.SELECT)  # a restarted Redis
                    sent = await self.channel.send_script(scripts.SELECT, keys, args)
                    reply = await asyncio.shield(sent)
            if isinstance(reply, ResponseError):
                raise reply
        except TimeoutError:
            if sent is not None:
                sent.add_done_callback(lambda late: self._late_reply(draw, late))
            return self._timed_out(draw)
        except ResponseError as exc:
            return self._failed(draw, "script_error", str(exc))
        except (RedisError, OSError) as exc:
            return self._failed(draw, "redis_error", f"{type(exc).__name__}: {exc}")
        try:
            decision, junk = self.codec.interpret(draw, reply)
        except Late:
            # Redis started it late (a queue behind it), counted nothing: this one only
            metrics.SCRIPT_LATE.inc()
            return self._degraded(draw, "timeout")
        self.breaker.succeeded()
        self.mirror.refresh_soon()
        if junk:
            self.junk.report(junk)
        return decision

    def _timed_out(self, draw: Draw) -> Decision:
        """One reply past the budget degrades its own decision only. The connection and
        the other requests on it stay: replies come in order, so theirs still arrive.
        A Redis silent for a while stops being asked (the breaker); one silent for
        longer is taken for gone, and the connection is dropped (a blackholed Redis)."""
        silent = self.channel.silent_s()
        detail = f"no answer within {self.config.decision.budget_ms} ms"
        if silent >= SILENT_RESET_S:
            self.channel.reset(f"Redis silent for {silent:.1f}s")
        if silent >= SILENT_BREAK_S:
            return self._failed(draw, "timeout", f"{detail}, nothing from Redis for {silent:.1f}s")
        return self._degraded(draw, "timeout")

    def _late_reply(self, draw: Draw, sent: asyncio.Future[Any]) -> None:
        """A select.lua reply that came after its decision went on without it: what the
        script counted is given back, so counters hold only what the mail took."""
        if sent.cancelled() or sent.exception() is not None or not draw.commit:
            return  # the connection was lost: whether the script ran cannot be known
        reply = sent.result()
        if isinstance(reply, ResponseError):
            return
        try:
            decision, _ = self.codec.interpret(draw, reply)
        except Late:
            return  # it ran after its deadline and counted nothing
        except Exception:  # a malformed reply: nothing to give back that can be named
            log.exception("late select.lua reply not understood")
            return
        metrics.LATE_REPLIES.inc()
        if decision.outcome == "route" and decision.endpoint is not None:
            give_back(self.book, draw, decision.endpoint)

    def _failed(self, draw: Draw, reason: str, detail: str) -> Decision:
        if self.breaker.allows():
            log.warning(
                "Redis %s unusable (%s: %s); deciding from YAML for %.1fs",
                self.health.where,
                reason,
                detail,
                self.breaker.retry_after_s,
            )
        self.breaker.failed()
        return self._degraded(draw, reason)

    def _degraded(self, draw: Draw, reason: str) -> Decision:
        metrics.DEGRADED.labels(reason).inc()
        decision = self.planner.degraded(draw, reason, self.mirror.live)
        if draw.commit and not draw.explain and decision.outcome == "route" and decision.endpoint:
            # counted once Redis answers again (the lease service keeps what it could not
            # write): a cap sees the mail sent during an outage, and status shows it
            day, hour = draw.buckets
            self.book.take(
                decision.endpoint, draw.facts.quota_count, draw.provider_counts, day, hour, leased=False
            )
        return decision
