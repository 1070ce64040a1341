"""select.lua's side of a Draw: its keys and arguments, and its reply as a Decision.

The argument layout is documented at the top of ``state/select.lua``. The static
part (the plan with today's caps) is built and encoded once per pool and day.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smtp_balancer.decision.draw import Draw
from smtp_balancer.decision.facts import Decision, EndpointVerdict
from smtp_balancer.decision.plan import PoolPlan, route_reason
from smtp_balancer.decision.planner import Planner
from smtp_balancer.decision.warmup import Caps


@dataclass(frozen=True)
class StateJunk:
    """A hand-edited Redis value that was ignored."""

    kind: str  # weight | weights | state | until | throttle | adaptive | slow | counter
    key: str
    field: str = ""


class Late(Exception):
    """select.lua ran after the decision's deadline, so it counted nothing."""


class ScriptCodec:
    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self._texts: dict[tuple[str, str, int, int], tuple[PoolPlan, bytes, bytes, dict[str, Caps]]] = {}

    def encode(self, draw: Draw, deadline: float = 0.0) -> tuple[list[bytes], list[str | bytes]]:
        """The keys and arguments of select.lua for this draw. ``deadline``: Redis's
        TIME after which the script must do nothing (0: none)."""
        day, hour = draw.buckets
        header = (
            f"{self.planner.keys.base}: {int(draw.commit)} {int(draw.explain)} {draw.r!r}"
            f" {draw.facts.quota_count} {day} {hour} {draw.wall!r} {deadline!r}"
        )
        anchor, plan_text = self._static_args(draw.rule.pool, draw.plan, draw.caps, day)
        args: list[str | bytes] = [
            header,
            plan_text,
            ",".join(f"{p} {c}" for p, c in draw.provider_counts),
            "/".join(" ".join(repr(u) for u in h) if h else "" for h in draw.hashes),
        ]
        return [anchor], args

    def _static_args(self, pool: str, plan: PoolPlan, caps: dict[str, Caps], day: str) -> tuple[bytes, bytes]:
        """The anchor key and plan text, per pool and day (caps change once a day)."""
        # keyed by the plan object: a draw made before the plans changed (a bind address
        # came or went) is encoded with its own plan, the one its hashes index; and by
        # the caps object, new when a managed warm-up's step changes
        cache_key = (pool, day, id(plan), id(caps))
        cached = self._texts.get(cache_key)
        if cached is not None and cached[0] is plan and cached[3] is caps:
            return cached[1], cached[2]
        if len(self._texts) > 4 * len(self.planner.plans) + 16:
            self._texts.clear()  # yesterday's caps
        stages = []
        for stage in plan.stages:
            names = [ep for ep, _ in stage.members]
            capped = any(caps[ep].day is not None or caps[ep].hour is not None for ep in names)
            by_provider = any(caps[ep].providers for ep in names)
            rated = any(caps[ep].rates for ep in names)
            stages.append(
                [
                    stage.pool,
                    stage.spread,
                    int(stage.ignore_caps),
                    names,
                    [weight for _, weight in stage.members],
                    # no caps in the stage: empty lists, less for select.lua to decode
                    [-1 if caps[ep].day is None else caps[ep].day for ep in names] if capped else [],
                    [-1 if caps[ep].hour is None else caps[ep].hour for ep in names] if capped else [],
                    [_provider_caps(caps[ep]) for ep in names] if by_provider else [],
                    [dict(caps[ep].rates) for ep in names] if rated else [],
                    int(stage.adaptive),
                ]
            )
        anchor = self.planner.keys.pool_weights(plan.stages[0].pool).encode()
        text = json.dumps(stages, separators=(",", ":")).encode()
        self._texts[cache_key] = (plan, anchor, text, caps)
        return anchor, text

    def interpret(self, draw: Draw, reply: Sequence[Any]) -> tuple[Decision, list[StateJunk]]:
        """The Decision for a select.lua reply, and the junk the script stepped over."""
        status, stage_no, endpoint, weight, junk_raw, verdicts_raw = reply
        if _text(status) == "late":
            raise Late("select.lua ran after its deadline and did nothing")
        junk = [_junk(_text(j)) for j in junk_raw]
        verdicts = tuple(_verdict(draw.plan, _text(v)) for v in verdicts_raw)
        planner = self.planner
        if _text(status) != "ok":
            return planner.exhausted(draw, verdicts=verdicts), junk
        index = int(stage_no) - 1
        stage = draw.plan.stages[index]
        reason = route_reason(int(weight), stage, index, draw.plan.stages[0].pool)
        return planner.routed(draw, stage, _text(endpoint), reason, verdicts=verdicts), junk


def _provider_caps(caps: Caps) -> dict[str, list[int]]:
    return {p: [day, -1 if hour is None else hour] for p, (day, hour) in caps.providers.items()}


def _text(value: object) -> str:
    # a hand-edited reason may hold any bytes: select.lua passes them through as they are
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


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
