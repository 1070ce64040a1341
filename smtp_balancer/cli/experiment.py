"""``smtp-balancer experiment list|start|stop|report NAME``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import redis

from smtp_balancer.config.experiments import ExperimentConfig
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.state.admin import AdminError
from smtp_balancer.state.audit import AuditTrail
from smtp_balancer.state.experiments import ExperimentStore
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.values import text_of


def _experiment(config: BalancerConfig, name: str | None) -> ExperimentConfig:
    known = {x.name: x for x in config.experiments}
    if name not in known:
        listed = ", ".join(sorted(known)) or "none configured"
        raise AdminError(f"unknown experiment {name!r} (experiments: {listed})")
    return known[name]


def _when(raw: object) -> str:
    text = text_of(raw)
    if not text or not text.replace(".", "", 1).isdigit():
        return "-"
    return datetime.fromtimestamp(float(text), UTC).strftime("%Y-%m-%d %H:%M UTC")


def run(args: argparse.Namespace, config: BalancerConfig, client: redis.Redis) -> int:
    keys = KeySchema(config.redis.prefix)
    store = ExperimentStore(client, keys)
    now = args.clock.wall()
    if args.action == "list":
        if not config.experiments:
            print("no experiments configured (experiments: in the YAML)")
        for x in config.experiments:
            state = store.record(x.name)
            arms = ", ".join(f"{a.name} {a.split}% -> {a.strategy}" for a in x.arms)
            running = state.get("state")
            reset = f", counting since {_when(state['since'])}" if "since" in state else ""
            print(
                f"{x.name}: {running or 'never started'} (started {_when(state.get('started'))}, "
                f"stopped {_when(state.get('stopped'))}{reset}); {x.covers}, by {x.by}; {arms}"
            )
        return 0
    x = _experiment(config, args.name)
    audit = AuditTrail(client, keys, args.clock)
    arm_names = [a.name for a in x.arms]
    if args.action in ("start", "stop"):
        before = store.record(x.name).get("state") or "never started"
    if args.action == "start":
        # with --reset, messages decided before now keep their arm records: their late
        # outcomes and complaints belong to the earlier run, and the feedback skips them
        store.start(x.name, arm_names, now, args.reset)
        audit.record("experiment start", x.name, before, "running", "counts reset" if args.reset else "")
        print(f"experiment {x.name} running: {x.covers} are split between its arms")
        return 0
    if args.action == "stop":
        store.stop(x.name, now)
        audit.record("experiment stop", x.name, before, "stopped")
        print(f"experiment {x.name} stopped: {x.covers} are routed by the rules again")
        return 0
    from smtp_balancer.experiments.report import ArmStats, render

    state, raws = store.stats(x.name, arm_names)
    arms = [ArmStats.of(a.name, a.strategy, a.split, raw) for a, raw in zip(x.arms, raws, strict=True)]
    print(render(x.name, state or "never started", arms))
    return 0
