"""Commands that change live state: weights, drains, suspensions, factors, quarantines
and warm-up records, and the lists of them."""

from __future__ import annotations

import argparse
import json

from smtp_balancer.cli.common import DRAINED, admin_of, selected, status_of
from smtp_balancer.cli.report import (
    printable,
)
from smtp_balancer.clock import utc_now
from smtp_balancer.durations import format_duration, parse_duration
from smtp_balancer.state.admin import AdminError


def cmd_weight(args: argparse.Namespace) -> int:
    if args.weight is None and not args.reset:
        raise AdminError("give a WEIGHT, or --reset to return to the YAML weight")
    admin_of(args).set_weight(args.pool, args.endpoint, None if args.reset else args.weight)
    what = "YAML weight restored" if args.reset else f"weight {args.weight}"
    print(f"pool {args.pool}, endpoint {args.endpoint}: {what}")
    return 0


REQUEUE_NOTE = "; queued mail moves at the requeue daemon's next sweep (smtp-balancer requeue --once: now)"


def _selection(names: list[str], done: str) -> None:
    if len(names) > 1:
        print(f"{len(names)} endpoints {done}: {', '.join(names)}")


def cmd_drain(args: argparse.Namespace) -> int:
    admin = admin_of(args)
    names = selected(args, admin.config)
    for name in names:
        reason = args.reason
        if reason is None:  # drained again without --reason: the earlier reason stays
            standing = admin.state_of(name)
            reason = (
                standing[1] if standing is not None and standing[0] == "drained" and standing[1] else DRAINED
            )
        admin.set_state(name, "drained", reason, requeue=args.requeue)
        print(f"endpoint {name}: drained ({printable(reason)})")
    _selection(names, "drained")
    if args.requeue:
        print(REQUEUE_NOTE.lstrip("; "))
    return 0


def cmd_undrain(args: argparse.Namespace) -> int:
    admin = admin_of(args)
    names = selected(args, admin.config)
    for name in names:
        admin.set_state(name, "active", args.reason)
        print(f"endpoint {name}: active")
    _selection(names, "active")
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    seconds = parse_duration(args.duration, unit_required=True)
    admin = admin_of(args)
    names = selected(args, admin.config, provider_slot=True)
    provider = args.provider_arg or args.provider
    replaced: dict[str, str] = {}
    for name in names:  # every refusal before any change
        standing = admin.suspension(name, provider)
        if standing is None:
            continue
        left, why = standing
        was = f"{'no expiry' if left < 0 else format_duration(left) + ' left'}, {printable(why)!r}"
        if (left < 0 or left > seconds) and not args.force:
            raise AdminError(
                f"{name} is already suspended for {provider} ({was}): --for {args.duration}"
                " would shorten it; add --force to replace it"
            )
        replaced[name] = f"; replaces the suspension of {was}"
    for name in names:
        admin.suspend(name, provider, seconds, args.reason, requeue=args.requeue)
        print(
            f"endpoint {name}: suspended for {provider} for {format_duration(seconds)}"
            f" ({printable(args.reason)}){replaced.get(name, '')}"
        )
    _selection(names, f"suspended for {provider}")
    if args.requeue:
        print(REQUEUE_NOTE.lstrip("; "))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    admin = admin_of(args)
    names = selected(args, admin.config, provider_slot=True)
    provider = args.provider_arg or args.provider
    scope = f" for {provider}" if provider else ""
    for name in names:
        removed = admin.resume(name, provider)
        print(f"endpoint {name}: {removed} suspension(s){scope} lifted")
    _selection(names, f"resumed{scope}")
    return 0


def cmd_factor(args: argparse.Namespace) -> int:
    """throttle and slow: keep FACTOR of the endpoint's share (throttle) or rate cap (slow)."""
    seconds = parse_duration(args.duration, unit_required=True)
    admin = admin_of(args)
    names = selected(args, admin.config, provider_slot=False)
    admin.check_provider(args.provider)
    for name in names:
        admin.factors.set(args.kind, name, args.provider, args.factor, seconds, args.reason)
        print(
            f"endpoint {name}: {args.kind} {args.factor:g} for {args.provider} for"
            f" {format_duration(seconds)} ({printable(args.reason)})"
        )
    _selection(names, f"{args.kind} {args.factor:g} for {args.provider}")
    return 0


