"""Static plans built once per config: a pool's overflow chain as stages, and routes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from smtp_balancer.config.base import parse_nexthop
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.choice import Stage
from smtp_balancer.decision.facts import Facts, Route

Terminal = Literal["default", "defer"]


@dataclass(frozen=True)
class PoolPlan:
    """A pool and its overflow chain, flattened into the stages tried in order."""

    stages: tuple[Stage, ...]
    terminal: Terminal


def build_plan(config: BalancerConfig, pool_name: str, absent: frozenset[str] = frozenset()) -> PoolPlan:
    """``absent``: endpoints left out of every stage (not plumbed on this host)."""
    stages: list[Stage] = []
    seen: set[str] = set()
    name = pool_name
    while True:
        pool = config.pools[name]
        seen.add(name)
        stage = Stage(
            pool=name,
            members=tuple((m.endpoint, m.weight) for m in pool.endpoints if m.endpoint not in absent),
            stickiness=pool.stickiness,
            spread=pool.spread,
            ignore_caps=False,
            adaptive=pool.adaptive,
        )
        stages.append(stage)
        if pool.overflow.startswith("pool:") and pool.overflow[5:] not in seen:
            name = pool.overflow[5:]
            continue
        if pool.overflow == "ignore_caps":
            stages.append(
                Stage(stage.pool, stage.members, stage.stickiness, stage.spread, True, stage.adaptive)
            )
        terminal: Terminal = "defer" if pool.overflow == "defer" else "default"
        return PoolPlan(tuple(stages), terminal)


def route_for(name: str, nexthop: str | None) -> Route:
    """The FILTER route of an endpoint: its transport, and ``[host]:port`` for a relay."""
    if not nexthop:
        return Route(name)
    host, port = parse_nexthop(nexthop)
    # brackets: deliver to this host, no MX lookup
    return Route(name, f"[{host}]:{port}")


def rendezvous_hash(key: str, endpoint: str) -> float:
    """A uniform value in (0, 1) per (sticky key, endpoint)."""
    digest = hashlib.blake2b(f"{key}\0{endpoint}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


def sticky_key(facts: Facts, stickiness: str) -> str:
    if stickiness == "sender":
        return facts.sender.lower()
    if stickiness == "sender_domain":
        return facts.sender_domain
    if stickiness == "sasl_username":
        return facts.sasl_username
    return ""


def route_reason(weight: int, stage: Stage, stage_no: int, first_pool: str) -> str:
    """The one reason text of a routed decision, whichever path made it."""
    spill = f", overflow from {first_pool}" if stage_no > 0 else ""
    caps_note = " (caps ignored)" if stage.ignore_caps else ""
    return f"weight {weight} in pool {stage.pool}{caps_note}{spill}"
