"""Commands that run or render: the daemons, render, trace, fbl, experiment."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from smtp_balancer import postconf
from smtp_balancer.cli.common import admin_of, config_of, status_of
from smtp_balancer.clock import test_time_note
from smtp_balancer.config import BalancerConfig
from smtp_balancer.observe import logs
from smtp_balancer.render import exim, postfix, postfix_merge


def cmd_table(args: argparse.Namespace) -> int:
    from smtp_balancer.requeue.table_daemon import run

    _daemon_logs(args)
    return run(config_of(args))


def cmd_requeue(args: argparse.Namespace) -> int:
    from smtp_balancer.requeue.daemon import run

    _daemon_logs(args)
    return run(config_of(args), once=args.once)


def cmd_render(args: argparse.Namespace) -> int:
    config = config_of(args)
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
    return run(config_of(args), args.config, args.log_level, args.log_format, args.worker_control)


def cmd_milter(args: argparse.Namespace) -> int:
    from smtp_balancer_milter.main import block_stop_signals, run

    block_stop_signals()  # before the log writer's thread starts: it must not take SIGTERM
    _daemon_logs(args)
    return run(config_of(args))


def cmd_trace(args: argparse.Namespace) -> int:
    from smtp_balancer.cli.trace import trace

    config = config_of(args)
    return trace(
        config,
        args.id,
        args.log,
        args.json,
        lambda: status_of(admin_of(args)).snapshot(),
        journal=not args.no_journal,
        journal_file=args.journal_file,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from smtp_balancer.cli.replay import run

    return run(args)


def cmd_reputation(args: argparse.Namespace) -> int:
    from smtp_balancer.cli.reputation import run

    return run(args)


def cmd_tenant(args: argparse.Namespace) -> int:
    from smtp_balancer.cli.tenant import run

    return run(args)


def cmd_shadow(args: argparse.Namespace) -> int:
    from smtp_balancer.cli.shadow import report

    return report(args)


def cmd_fbl(args: argparse.Namespace) -> int:
    from smtp_balancer.complaints.intake import EX_TEMPFAIL, run

    logs.configure("logfmt", logging.WARNING)  # each report's line goes to stdout; trouble to stderr too
    if args.maildir is not None:
        return run(config_of(args), args.maildir, sys.stdin.buffer)
    # behind a pipe transport any other exit code bounces the report to the feedback
    # loop: whatever goes wrong (the config, Redis setup, a bug), the MTA keeps it
    try:
        return run(config_of(args), None, sys.stdin.buffer)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        print(f"smtp-balancer fbl: {why}; the report waits for a retry", file=sys.stderr)
        return EX_TEMPFAIL


def cmd_experiment(args: argparse.Namespace) -> int:
    from smtp_balancer.cli import experiment

    admin = admin_of(args)
    return experiment.run(args, admin.config, admin.r)


def cmd_feedback(args: argparse.Namespace) -> int:
    from smtp_balancer.feedback.daemon import run

    _daemon_logs(args)
    return run(config_of(args))