def cmd_unfactor(args: argparse.Namespace) -> int:
    admin = admin_of(args)
    names = selected(args, admin.config, provider_slot=True)
    provider = args.provider_arg or args.provider
    if provider is not None:
        admin.check_provider(provider)
    scope = f" for {provider}" if provider else ""
    for name in names:
        dropped = admin.factors.clear(args.kind, name, provider)
        print(f"endpoint {name}: {dropped} {args.kind}(s){scope} lifted")
    _selection(names, f"un{args.kind}{scope}")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    admin = admin_of(args)
    names = selected(args, admin.config)
    until = None
    if args.duration is not None:
        until = args.clock.wall() + parse_duration(args.duration, unit_required=True)
    lifts = "until undrain" if until is None else f"for {args.duration}"
    for name in names:
        admin.set_state(name, "quarantined", args.reason, until=until)
        print(f"endpoint {name}: quarantined {lifts} ({printable(args.reason)})")
    _selection(names, "quarantined")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    admin = admin_of(args)
    endpoints = set(admin.config.endpoints)
    if args.what == "quarantines":
        rows = [q._asdict() for q in admin.quarantines()]
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in [] if args.json else rows:
            lifts = "until undrain" if row["until"] is None else f"until {row['until']} (epoch)"
            print(printable(f"{row['endpoint']}: quarantined {lifts}: {row['reason']}"))
        return 0
    kind = {"suspensions": "suspension", "throttles": "throttle", "slows": "slow", "adaptive": "adaptive"}[
        args.what
    ]
    standing = admin.factors.standing(kind, endpoints)
    if args.json:
        print(json.dumps([s.as_json() for s in standing], indent=2))
        return 0
    if not standing:
        print(f"no {args.what}")
    for s in standing:
        factor = (
            "" if kind == "suspension" else f" {'junk (ignored)' if s.factor is None else f'{s.factor:g}'}"
        )
        left = "no expiry" if s.ttl_s < 0 else f"{format_duration(s.ttl_s)} left"
        print(printable(f"{s.endpoint} {s.provider}:{factor} {left}: {s.reason}"))
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    admin = admin_of(args)
    warming = [n for n, ep in admin.config.endpoints.items() if ep.warmup is not None]
    if args.endpoint is not None and args.endpoint not in warming:
        admin.check_endpoint(args.endpoint)
        raise AdminError(f"{args.endpoint} has no warm-up (endpoints.{args.endpoint}.warmup in the YAML)")
    if args.action == "show":
        snapshot = status_of(admin).snapshot(tenants=False, limits=False)
        rows = []
        for name in [args.endpoint] if args.endpoint else warming:
            ep, cfg, record = (
                snapshot.endpoints[name],
                admin.config.endpoints[name].warmup,
                admin.warmups.read(name),
            )
            assert cfg is not None
            rows.append(
                {
                    "endpoint": name,
                    "start": cfg.start.isoformat(),
                    "advance": "managed" if cfg.managed else "calendar",
                    "step": ep.warmup_day,
                    "day_cap": ep.day_cap,
                    "hour_cap": ep.hour_cap,
                    "held": record.get("hold") == "1",
                    "why": record.get("why", ""),
                }
            )
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for r in rows:
            step = "warm" if r["step"] is None else f"step {r['step']}"
            held = ", held" if r["held"] else ""
            why = f": {r['why']}" if r["why"] else ""
            print(printable(f"{r['endpoint']}: {step} ({r['advance']}{held}), cap {r['day_cap']}/day{why}"))
        return 0
    if args.endpoint is None:
        raise AdminError(f"warmup {args.action} needs an ENDPOINT")
    cfg = admin.config.endpoints[args.endpoint].warmup
    assert cfg is not None
    if not cfg.managed:
        raise AdminError(
            f"{args.endpoint}'s warm-up advances by the calendar: its step is the day since"
            f" {cfg.start}; give it advance: sending_days (or hold_on) to manage it"
        )
    if args.action == "set":
        if args.step is None or args.step < 1:
            raise AdminError("warmup set needs --step N (1 or more)")
        admin.warmups.set_step(args.endpoint, args.step, utc_now(args.clock).strftime("%Y%m%d"))
        print(f"endpoint {args.endpoint}: warm-up on step {args.step} from today")
        return 0
    admin.warmups.hold(args.endpoint, args.action == "hold")
    held = (
        "held: the feedback daemon keeps its step" if args.action == "hold" else "released: it advances again"
    )
    print(f"endpoint {args.endpoint}: warm-up {held}")
    return 0
