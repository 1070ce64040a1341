"""Facts to a Draw, and a Draw to a Decision by the mirror or degraded path, sans I/O.

``prepare`` matches the rule and draws the message's one uniform value.
``from_mirror`` and ``degraded`` settle a Draw in Python with the one choice
(``choice.choose``) and the one eligibility model (``eligibility.py``);
``script.py`` encodes the same Draw for select.lua and reads its reply.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.choice import NeedRedis, Stage, choose
from smtp_balancer.decision.draw import Draw
from smtp_balancer.decision.eligibility import Eligibility
from smtp_balancer.decision.experiments import ExperimentTable
from smtp_balancer.decision.facts import Decision, EndpointVerdict, Facts
from smtp_balancer.decision.inbound import InboundDomains
from smtp_balancer.decision.plan import build_plan, rendezvous_hash, route_for, route_reason, sticky_key
from smtp_balancer.decision.providers import ProviderTable, domain_of
from smtp_balancer.decision.quota import Counters
from smtp_balancer.decision.rules import MessageView, RuleSet
from smtp_balancer.decision.tenants import TenantTable
from smtp_balancer.decision.warmup import CapsTable
from smtp_balancer.state.keys import KeySchema, day_bucket, hour_bucket
from smtp_balancer.state.live import LiveState


class Planner:
    def __init__(
        self, config: BalancerConfig, rng: random.Random | None = None, clock: Clock = SYSTEM
    ) -> None:
        self.config = config
        self.clock = clock
        self.keys = KeySchema(config.redis.prefix)
        self.providers = ProviderTable.from_config(config)
        self.rules = RuleSet(config.rules)
        self.plans = {name: build_plan(config, name) for name in config.pools}
        self.caps = CapsTable(config)
        # managed warm-ups' steps from Redis (the engine points this at its live state)
        self.warmup_steps: Callable[[], Mapping[str, tuple[int, str]] | None] = lambda: None
        self.experiments = ExperimentTable(config.experiments, self.rules.rules)
        # the experiments started in Redis (the engine points this at its live state)
        self.running: Callable[[], Collection[str]] = lambda: ()
        # tenant -> the pool its mail goes to (`tenant move`; the engine points this at the moves read)
        self.tenant_pools: Callable[[], Mapping[str, str]] = dict
        self.tenants = TenantTable(config.tenants)
        self.routes = {name: route_for(name, ep.nexthop) for name, ep in config.endpoints.items()}
        self.inbound = InboundDomains(config.inbound_domains)
        self.rng = rng or random.Random()
        self._hour = -1
        self._hour_value = datetime.fromtimestamp(0, UTC)
        self._bucket_hour: datetime | None = None
        self._bucket_text = ("", "")

    def set_unplumbed(self, endpoints: Iterable[str]) -> None:
        """Leave these endpoints (bind address not on this host, engine/plumbing.py) out of
        every plan, on every path. The script codec caches plan text per plan object, so
        the new plans get new text."""
        absent = frozenset(endpoints)
        self.plans = {name: build_plan(self.config, name, absent) for name in self.config.pools}

    # -- per message ------------------------------------------------------------
    def prepare(
        self, facts: Facts, now: datetime | None = None, *, commit: bool = True, explain: bool = False
    ) -> Draw | Decision:
        """The message's Draw, or a final Decision when no rule matches."""
        now = now or self.now_hour()
        domains = [domain_of(r) for r in facts.recipients]  # derived once per message
        if self.inbound and (inbound := [d for d in domains if d in self.inbound]):
            kept = [(r, d) for r, d in zip(facts.recipients, domains, strict=True) if d not in self.inbound]
            if not facts.per_recipient or not kept:
                return Decision(outcome="inbound", reason=f"{inbound[0]} is received here (inbound_domains)")
            # the MTA routes the inbound recipients itself: the route is the others'
            left = len(facts.recipients) - len(kept)
            count = None if facts.recipient_count is None else max(facts.recipient_count - left, len(kept))
            facts = replace(facts, recipients=tuple(r for r, _ in kept), recipient_count=count)
            domains = [d for _, d in kept]
        by_provider = self.providers.for_domains(domains)
        view = MessageView.of(facts, list(by_provider), domains)
        rule = self.rules.match(view)
        if rule is None:
            return Decision(outcome="no_rule", reason="no rule matched")
        pool, arm = rule.pool, None
        if self.experiments.names and (running := self.running()):
            experiment = self.experiments.covering(rule, view, running)
            if experiment is not None:
                chosen = experiment.assign(facts)
                rule, pool = chosen.route(rule, view)
                arm = (experiment.name, chosen.name)
        moves = self.tenant_pools()
        if moves and (moved := moves.get(self.tenants.of(facts.sender))) in self.plans:
            pool, arm = moved, None  # a moved tenant's mail is in no experiment's arms
        plan = self.plans[pool]
        hashes: list[tuple[float, ...] | None] = []
        for stage in plan.stages:
            key = sticky_key(facts, stage.stickiness)
            hashes.append(tuple(rendezvous_hash(key, ep) for ep, _ in stage.members) if key else None)
        return Draw(
            facts,
            rule,
            plan,
            tuple(hashes),
            self.caps.on(now.date(), self.warmup_steps()),
            self.rng.random(),
            tuple(by_provider),
            tuple(by_provider.items()),
            self._buckets(now),
            self.clock.wall(),
            commit,
            explain,
            arm,
        )

    def now_hour(self) -> datetime:
        """The clock's current hour as a datetime; only day and hour matter to a decision."""
        hour = int(self.clock.wall() // 3600)
        if hour != self._hour:
            self._hour, self._hour_value = hour, datetime.fromtimestamp(hour * 3600, UTC)
        return self._hour_value

    def _buckets(self, now: datetime) -> tuple[str, str]:
        """Day and hour counter buckets; strftime twice per decision is measurable."""
        if now is self._hour_value and now == self._bucket_hour:
            return self._bucket_text  # the usual case: now_hour()'s cached hour
        hour_start = now.replace(minute=0, second=0, microsecond=0)
        if hour_start != self._bucket_hour:
            self._bucket_hour = hour_start
            self._bucket_text = (day_bucket(now), hour_bucket(now))
        return self._bucket_text

    # -- settling a Draw in Python ------------------------------------------------
    def from_mirror(self, draw: Draw, live: LiveState, book: Counters) -> Decision | None:
        """The decision from the exact mirror and this process's leases; None when only
        select.lua can settle this same draw (a lease falls short, or another thread spent it)."""
        clock = self.clock
        try:
            picked = choose(
                draw.plan.stages,
                draw.hashes,
                draw.r,
                Eligibility(draw, live, book, clock.monotonic()),
            )
        except NeedRedis:
            return None
        if picked is None:
            return self.exhausted(draw)
        stage_no, endpoint, weight = picked
        stage = draw.plan.stages[stage_no]
        caps = draw.caps[endpoint]
        leased = not stage.ignore_caps and caps.capped
        day, hour = draw.buckets
        scopes = caps.rate_scopes(draw.providers)
        # a slot spent here whose quota then falls short is not given back: the window
        # counts one message too many (a cap ends early, never over)
        if scopes and not book.rate_counter().take(endpoint, scopes):
            return None
        by_provider = (
            frozenset(p for p, _ in draw.provider_counts if p in caps.providers) if leased else frozenset()
        )
        if not book.take(
            endpoint, draw.facts.quota_count, draw.provider_counts, day, hour, leased, by_provider
        ):
            return None
        return self.routed(
            draw, stage, endpoint, route_reason(weight, stage, stage_no, draw.plan.stages[0].pool)
        )

    def degraded(self, draw: Draw, why: str, live: LiveState | None) -> Decision:
        """A decision made without Redis.

        It uses the YAML weights, overlaid with the last-known live state when
        there is one: live weights, drains, quarantines, unexpired suspensions
        and throttles still hold. Warming endpoints are skipped (their quota
        cannot be counted without Redis) unless the overflow policy ignores
        caps. Never defers: mail must not wait on Redis.
        """
        if self.config.decision.fallback == "default":
            return Decision(
                outcome="default",
                reason=f"degraded ({why}): fallback default",
                pool=draw.plan.stages[0].pool,
                rule=draw.rule.name,
                degraded=True,
                r=draw.r,
            )
        now = self.clock.monotonic()
        source = f"last-known state {now - live.taken_at:.0f}s old" if live else "YAML"
        return self.unleased(draw, Eligibility(draw, live, None, now), (why, source))

    def unleased(
        self, draw: Draw, eligibility: Eligibility, degraded: tuple[str, str] | None = None
    ) -> Decision:
        """The choice under ``eligibility``, which needs no lease: the degraded path
        (``degraded``: why, and the state it used) and shadow mode (decision/shadow.py)."""
        picked = choose(draw.plan.stages, draw.hashes, draw.r, eligibility)
        if picked is None:
            return self.exhausted(draw, degraded=degraded is not None)
        stage_no, name, weight = picked
        stage = draw.plan.stages[stage_no]
        reason = route_reason(weight, stage, stage_no, draw.plan.stages[0].pool)
        if degraded is None:
            return self.routed(draw, stage, name, reason)
        why, source = degraded
        return self.routed(draw, stage, name, f"degraded ({why}): {reason} from {source}", degraded=True)

    # -- decisions ------------------------------------------------------------------
    def routed(
        self,
        draw: Draw,
        stage: Stage,
        endpoint: str,
        reason: str,
        *,
        degraded: bool = False,
        verdicts: tuple[EndpointVerdict, ...] = (),
    ) -> Decision:
        return Decision(
            outcome="route",
            reason=reason,
            route=self.routes[endpoint],
            endpoint=endpoint,
            pool=stage.pool,
            rule=draw.rule.name,
            degraded=degraded,
            verdicts=verdicts,
            experiment=draw.arm[0] if draw.arm else None,
            arm=draw.arm[1] if draw.arm else None,
            r=draw.r,
        )

    def exhausted(
        self, draw: Draw, *, degraded: bool = False, verdicts: tuple[EndpointVerdict, ...] = ()
    ) -> Decision:
        pools = " -> ".join(dict.fromkeys(s.pool for s in draw.plan.stages))
        terminal = "default" if degraded else draw.plan.terminal
        return Decision(
            outcome=terminal,
            reason=f"no eligible endpoint in {pools}: overflow {terminal}",
            pool=draw.plan.stages[0].pool,
            rule=draw.rule.name,
            degraded=degraded,
            verdicts=verdicts,
            experiment=draw.arm[0] if draw.arm else None,
            arm=draw.arm[1] if draw.arm else None,
            r=draw.r,
        )
