"""The ``smtp-balancer`` command: check, explain, status, live state changes, render."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

import redis

from smtp_balancer import postconf
from smtp_balancer.cli.report import (
    AUDIT_SCAN,
    Shown,
    describe_entry,
    explain_report,
    last_changes,
    printable,
    short_entry,
    status_json,
    status_report,
    table,
)
from smtp_balancer.clock import SYSTEM, Clock, test_time_note, utc_now
from smtp_balancer.config import BalancerConfig, ConfigInvalid, default_config_path, load_config
from smtp_balancer.config.model import same_host
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.providers import domain_of
from smtp_balancer.durations import format_duration, parse_duration
from smtp_balancer.engine import Engine
from smtp_balancer.engine.plumbing import host_ipv6_addresses
from smtp_balancer.experiments.stats import StatsUnavailable
from smtp_balancer.observe import logs
from smtp_balancer.observe.metrics import ListenError
from smtp_balancer.observe.status import StatusReader
from smtp_balancer.render import exim, postfix, postfix_merge
from smtp_balancer.state.admin import AdminError, StateAdmin
from smtp_balancer.state.audit import AuditEntry
from smtp_balancer.state.client import RedisSetupError, describe, sync_client, tls_hint
from smtp_balancer.state.keys import ALL_PROVIDERS
from smtp_balancer.state.outcomes import minute_outcomes
from smtp_balancer.state.values import text_of

EXIT_CONFIG = 2
EXIT_REDIS = 3
EXIT_USAGE = 4
EXIT_LISTEN = 5
EXIT_POSTFIX = 6  # postconf could not read the Postfix configuration


def package_version() -> str:
    try:
        return metadata.version("smtp-balancer")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def _config(args: argparse.Namespace) -> BalancerConfig:
    return load_config(args.config)


def _admin(args: argparse.Namespace) -> StateAdmin:
    config = _config(args)
    return StateAdmin(sync_client(config.redis), config, args.clock)


def _status(admin: StateAdmin) -> StatusReader:
    return StatusReader(admin.r, admin.config, admin.clock)


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
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
    config = _config(args)
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
            decision = await engine.decide(facts, commit=False, explain=True)
            providers = engine.planner.providers.for_domains(domain_of(r) for r in facts.recipients)
        finally:
            await engine.aclose()
        return explain_report(
            facts, decision, engine.plumbing.current, engine.foreign, engine.host, providers
        )

    print(asyncio.run(run()))
    return 0


def status_filter(args: argparse.Namespace, admin: StateAdmin) -> Shown:
    """`status --pool/--endpoint/--host/--tag/--provider`: what to show (all of them together)."""
    config = admin.config
    endpoints: set[str] | None = None
    if args.endpoint is not None:
        admin._endpoint(args.endpoint)
        endpoints = {args.endpoint}
    if args.pool or args.host or args.tag:
        chosen = argparse.Namespace(**{**vars(args), "endpoint": None, "all": False})
        endpoints = set(selected(chosen, config)) & (endpoints or set(config.endpoints))
    if args.provider is not None:
        admin._provider(args.provider)
    pools = frozenset({args.pool}) if args.pool else None
    return Shown(pools, None if endpoints is None else frozenset(endpoints), args.provider)


def cmd_status(args: argparse.Namespace) -> int:
    admin = _admin(args)
    shown = status_filter(args, admin)
    if args.json:
        snapshot = _status(admin).snapshot()
        print(json.dumps(status_json(snapshot, _changes(admin, shown)), indent=2))
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
            return _status_text(admin, shown, args.clock.wall()) + "\n" + rates_section(rows, minute)

        return watch(screen, every_s)
    print(_status_text(admin, shown, args.clock.wall()))
    return 0


def _changes(admin: StateAdmin, shown: Shown) -> dict[str, AuditEntry]:
    changes = last_changes(admin.audit.read(limit=AUDIT_SCAN), set(admin.config.endpoints))
    return {ep: e for ep, e in changes.items() if shown.endpoint(ep)}


def _status_text(admin: StateAdmin, shown: Shown, now: float) -> str:
    out = [status_report(_status(admin).snapshot(), shown)]
    if changes := _changes(admin, shown):
        out.append("\nlast change per endpoint (smtp-balancer audit shows them all):")
        out += table([[ep, short_entry(e, now)] for ep, e in sorted(changes.items())])
    return "\n".join(out)


def cmd_audit(args: argparse.Namespace) -> int:
    since = None if args.since is None else args.clock.wall() - parse_duration(args.since, unit_required=True)
    entries = _admin(args).audit.read(since, args.limit)
    if args.json:
        print(json.dumps([e.as_json() for e in entries], indent=2))
        return 0
    if not entries:
        print("no changes recorded" + (f" in the last {args.since}" if args.since else ""))
    for e in entries:
        print(printable(describe_entry(e, args.clock.wall())))
    return 0


def cmd_weight(args: argparse.Namespace) -> int:
    if args.weight is None and not args.reset:
        raise AdminError("give a WEIGHT, or --reset to return to the YAML weight")
    _admin(args).set_weight(args.pool, args.endpoint, None if args.reset else args.weight)
    what = "YAML weight restored" if args.reset else f"weight {args.weight}"
    print(f"pool {args.pool}, endpoint {args.endpoint}: {what}")
    return 0


DRAINED = "drained by operator"
REQUEUE_NOTE = "; queued mail moves at the requeue daemon's next sweep (smtp-balancer requeue --once: now)"


def selected(args: argparse.Namespace, config: BalancerConfig, provider_slot: bool = False) -> list[str]:
    """The endpoints a write applies to: the one named, or those --pool, --host, --tag
    and --all select (all of them together). ``provider_slot``: with a selector, the
    first word is the provider (``suspend --pool bulk google``)."""
    chosen = {"pool": args.pool, "host": args.host, "tag": args.tag}
    if not any(chosen.values()) and not args.all:
        if args.endpoint is None:
            raise AdminError("name an endpoint, or select some with --pool, --host, --tag or --all")
        return [args.endpoint]
    if args.endpoint is not None:
        if not provider_slot or args.provider_arg is not None:
            raise AdminError(f"{args.endpoint!r}: name an endpoint or select some, not both")
        args.provider_arg, args.endpoint = args.endpoint, None
    names = list(config.endpoints)
    if args.pool:
        if args.pool not in config.pools:
            raise AdminError(f"unknown pool {args.pool!r} (known: {', '.join(sorted(config.pools))})")
        members = {m.endpoint for m in config.pools[args.pool].endpoints}
        names = [n for n in names if n in members]
    if args.host:
        names = [n for n in names if (h := config.endpoints[n].host) and same_host(h, args.host)]
    if args.tag:
        names = [n for n in names if args.tag in config.endpoints[n].tags]
    if not names:
        tags = sorted({t for ep in config.endpoints.values() for t in ep.tags})
        picked = ", ".join(f"--{k} {v}" for k, v in chosen.items() if v)
        raise AdminError(
            f"no endpoint is selected by {picked or '--all'} (tags in the YAML: {', '.join(tags) or 'none'})"
        )
    return names


def _selection(names: list[str], done: str) -> None:
    if len(names) > 1:
        print(f"{len(names)} endpoints {done}: {', '.join(names)}")


def cmd_drain(args: argparse.Namespace) -> int:
    admin = _admin(args)
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
    admin = _admin(args)
    names = selected(args, admin.config)
    for name in names:
        admin.set_state(name, "active", args.reason)
        print(f"endpoint {name}: active")
    _selection(names, "active")
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    seconds = parse_duration(args.duration, unit_required=True)
    admin = _admin(args)
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
    admin = _admin(args)
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
    admin = _admin(args)
    names = selected(args, admin.config, provider_slot=False)
    admin._provider(args.provider)
    for name in names:
        admin.factors.set(args.kind, name, args.provider, args.factor, seconds, args.reason)
        print(
            f"endpoint {name}: {args.kind} {args.factor:g} for {args.provider} for"
            f" {format_duration(seconds)} ({printable(args.reason)})"
        )
    _selection(names, f"{args.kind} {args.factor:g} for {args.provider}")
    return 0


def cmd_unfactor(args: argparse.Namespace) -> int:
    admin = _admin(args)
    names = selected(args, admin.config, provider_slot=True)
    provider = args.provider_arg or args.provider
    if provider is not None:
        admin._provider(provider)
    scope = f" for {provider}" if provider else ""
    for name in names:
        dropped = admin.factors.clear(args.kind, name, provider)
        print(f"endpoint {name}: {dropped} {args.kind}(s){scope} lifted")
    _selection(names, f"un{args.kind}{scope}")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    admin = _admin(args)
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
    admin = _admin(args)
    endpoints = set(admin.config.endpoints)
    if args.what == "quarantines":
        rows: list[dict[str, object]] = []
        for name in sorted(endpoints):
            state = admin.state_of(name)
            if state is not None and state[0] == "quarantined":
                until = text_of(admin.r.hget(admin.keys.endpoint_state(name), "until"))
                rows.append({"endpoint": name, "reason": state[1], "until": until})
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
    admin = _admin(args)
    warming = [n for n, ep in admin.config.endpoints.items() if ep.warmup is not None]
    if args.endpoint is not None and args.endpoint not in warming:
        admin._endpoint(args.endpoint)
        raise AdminError(f"{args.endpoint} has no warm-up (endpoints.{args.endpoint}.warmup in the YAML)")
    if args.action == "show":
        snapshot = _status(admin).snapshot(tenants=False, limits=False)
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


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from smtp_balancer.requeue.table_daemon import run

    _daemon_logs(args)
    return run(_config(args))


def cmd_requeue(args: argparse.Namespace) -> int:
    from smtp_balancer.requeue.daemon import run

    _daemon_logs(args)
    return run(_config(args), once=args.once)


def cmd_render(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.host:
        config = config.for_host(args.host)
    if args.mta == "exim":
        return _render_exim(config, args)
    if args.write:
        raise ValueError("--write is for exim; use --write-maps DIR for the postfix milter maps")
    if args.part not in ("master", "main", "all"):
        raise ValueError(f"render postfix has no part {args.part!r}: use master, main or all")
    if args.postconf:
        services, options = (
            postconf.master_services(args.postfix_dir),
            postconf.master_options(args.postfix_dir),
        )
        if problems := postfix_merge.clashes(config, services, options):
            raise ValueError("; ".join(problems))
        current = postconf.main_values(args.postfix_dir, postfix_merge.params_read(config))
        sys.stdout.write(postfix_merge.postconf_script(config, current, args.postfix_dir, args.config))
        return 0
    if args.write_maps:
        target = Path(args.write_maps)
        target.mkdir(parents=True, exist_ok=True)
        for name, text in postfix.postfix_maps(config).items():
            (target / name).write_text(text)
            print(f"wrote {target / name}", file=sys.stderr)
        return 0
    if args.part in ("master", "all"):
        sys.stdout.write(postfix.master_cf(config, args.config))
    if args.part == "all":
        sys.stdout.write("\n")
    if args.part in ("main", "all"):
        sys.stdout.write(postfix.main_cf(config, args.config))
    return 0


def _render_exim(config: BalancerConfig, args: argparse.Namespace) -> int:
    if args.write_maps:
        raise ValueError("--write-maps is for postfix; use --write DIR for exim")
    if args.part not in (*exim.PARTS, "all"):
        raise ValueError(f"render exim has no part {args.part!r}: use {', '.join(exim.PARTS)} or all")
    # main.conf names the routes file by the directory it is written to: absolute
    directory = Path(args.write).resolve() if args.write else None
    files = exim.exim_files(config, str(directory) if directory else None, args.config)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text)
            print(f"wrote {directory / name}", file=sys.stderr)
        return 0
    parts = exim.PARTS if args.part == "all" else (args.part,)
    for part in parts:
        if args.part == "all":
            sys.stdout.write(f"# ---- {exim.FILE_NAMES[part]}\n")
        sys.stdout.write(files[exim.FILE_NAMES[part]])
    return 0


def _daemon_logs(args: argparse.Namespace) -> None:
    logs.configure(args.log_format, args.log_level)
    if (note := test_time_note()) is not None:
        logging.getLogger("smtp_balancer").warning("%s", note)


def cmd_policyd(args: argparse.Namespace) -> int:
    from policyd.main import run

    _daemon_logs(args)
    return run(_config(args), args.config, args.log_level, args.log_format, args.worker_control)


def cmd_milter(args: argparse.Namespace) -> int:
    from smtp_balancer_milter.main import run

    _daemon_logs(args)
    return run(_config(args))


def cmd_trace(args: argparse.Namespace) -> int:
    from smtp_balancer.cli.trace import trace

    config = _config(args)
    return trace(
        config,
        args.id,
        args.log,
        args.json,
        lambda: _status(_admin(args)).snapshot(),
        journal=not args.no_journal,
        journal_file=args.journal_file,
    )


def cmd_fbl(args: argparse.Namespace) -> int:
    from smtp_balancer.complaints.intake import EX_TEMPFAIL, run

    logs.configure("logfmt", logging.WARNING)  # each report's line goes to stdout; trouble to stderr too
    if args.maildir is not None:
        return run(_config(args), args.maildir, sys.stdin.buffer)
    # behind a pipe transport any other exit code bounces the report to the feedback
    # loop: whatever goes wrong (the config, Redis setup, a bug), the MTA keeps it
    try:
        return run(_config(args), None, sys.stdin.buffer)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        print(f"smtp-balancer fbl: {why}; the report waits for a retry", file=sys.stderr)
        return EX_TEMPFAIL


def cmd_experiment(args: argparse.Namespace) -> int:
    from smtp_balancer.cli import experiment

    admin = _admin(args)
    return experiment.run(args, admin.config, admin.r)


def cmd_feedback(args: argparse.Namespace) -> int:
    from smtp_balancer.feedback.daemon import run

    _daemon_logs(args)
    return run(_config(args))


def add_selectors(p: argparse.ArgumentParser) -> None:
    """An endpoint by name, or many at once (all the selectors given, together)."""
    p.add_argument("endpoint", nargs="?", help="one endpoint; or select with the options below")
    p.add_argument("--pool", help="every endpoint of this pool")
    p.add_argument("--host", help="every endpoint whose host: is this fleet host")
    p.add_argument("--tag", help="every endpoint with this tag (tags: in the YAML)")
    p.add_argument("--all", action="store_true", help="every endpoint")


def add_log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        default="logfmt",
        choices=logs.LOG_FORMATS,
        help="one event per line, as logfmt (default) or JSON; info logs every decision",
    )


EXIT_CODES = (
    "exit codes: 0 ok, 1 failed (trace: id not found), 2 config error, 3 Redis unreachable,"
    "\n4 bad operator input or usage, 5 cannot listen, 6 postconf failed"
)
# each command's --help ends with these (tests/cli/test_main.py checks every command has one)
EXAMPLES: dict[str, tuple[str, ...]] = {
    "check": ("smtp-balancer -c /etc/smtp-balancer/config.yaml check",),
    "explain": ("smtp-balancer explain --sender news@shop.example --rcpt bob@gmail.com --class bulk",),
    "status": (
        "smtp-balancer status --host mta2 --provider google",
        "smtp-balancer status --watch 2s",
        "smtp-balancer status --json | jq '.endpoints.out2.suspensions'",
    ),
    "audit": ("smtp-balancer audit --since 7d", "smtp-balancer audit --json --limit 50"),
    "weight": ("smtp-balancer weight bulk out2 50", "smtp-balancer weight bulk out2 --reset"),
    "drain": ('smtp-balancer drain out1 --reason "disk swap" --requeue', "smtp-balancer drain --host mta2"),
    "undrain": ("smtp-balancer undrain out1",),
    "suspend": (
        'smtp-balancer suspend out2 google --for 2h --reason "421-4.7.28 from gmail"',
        "smtp-balancer suspend --tag bulk microsoft --for 30m",
    ),
    "resume": ("smtp-balancer resume out2 google", "smtp-balancer resume out2   # every provider"),
    "unsuspend": ("smtp-balancer unsuspend out2 google",),
    "policyd": ("smtp-balancer policyd --log-format json",),
    "milter": ("smtp-balancer milter",),
    "feedback": ("smtp-balancer feedback",),
    "requeue": ("smtp-balancer requeue --once",),
    "trace": (
        "smtp-balancer trace 4ZqXh71b2Kz9sYq      # feedback.log_file and the daemons' journal",
        "smtp-balancer trace '<m1@shop.example>' --log mail.log --log policyd.log",
    ),
    "fbl": (
        "smtp-balancer fbl < report.eml      # from stdin: exit 0 counted or kept, 75 retry later",
        "smtp-balancer fbl --maildir /var/mail/fbl",
    ),
    "experiment": ("smtp-balancer experiment start ab --reset", "smtp-balancer experiment report ab"),
    "table": ("smtp-balancer table",),
    "throttle": ('smtp-balancer throttle out2 --provider microsoft --factor 0.5 --for 2h --reason "S3150"',),
    "unthrottle": ("smtp-balancer unthrottle out2 microsoft",),
    "slow": ("smtp-balancer slow --tag bulk --provider google --factor 0.25 --for 30m",),
    "unslow": ("smtp-balancer unslow out2",),
    "quarantine": ('smtp-balancer quarantine out3 --for 6h --reason "listed on a DNSBL by hand"',),
    "list": ("smtp-balancer list throttles", "smtp-balancer list suspensions --json"),
    "warmup": (
        "smtp-balancer warmup show",
        "smtp-balancer warmup set out3 --step 4",
        "smtp-balancer warmup hold out3",
    ),
    "completion": (
        "smtp-balancer completion bash > /etc/bash_completion.d/smtp-balancer",
        "smtp-balancer completion zsh > /usr/local/share/zsh/site-functions/_smtp-balancer",
    ),
    "render": (
        "smtp-balancer render postfix --postconf > /root/smtp-balancer-postconf.sh",
        "smtp-balancer render exim --write /etc/exim4/smtp-balancer",
    ),
}


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors under EXIT_USAGE: its own 2 is EXIT_CONFIG here."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    config_help = "YAML config (default: $SMTP_BALANCER_CONFIG or /etc/smtp-balancer/config.yaml)"
    parser = Parser(prog="smtp-balancer", description=__doc__)
    parser.add_argument("-c", "--config", default=default_config_path(), help=config_help)
    parser.add_argument("--version", action="version", version=f"smtp-balancer {package_version()}")
    # accepted after the subcommand too; SUPPRESS keeps it from resetting the value given before
    common = Parser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help=config_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        example = "\n".join(f"  {line}" for line in EXAMPLES[name])
        p = sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=f"example:\n{example}\n\n{EXIT_CODES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    add("check", cmd_check, "validate the config; exit non-zero on any error")

    p = add("explain", cmd_explain, "dry-run a decision from given facts; consumes no quota")
    p.add_argument("--sender", default="")
    p.add_argument("--rcpt", action="append", default=[], help="recipient (repeatable)")
    p.add_argument("--sasl-username", default="")
    p.add_argument("--client", default="", help="client IP address")
    p.add_argument("--size", type=int)
    p.add_argument("--class", dest="message_class", help="message class, e.g. transactional or bulk")
    p.add_argument("--queue-id", default="", help="the MTA's queue id: the experiment arm it would get")
    p.add_argument(
        "--host", help="decide as this fleet host's daemons do (endpoints' host:); default: this host"
    )

    p = add("status", cmd_status, "weights, states, suspensions and warm-up counters per pool")
    p.add_argument("--json", action="store_true", help="JSON, as smtp_balancer/cli/status.schema.json says")
    p.add_argument("--endpoint", help="only this endpoint")
    p.add_argument("--pool", help="only this pool and its endpoints")
    p.add_argument("--host", help="only the endpoints whose host: is this fleet host")
    p.add_argument("--tag", help="only the endpoints with this tag")
    p.add_argument("--provider", help="only this mailbox provider's suspensions, limits and factors")
    p.add_argument(
        "--watch", metavar="EVERY", help="redraw every EVERY (e.g. 2s), with last minute's outcomes; q quits"
    )

    p = add("audit", cmd_audit, "the operators' changes, newest last: who, when, what, before and after")
    p.add_argument("--since", help="only the last DURATION, e.g. 2h, 7d")
    p.add_argument("--limit", type=int, default=1000, help="at most this many, the newest (default 1000)")
    p.add_argument("--json", action="store_true", help="a JSON list of entries")

    p = add("weight", cmd_weight, "set an endpoint's live weight in a pool")
    p.add_argument("pool")
    p.add_argument("endpoint")
    p.add_argument("weight", type=int, nargs="?")
    p.add_argument("--reset", action="store_true", help="drop the live weight; the YAML weight applies")

    requeue_help = "also move mail already queued on it to other routes (the requeue daemon does)"
    p = add("drain", cmd_drain, "take an endpoint out for every message")
    add_selectors(p)
    p.add_argument("--reason", help=f"default: the earlier drain's, else {DRAINED!r}")
    p.add_argument("--requeue", action="store_true", help=requeue_help)

    p = add("undrain", cmd_undrain, "put a drained or quarantined endpoint back into service")
    add_selectors(p)
    p.add_argument("--reason", default="")

    p = add("suspend", cmd_suspend, "take an endpoint out for one provider (or all) for a while")
    add_selectors(p)
    p.add_argument("provider_arg", nargs="?", metavar="PROVIDER", help="the same as --provider")
    p.add_argument("--provider", default=ALL_PROVIDERS)
    p.add_argument("--requeue", action="store_true", help=requeue_help)
    p.add_argument("--for", dest="duration", default="1h", help="with a unit: 90s, 30m, 2h, 1d (default 1h)")
    p.add_argument("--reason", default="suspended by operator")
    p.add_argument("--force", action="store_true", help="replace a suspension that has longer to run")

    for name in ("resume", "unsuspend"):
        p = add(name, cmd_resume, "lift an endpoint's suspension for a provider (all of them without one)")
        add_selectors(p)
        p.add_argument("provider_arg", nargs="?", metavar="PROVIDER", help="the same as --provider")
        p.add_argument("--provider")

    for kind, what in (("throttle", "share"), ("slow", "rate cap")):
        p = add(kind, cmd_factor, f"keep FACTOR (0-1) of an endpoint's {what} for one provider, for a while")
        add_selectors(p)
        p.add_argument("--provider", required=True, help="a mailbox provider, or all")
        p.add_argument("--factor", type=float, required=True, help="strictly between 0 and 1")
        p.add_argument("--for", dest="duration", default="1h", help="with a unit: 90s, 30m, 2h (default 1h)")
        p.add_argument("--reason", default=f"{kind} by operator")
        p.set_defaults(kind=kind)
        p = add(
            f"un{kind}", cmd_unfactor, f"lift an endpoint's {kind} for a provider (all of them without one)"
        )
        add_selectors(p)
        p.add_argument("provider_arg", nargs="?", metavar="PROVIDER", help="the same as --provider")
        p.add_argument("--provider")
        p.set_defaults(kind=kind)

    p = add("quarantine", cmd_quarantine, "take an endpoint out for every message, as a DNSBL listing does")
    add_selectors(p)
    p.add_argument("--for", dest="duration", help="lift by itself after this (default: at undrain)")
    p.add_argument("--reason", default="quarantined by operator")

    p = add("warmup", cmd_warmup, "show warm-ups; set, hold or release a managed warm-up's step")
    p.add_argument("action", choices=["show", "set", "hold", "release"])
    p.add_argument("endpoint", nargs="?", help="show: one endpoint (default: every warming one)")
    p.add_argument("--step", type=int, help="set: the step (a day of the schedule) from today on")
    p.add_argument("--json", action="store_true", help="show: a JSON list")

    p = add("list", cmd_list, "the suspensions, throttles, slows, adaptive factors or quarantines in force")
    p.add_argument("what", choices=["suspensions", "throttles", "slows", "adaptive", "quarantines"])
    p.add_argument("--json", action="store_true", help="a JSON list")

    p = add("policyd", cmd_policyd, "run the Postfix policy daemon (also serves Exim ${readsocket})")
    add_log_options(p)
    # set by the supervisor of policyd.workers for each worker it starts: not for people
    p.add_argument("--worker-control", type=int, help=argparse.SUPPRESS)

    p = add("milter", cmd_milter, "run the milter (content-aware routing, also for sendmail submissions)")
    add_log_options(p)

    p = add("feedback", cmd_feedback, "run the feedback daemon: log outcomes, response rules, DNSBL, probes")
    add_log_options(p)

    p = add("requeue", cmd_requeue, "run the requeue daemon: move queued mail off ineligible routes (root)")
    p.add_argument("--once", action="store_true", help="sweep the deferred queue once, print what moved")
    add_log_options(p)

    p = add("trace", cmd_trace, "one message's decision, delivery attempts and outcome, from the logs")
    p.add_argument("id", help="a queue id (Postfix or Exim), a decision id or a Message-ID")
    p.add_argument(
        "--log",
        action="append",
        default=[],
        help="a log to read (repeatable; - for stdin): the MTA's and the daemons' "
        "(default: feedback.log_file and the daemons' journal)",
    )
    p.add_argument(
        "--journal-file",
        metavar="FILE",
        help="read the daemons' lines from this journal file (journalctl --file), "
        "for instance one copied from another host",
    )
    p.add_argument("--no-journal", action="store_true", help="do not read the daemons' journal by default")
    p.add_argument("--json", action="store_true", help="JSON instead of the table")

    p = add("fbl", cmd_fbl, "count ARF spam-complaint reports: one on stdin (a pipe transport) or a Maildir")
    p.add_argument("--maildir", metavar="DIR", help="read every report in DIR/new, then move it to DIR/cur")

    p = add("experiment", cmd_experiment, "A/B experiments on routing: list, start, stop, report")
    p.add_argument("action", choices=["list", "start", "stop", "report"])
    p.add_argument("name", nargs="?", help="the experiment (experiments: in the YAML)")
    p.add_argument("--reset", action="store_true", help="start: drop the counts of an earlier run")

    p = add("completion", cmd_completion, "print a shell completion script for smtp-balancer")
    p.add_argument("shell", choices=["bash", "zsh", "tcsh"])

    p = add("table", cmd_table, "serve Postfix's delivery-time table (socketmap) for moved mail")
    add_log_options(p)

    p = add("render", cmd_render, "print MTA configuration generated from the YAML")
    p.add_argument("mta", choices=["postfix", "exim"])
    p.add_argument(
        "--part",
        choices=["master", "main", "all", *[x for x in exim.PARTS if x != "main"]],
        default="all",
        help="postfix: master, main; exim: main, acl, routers, transports, routes",
    )
    p.add_argument(
        "--write-maps", metavar="DIR", help="postfix: write the milter's regexp maps into DIR instead"
    )
    p.add_argument(
        "--write", metavar="DIR", help="exim: write every part into DIR (main.conf names DIR/routes)"
    )
    p.add_argument(
        "--postconf",
        action="store_true",
        help="postfix: print postconf commands that merge into the running config (keeping yours)",
    )
    p.add_argument(
        "--postfix-dir",
        default="/etc/postfix",
        metavar="DIR",
        help="with --postconf: Postfix's config_directory",
    )
    p.add_argument(
        "--host", help="only the endpoints of this fleet host (host:) and those of no host; default: all"
    )
    return parser


def main(argv: Sequence[str] | None = None, clock: Clock = SYSTEM) -> int:
    """``clock`` is for tests: warm-up ages and counter buckets derive from it."""
    logs.configure("logfmt", logging.WARNING)
    args = build_parser().parse_args(argv)
    args.clock = clock
    try:
        return int(args.func(args))
    except ConfigInvalid as exc:
        print(f"smtp-balancer: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (AdminError, ValueError, StatsUnavailable) as exc:
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ListenError as exc:
        for handler in logging.root.handlers:  # buffered log lines first: the cause comes last
            handler.flush()
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_LISTEN
    except postconf.PostconfError as exc:
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_POSTFIX
    except RedisSetupError as exc:
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_REDIS
    except redis.RedisError as exc:
        redis_cfg = load_config(args.config).redis if Path(args.config).exists() else None
        where = describe(redis_cfg) if redis_cfg else "?"
        hint = tls_hint(redis_cfg) if redis_cfg and isinstance(exc, redis.ConnectionError) else ""
        print(f"smtp-balancer: Redis at {where}: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return EXIT_REDIS


if __name__ == "__main__":
    sys.exit(main())
