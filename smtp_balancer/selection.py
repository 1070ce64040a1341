"""Sans-I/O decision planning.

``Planner.prepare`` turns Facts into one call of ``state/select.lua`` (keys and
arguments) and ``Planner.interpret`` turns its reply into a Decision. The same
weighted choice runs in Python for degraded decisions made without Redis, so
stickiness survives a Redis outage. No sockets here: the engine does the I/O.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from smtp_balancer.choice import Stage, choose
from smtp_balancer.config.model import BalancerConfig, parse_nexthop
from smtp_balancer.facts import Decision, EndpointVerdict, Facts, Route
from smtp_balancer.providers import ProviderSpec, ProviderTable
from smtp_balancer.rules import CompiledRule, RuleSet
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.live import LiveState
from smtp_balancer.warmup import UNCAPPED, Caps, caps_for, day_bucket, hour_bucket, resolve_schedule

Terminal = Literal["default", "defer"]


@dataclass(frozen=True)
class PoolPlan:
    """A pool and its overflow chain, flattened into the stages tried in order."""

    stages: tuple[Stage, ...]
    terminal: Terminal


@dataclass(slots=True)
class ScriptCall:
    """One decision's inputs: for select.lua (``Planner.encode``) or a local choice.

    Not frozen, though never changed: a frozen init costs per field, per message.
    """

    facts: Facts
    rule: CompiledRule
    plan: PoolPlan
    # per stage, the rendezvous hash per member (None when not sticky)
    hashes: tuple[tuple[float, ...] | None, ...]
    caps: dict[str, Caps]
    r: float
    providers: tuple[str, ...]
    provider_counts: tuple[tuple[str, int], ...]  # recipients per provider
    buckets: tuple[str, str]  # day and hour counter buckets
    commit: bool = True
    explain: bool = False


@dataclass(frozen=True)
class StateJunk:
    """A hand-edited Redis value the script ignored."""

    kind: str  # weight | weights | state | counter
    key: str
    field: str = ""


def rendezvous_hash(key: str, endpoint: str) -> float:
    """A uniform value in (0, 1) per (sticky key, endpoint)."""
    digest = hashlib.blake2b(f"{key}\0{endpoint}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


class Planner:
    def __init__(self, config: BalancerConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.keys = KeySchema(config.redis.prefix)
        self.providers = ProviderTable.build(
            {n: ProviderSpec(tuple(p.domains), tuple(p.mx_suffixes)) for n, p in config.providers.items()}
        )
        self.rules = RuleSet(config.rules)
        self.plans = {name: self._plan(name) for name in config.pools}
        self.schedules = {
            name: resolve_schedule(ep.warmup.schedule, config.warmup_schedules)
            for name, ep in config.endpoints.items()
            if ep.warmup
        }
        self.routes = {name: route_for(name, ep.nexthop) for name, ep in config.endpoints.items()}
        self.rng = rng or random.Random()
        self._caps_day: date | None = None
        self._caps: dict[str, Caps] = {}
        self._plan_texts: dict[str, tuple[bytes, bytes]] = {}
        self._bucket_hour: datetime | None = None
        self._now_hour = -1
        self._now_value = datetime.fromtimestamp(0, UTC)
        self._bucket_text = ("", "")

    # -- static plans ------------------------------------------------------
    def _plan(self, pool_name: str) -> PoolPlan:
        stages: list[Stage] = []
        seen: set[str] = set()
        name = pool_name
        while True:
            pool = self.config.pools[name]
            seen.add(name)
            stage = Stage(
                pool=name,
                members=tuple((m.endpoint, m.weight) for m in pool.endpoints),
                stickiness=pool.stickiness,
                spread=pool.spread,
                ignore_caps=False,
            )
            stages.append(stage)
            if pool.overflow.startswith("pool:") and pool.overflow[5:] not in seen:
                name = pool.overflow[5:]
                continue
            if pool.overflow == "ignore_caps":
                stages.append(Stage(stage.pool, stage.members, stage.stickiness, stage.spread, True))
            terminal: Terminal = "defer" if pool.overflow == "defer" else "default"
            return PoolPlan(tuple(stages), terminal)

    def caps_on(self, now: datetime) -> dict[str, Caps]:
        today = now.date()
        if today != self._caps_day:
            caps = {}
            for name, ep in self.config.endpoints.items():
                steps = self.schedules.get(name)
                caps[name] = caps_for(ep.warmup.start, steps, today) if ep.warmup and steps else UNCAPPED
            self._caps, self._caps_day = caps, today
            self._plan_texts.clear()  # caps are part of the plan text
        return self._caps

    # -- per decision --------------------------------------------------------
    def match(self, facts: Facts) -> tuple[CompiledRule | None, dict[str, int]]:
        by_provider = self.providers.for_recipients(facts.recipients)
        return self.rules.match(facts, list(by_provider)), by_provider

    def prepare(
        self,
        facts: Facts,
        now: datetime | None = None,
        *,
        commit: bool = True,
        explain: bool = False,
    ) -> ScriptCall | Decision:
        """The script call for these facts, or a final Decision when no rule matches."""
        now = now or self._now()
        rule, by_provider = self.match(facts)
        if rule is None:
            return Decision(outcome="no_rule", reason="no rule matched")
        plan = self.plans[rule.pool]
        caps = self.caps_on(now)
        r = self.rng.random()
        hashes: list[tuple[float, ...] | None] = []
        for stage in plan.stages:
            key = _sticky_key(facts, stage.stickiness)
            hashes.append(tuple(rendezvous_hash(key, ep) for ep, _ in stage.members) if key else None)
        return ScriptCall(
            facts,
            rule,
            plan,
            tuple(hashes),
            caps,
            r,
            tuple(by_provider),
            tuple(by_provider.items()),
            self._buckets(now),
            commit,
            explain,
        )

    def encode(self, call: ScriptCall) -> tuple[list[bytes], list[str | bytes]]:
        """The keys and arguments of select.lua for this call."""
        day, hour = call.buckets
        header = (
            f"{self.keys.base}: {int(call.commit)} {int(call.explain)} {call.r!r}"
            f" {call.facts.quota_count} {day} {hour}"
        )
        anchor, plan_text = self._static_args(call.rule.pool, call.plan, call.caps)
        args: list[str | bytes] = [
            header,
            plan_text,
            ",".join(f"{p} {c}" for p, c in call.provider_counts),
            "/".join(" ".join(repr(u) for u in h) if h else "" for h in call.hashes),
        ]
        return [anchor], args

    def _now(self) -> datetime:
        """The current hour as a datetime; only day and hour matter to a decision."""
        hour = int(time.time() // 3600)
        if hour != self._now_hour:
            self._now_hour, self._now_value = hour, datetime.fromtimestamp(hour * 3600, UTC)
        return self._now_value

    def _buckets(self, now: datetime) -> tuple[str, str]:
        """Day and hour counter buckets; strftime twice per decision is measurable."""
        if now is self._now_value and now == self._bucket_hour:
            return self._bucket_text  # the usual case: _now()'s cached hour
        hour_start = now.replace(minute=0, second=0, microsecond=0)
        if hour_start != self._bucket_hour:
            self._bucket_hour = hour_start
            self._bucket_text = (day_bucket(now), hour_bucket(now))
        return self._bucket_text

    def _static_args(self, pool: str, plan: PoolPlan, caps: dict[str, Caps]) -> tuple[bytes, bytes]:
        """The anchor key and plan text, built and encoded once per pool and day."""
        cached = self._plan_texts.get(pool)
        if cached is None:
            index: dict[str, int] = {}
            for stage in plan.stages:
                for ep, _ in stage.members:
                    index.setdefault(ep, len(index) + 1)
            parts = [
                ",".join(
                    f"{ep} {-1 if caps[ep].day is None else caps[ep].day}"
                    f" {-1 if caps[ep].hour is None else caps[ep].hour}"
                    for ep in index
                )
            ]
            for stage in plan.stages:
                members = ",".join(f"{index[ep]}:{weight}" for ep, weight in stage.members)
                parts.append(f"{stage.pool} {stage.spread} {int(stage.ignore_caps)} {members}")
            anchor = self.keys.pool_weights(plan.stages[0].pool).encode()
            cached = self._plan_texts[pool] = (anchor, "/".join(parts).encode())
        return cached

    def interpret(self, call: ScriptCall, reply: Sequence[Any]) -> tuple[Decision, list[StateJunk]]:
        """The Decision for a select.lua reply, and the junk the script stepped over."""
        status, stage_no, endpoint, weight, junk_raw, verdicts_raw = reply
        junk = [_junk(_text(j)) for j in junk_raw]
        verdicts = tuple(_verdict(call.plan, _text(v)) for v in verdicts_raw)
        if _text(status) != "ok":
            return self.exhausted(call, verdicts=verdicts), junk
        stage = call.plan.stages[int(stage_no) - 1]
        name = _text(endpoint)
        spill = f", overflow from {call.plan.stages[0].pool}" if int(stage_no) > 1 else ""
        caps_note = " (caps ignored)" if stage.ignore_caps else ""
        reason = f"weight {int(weight)} in pool {stage.pool}{caps_note}{spill}"
        return self.routed(call, stage, name, reason, verdicts=verdicts), junk

    def routed(
        self,
        call: ScriptCall,
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
            rule=call.rule.name,
            degraded=degraded,
            verdicts=verdicts,
        )

    def exhausted(
        self, call: ScriptCall, *, degraded: bool = False, verdicts: tuple[EndpointVerdict, ...] = ()
    ) -> Decision:
        pools = " -> ".join(dict.fromkeys(s.pool for s in call.plan.stages))
        terminal = "default" if degraded else call.plan.terminal
        return Decision(
            outcome=terminal,
            reason=f"no eligible endpoint in {pools}: overflow {terminal}",
            pool=call.plan.stages[0].pool,
            rule=call.rule.name,
            degraded=degraded,
            verdicts=verdicts,
        )

    def local_decision(
        self, call: ScriptCall, why: str, live: LiveState | None = None, now: float | None = None
    ) -> Decision:
        """A degraded decision made without Redis.

        It uses the YAML weights, overlaid with the last-known live state when
        there is one: live weights, drains, quarantines, unexpired suspensions
        and throttles still hold. Warming endpoints are skipped (their quota
        cannot be counted without Redis) unless the overflow policy ignores
        caps. Never defers: mail must not wait on Redis.
        """
        now = time.monotonic() if now is None else now
        source = f"last-known state {now - live.taken_at:.0f}s old" if live else "YAML"
        if self.config.decision.fallback == "default":
            return Decision(
                outcome="default",
                reason=f"degraded ({why}): fallback default",
                pool=call.plan.stages[0].pool,
                rule=call.rule.name,
                degraded=True,
            )
        picked = choose(call.plan.stages, call.hashes, call.r, _Degraded(call, live, now, time.time()))
        if picked is None:
            return self.exhausted(call, degraded=True)
        stage_no, name, weight = picked
        stage = call.plan.stages[stage_no]
        reason = f"degraded ({why}): weight {weight} in pool {stage.pool} from {source}"
        return self.routed(call, stage, name, reason, degraded=True)


class _Degraded:
    """Eligibility without Redis: the last-known state, and no warming endpoints."""

    def __init__(self, call: ScriptCall, live: LiveState | None, now: float, wall_now: float) -> None:
        self.call, self.live, self.now, self.wall_now = call, live, now, wall_now

    def weight(self, pool: str, endpoint: str, yaml_weight: int) -> int:
        return self.live.weight(pool, endpoint, yaml_weight) if self.live else yaml_weight

    def why_not(self, endpoint: str, ignore_caps: bool) -> str | None:
        live = self.live
        if live is not None:
            if live.is_blocked(endpoint, self.wall_now):
                return "blocked"
            if live.suspended(endpoint, self.call.providers, self.now):
                return "suspended"
        if not ignore_caps and self.call.caps[endpoint].capped:
            return "warming: its quota cannot be counted without Redis"
        return None

    def throttle(self, endpoint: str) -> float:
        return self.live.throttle(endpoint, self.call.providers, self.now) if self.live else 1.0


def route_for(name: str, nexthop: str | None) -> Route:
    """The FILTER route of an endpoint: its transport, and ``[host]:port`` for a relay."""
    if not nexthop:
        return Route(name)
    host, port = parse_nexthop(nexthop)
    # brackets: deliver to this host, no MX lookup
    return Route(name, f"[{host}]:{port}")


def _sticky_key(facts: Facts, stickiness: str) -> str:
    if stickiness == "sender":
        return facts.sender.lower()
    if stickiness == "sender_domain":
        return facts.sender_domain
    if stickiness == "sasl_username":
        return facts.sasl_username
    return ""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _junk(raw: str) -> StateJunk:
    kind, _, rest = raw.partition("|")
    key, _, field = rest.partition("|")
    return StateJunk(kind, key, field)


def _verdict(plan: PoolPlan, raw: str) -> EndpointVerdict:
    stage_no, endpoint, weight, eligible, detail = raw.split("|", 4)
    return EndpointVerdict(
        pool=plan.stages[int(stage_no) - 1].pool,
        endpoint=endpoint,
        weight=int(float(weight)),
        eligible=eligible == "1",
        detail=detail,
    )
