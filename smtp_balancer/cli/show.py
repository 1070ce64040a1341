"""Commands that look: check, explain, status (and --watch), audit."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

import redis

from smtp_balancer.cli.common import admin_of, config_of, selected, status_of
from smtp_balancer.cli.report import (
    AUDIT_SCAN,
    Shown,
    describe_entry,
    explain_report,
    last_changes,
    left_out,
    printable,
    short_entry,
    status_json,
    status_report,
    table,
)
from smtp_balancer.clock import Clock, utc_now
from smtp_balancer.config import BalancerConfig
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.providers import domain_of
from smtp_balancer.decision.tenants import OTHER, TenantTable
from smtp_balancer.durations import parse_duration
from smtp_balancer.engine import Engine
from smtp_balancer.engine.plumbing import (
    foreign_endpoints,
    host_ipv6_addresses,
    local_addresses,
    this_host,
    unplumbed,
)
from smtp_balancer.state.admin import StateAdmin
from smtp_balancer.state.audit import AuditEntry
from smtp_balancer.state.client import sync_client
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.outcomes import minute_outcomes
from smtp_balancer.state.reputation import HeldRecord, ReputationStore
from smtp_balancer.state.tenant_holds import TenantHolds


def cmd_check(args: argparse.Namespace) -> int:
    config = config_of(args)
    print(
        f"{args.config}: OK ({len(config.endpoints)} endpoints, {len(config.pools)} pools, "
        f"{len(config.rules)} rules)"
    )
    for warning in dual_stack_warnings(config, host_ipv6_addresses()):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def dual_stack_warnings(config: BalancerConfig, host_ipv6: list[str]) -> list[str]:
    """On a host with IPv6, each endpoint with an IPv4 address only: it is rendered to send
    over IPv4 only, so it never reaches a destination that has only AAAA records."""
    if not host_ipv6:
        return []
    return [
        f"endpoints.{name}: this host has IPv6 ({host_ipv6[0]}) and {name} has an IPv4 address"
        f" only: it sends over IPv4 alone; give it bind_address6 to send over IPv6 too"
        for name, ep in config.endpoints.items()
        if ep.families == (4,)
    ]


def facts_from_args(args: argparse.Namespace) -> Facts:
    return Facts(
        sender=args.sender,
        recipients=tuple(args.rcpt),
        sasl_username=args.sasl_username,
        client_address=args.client,
        size=args.size,
        message_class=args.message_class,
        # an experiment draws a message's arm from its queue id, a dry run's from its envelope
        queue_id=args.queue_id,
    )


def cmd_explain(args: argparse.Namespace) -> int:
    config = config_of(args)
    facts = facts_from_args(args)

    async def run() -> str:
        engine = Engine(config, args.clock, host=args.host)
        try:
            if config.decision.bind_check_s and args.host is None:
                engine.plumbing.run_once()  # as this host's deciders see it; not for another host
            # the live state the planner reads (running experiments, managed warm-up
            # steps), as a decider's mirror has it; without Redis the dry run shows the
            # degraded decision anyway
            with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
                await engine.mirror.load()
            # the sender's tenant's move, as the deciders apply it
            tenant, held, moved = tenant_guard(config, facts.sender)
            engine.move_tenants({tenant: moved[0]} if moved else {})
            decision = await engine.decide(facts, commit=False, explain=True)
            providers = engine.planner.providers.for_domains(domain_of(r) for r in facts.recipients)
        finally:
            await engine.aclose()
        return explain_report(
            facts,
            decision,
            engine.plumbing.current,
            engine.foreign,
            engine.host,
            providers,
            reputation_in_force(config, args.clock),
            f"{tenant}: {held}" if held else "",
            f"{tenant} to pool {moved[0]} {moved[1]}" if moved else "",
        )

    print(asyncio.run(run()))
    return 0


def reputation_in_force(config: BalancerConfig, clock: Clock) -> list[HeldRecord]:
    """The imported reputation records that may still act; none when Redis cannot say
    (explain's decision says it was made without Redis then)."""
    store = ReputationStore(sync_client(config.redis), KeySchema(config.redis.prefix), 1)
    try:
        return store.in_force(utc_now(clock).date(), config.reputation.max_age_days)
    except (redis.RedisError, OSError):
        return []


def tenant_guard(config: BalancerConfig, sender: str) -> tuple[str, str, tuple[str, str] | None]:
    """The sender's tenant, why it is held ("" when it is not), and its move (pool,
    why) or None; nothing when Redis cannot say."""
    tenant = TenantTable(config.tenants).of(sender)
    if tenant == OTHER:
        return tenant, "", None
    try:
        held, moved = TenantHolds(sync_client(config.redis), KeySchema(config.redis.prefix)).guard(tenant)
    except (redis.RedisError, OSError):
        return tenant, "", None
    return tenant, held or "", moved


def status_filter(args: argparse.Namespace, admin: StateAdmin) -> Shown:
    """`status --pool/--endpoint/--host/--tag/--provider`: what to show (all of them together)."""
    config = admin.config
    endpoints: set[str] | None = None
    if args.endpoint is not None:
        admin.check_endpoint(args.endpoint)
        endpoints = {args.endpoint}
    if args.pool or args.host or args.tag:
        chosen = argparse.Namespace(**{**vars(args), "endpoint": None, "all": False})
        endpoints = set(selected(chosen, config)) & (endpoints or set(config.endpoints))
    if args.provider is not None:
        admin.check_provider(args.provider)
    pools = frozenset({args.pool}) if args.pool else None
    return Shown(pools, None if endpoints is None else frozenset(endpoints), args.provider)


def left_out_here(config: BalancerConfig, host: str | None = None) -> dict[str, str]:
    """The endpoints a host's deciders leave out, as ``explain`` finds them: this host's
    (its bind addresses checked here), or, with ``host``, that fleet host's (its own
    addresses cannot be checked from here, as ``explain --host`` does not either)."""
    check_here = host is None and bool(config.decision.bind_check_s)
    host = host or this_host()
    missing = unplumbed(local_addresses(config)) if check_here else {}
    return left_out(missing, foreign_endpoints(config, host), host)


def cmd_status(args: argparse.Namespace) -> int:
    admin = admin_of(args)
    shown = status_filter(args, admin)
    if args.json:
        snapshot = status_of(admin).snapshot()
        here = left_out_here(admin.config, args.host)
        print(json.dumps(status_json(snapshot, _changes(admin, shown), here), indent=2))
        return 0
    if args.watch is not None:
        from smtp_balancer.cli.watch import rates_section, watch
        from smtp_balancer.state.keys import minute_bucket

        every_s = parse_duration(args.watch, unit_required=True)

        def screen() -> str:
            minute = minute_bucket(args.clock.wall())
            rows = minute_outcomes(
                admin.r, admin.keys, minute, set(shown.endpoints or admin.config.endpoints)
            )
            rows = [r for r in rows if shown.pair(r.endpoint, r.provider)]
            text = _status_text(admin, shown, args.clock.wall(), args.host)
            return text + "\n" + rates_section(rows, minute)

        return watch(screen, every_s)
    print(_status_text(admin, shown, args.clock.wall(), args.host))
    return 0


def _changes(admin: StateAdmin, shown: Shown) -> dict[str, AuditEntry]:
    changes = last_changes(admin.audit.read(limit=AUDIT_SCAN), set(admin.config.endpoints))
    return {ep: e for ep, e in changes.items() if shown.endpoint(ep)}


def _status_text(admin: StateAdmin, shown: Shown, now: float, host: str | None = None) -> str:
    out = [status_report(status_of(admin).snapshot(), shown, left_out_here(admin.config, host))]
    if changes := _changes(admin, shown):
        out.append("\nlast change per endpoint (smtp-balancer audit shows them all):")
        out += table([[ep, short_entry(e, now)] for ep, e in sorted(changes.items())])
    return "\n".join(out)


def cmd_audit(args: argparse.Namespace) -> int:
    since = None if args.since is None else args.clock.wall() - parse_duration(args.since, unit_required=True)
    entries = admin_of(args).audit.read(since, args.limit)
    if args.json:
        print(json.dumps([e.as_json() for e in entries], indent=2))
        return 0
    if not entries:
        print("no changes recorded" + (f" in the last {args.since}" if args.since else ""))
    for e in entries:
        print(printable(describe_entry(e, args.clock.wall())))
    return 0
