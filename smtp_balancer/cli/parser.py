"""The argument parser: every command, its options, an example each and the exit codes."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import NoReturn

from smtp_balancer.cli.common import DRAINED, EXIT_USAGE, package_version
from smtp_balancer.config import default_config_path
from smtp_balancer.observe import logs
from smtp_balancer.render import exim
from smtp_balancer.state.keys import ALL_PROVIDERS


class Command:
    """A command's function, imported when the command runs: ``render`` then loads
    neither Redis's client nor the engine, which ``status`` needs (each about as long
    as the rest of a start)."""

    def __init__(self, target: str) -> None:
        module, _, self.name = target.rpartition(".")
        self.module = f"smtp_balancer.cli.{module}"

    def __call__(self, args: argparse.Namespace) -> int:
        func: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(self.module), self.name)
        return func(args)


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


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
    "replay": (
        "smtp-balancer replay --candidate candidate.yaml --decisions policyd.log --mta-log /var/log/mail.log",
    ),
    "tenant": (
        "smtp-balancer tenant hold shop.example --for 6h --reason 'complaints at 0.4%'",
        "smtp-balancer tenant release shop.example",
        "smtp-balancer tenant move shop.example --pool quarantine --for 2d --reason 'spam rate 0.2%'",
        "smtp-balancer tenant release shop.example --exim /usr/sbin/exim4",
        "smtp-balancer tenant list",
    ),
    "reputation": (
        "smtp-balancer reputation import trafficStats-shop.example.json snds-data.csv snds-ipstatus.csv",
        "smtp-balancer reputation show --json",
    ),
    "shadow": (
        "journalctl -u smtp-balancer-policyd --since today -o cat | smtp-balancer shadow report",
        "smtp-balancer shadow report /var/log/smtp-balancer/policyd.log.1.gz --json",
    ),
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

    def add(
        name: str, func: str | Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        """``func``: the command's function, or ``module.function`` in smtp_balancer.cli."""
        example = "\n".join(f"  {line}" for line in EXAMPLES[name])
        p = sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=f"example:\n{example}\n\n{EXIT_CODES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=Command(func) if isinstance(func, str) else func)
        return p

    add("check", "show.cmd_check", "validate the config; exit non-zero on any error")

    p = add("explain", "show.cmd_explain", "dry-run a decision from given facts; consumes no quota")
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

    p = add("status", "show.cmd_status", "weights, states, suspensions and warm-up counters per pool")
    p.add_argument("--json", action="store_true", help="JSON, as smtp_balancer/cli/status.schema.json says")
    p.add_argument("--endpoint", help="only this endpoint")
    p.add_argument("--pool", help="only this pool and its endpoints")
    p.add_argument("--host", help="only the endpoints whose host: is this fleet host")
    p.add_argument("--tag", help="only the endpoints with this tag")
    p.add_argument("--provider", help="only this mailbox provider's suspensions, limits and factors")
    p.add_argument(
        "--watch", metavar="EVERY", help="redraw every EVERY (e.g. 2s), with last minute's outcomes; q quits"
    )

    p = add(
        "audit", "show.cmd_audit", "the operators' changes, newest last: who, when, what, before and after"
    )
    p.add_argument("--since", help="only the last DURATION, e.g. 2h, 7d")
    p.add_argument("--limit", type=int, default=1000, help="at most this many, the newest (default 1000)")
    p.add_argument("--json", action="store_true", help="a JSON list of entries")

    p = add("weight", "operate.cmd_weight", "set an endpoint's live weight in a pool")
    p.add_argument("pool")
    p.add_argument("endpoint")
    p.add_argument("weight", type=int, nargs="?")
    p.add_argument("--reset", action="store_true", help="drop the live weight; the YAML weight applies")

    requeue_help = "also move mail already queued on it to other routes (the requeue daemon does)"
    p = add("drain", "operate.cmd_drain", "take an endpoint out for every message")
    add_selectors(p)
    p.add_argument("--reason", help=f"default: the earlier drain's, else {DRAINED!r}")
    p.add_argument("--requeue", action="store_true", help=requeue_help)

    p = add("undrain", "operate.cmd_undrain", "put a drained or quarantined endpoint back into service")
    add_selectors(p)
    p.add_argument("--reason", default="")

    p = add("suspend", "operate.cmd_suspend", "take an endpoint out for one provider (or all) for a while")
    add_selectors(p)
    p.add_argument("provider_arg", nargs="?", metavar="PROVIDER", help="the same as --provider")
    p.add_argument("--provider", default=ALL_PROVIDERS)
    p.add_argument("--requeue", action="store_true", help=requeue_help)
    p.add_argument("--for", dest="duration", default="1h", help="with a unit: 90s, 30m, 2h, 1d (default 1h)")
    p.add_argument("--reason", default="suspended by operator")
    p.add_argument("--force", action="store_true", help="replace a suspension that has longer to run")

    for name in ("resume", "unsuspend"):
        p = add(
            name,
            "operate.cmd_resume",
            "lift an endpoint's suspension for a provider (all of them without one)",
        )
        add_selectors(p)
        p.add_argument("provider_arg", nargs="?", metavar="PROVIDER", help="the same as --provider")
        p.add_argument("--provider")

    for kind, what in (("throttle", "share"), ("slow", "rate cap")):
        p = add(
            kind,
            "operate.cmd_factor",
            f"keep FACTOR (0-1) of an endpoint's {what} for one provider, for a while",
        )
        add_selectors(p)
        p.add_argument("--provider", required=True, help="a mailbox provider, or all")
        p.add_argument("--factor", type=float, required=True, help="strictly between 0 and 1")
        p.add_argument("--for", dest="duration", default="1h", help="with a unit: 90s, 30m, 2h (default 1h)")
        p.add_argument("--reason", default=f"{kind} by operator")
        p.set_defaults(kind=kind)
        p = add(
            f"un{kind}",
            "operate.cmd_unfactor",
            f"lift an endpoint's {kind} for a provider (all of them without one)",
        )
        add_selectors(p)
        p.add_argument("provider_arg", nargs="?", metavar="PROVIDER", help="the same as --provider")
        p.add_argument("--provider")
        p.set_defaults(kind=kind)

    p = add(
        "quarantine",
        "operate.cmd_quarantine",
        "take an endpoint out for every message, as a DNSBL listing does",
    )
    add_selectors(p)
    p.add_argument("--for", dest="duration", help="lift by itself after this (default: at undrain)")
    p.add_argument("--reason", default="quarantined by operator")

    p = add("warmup", "operate.cmd_warmup", "show warm-ups; set, hold or release a managed warm-up's step")
    p.add_argument("action", choices=["show", "set", "hold", "release"])
    p.add_argument("endpoint", nargs="?", help="show: one endpoint (default: every warming one)")
    p.add_argument("--step", type=int, help="set: the step (a day of the schedule) from today on")
    p.add_argument("--json", action="store_true", help="show: a JSON list")

    p = add(
        "list",
        "operate.cmd_list",
        "the suspensions, throttles, slows, adaptive factors or quarantines in force",
    )
    p.add_argument("what", choices=["suspensions", "throttles", "slows", "adaptive", "quarantines"])
    p.add_argument("--json", action="store_true", help="a JSON list")

    p = add(
        "policyd", "services.cmd_policyd", "run the Postfix policy daemon (also serves Exim ${readsocket})"
    )
    add_log_options(p)
    # set by the supervisor of policyd.workers for each worker it starts: not for people
    p.add_argument("--worker-control", type=int, help=argparse.SUPPRESS)

    p = add(
        "milter",
        "services.cmd_milter",
        "run the milter (content-aware routing, also for sendmail submissions)",
    )
    add_log_options(p)

    p = add(
        "feedback",
        "services.cmd_feedback",
        "run the feedback daemon: log outcomes, response rules, DNSBL, probes",
    )
    add_log_options(p)

    p = add(
        "requeue",
        "services.cmd_requeue",
        "run the requeue daemon: move queued mail off ineligible routes (root)",
    )
    p.add_argument("--once", action="store_true", help="sweep the deferred queue once, print what moved")
    add_log_options(p)

    p = add(
        "trace", "services.cmd_trace", "one message's decision, delivery attempts and outcome, from the logs"
    )
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

    p = add(
        "fbl",
        "services.cmd_fbl",
        "count ARF spam-complaint reports: one on stdin (a pipe transport) or a Maildir",
    )
    p.add_argument("--maildir", metavar="DIR", help="read every report in DIR/new, then move it to DIR/cur")

    p = add(
        "shadow",
        "services.cmd_shadow",
        "shadow mode: where the candidate config (shadow.config) differs, from the logs",
    )
    p.add_argument("action", choices=["report"])
    p.add_argument(
        "logs",
        nargs="*",
        metavar="LOG",
        help="the daemons' logs (plain or gzipped); - or none: standard input",
    )
    p.add_argument("--json", action="store_true", help="JSON instead of the tables")

    p = add(
        "replay",
        "services.cmd_replay",
        "decide a period's logged mail again under a candidate config, in simulated time",
    )
    p.add_argument("--candidate", required=True, metavar="YAML", help="the config to try")
    p.add_argument(
        "--decisions", nargs="+", required=True, metavar="LOG", help="the daemons' logs (plain, gzipped, -)"
    )
    p.add_argument(
        "--mta-log", nargs="+", required=True, metavar="LOG", help="the MTA's log (plain, gzipped, -)"
    )
    p.add_argument("--mta", choices=["postfix", "exim"], default="postfix", help="whose log --mta-log is")
    p.add_argument(
        "--host", metavar="H", help="the fleet host whose logs these are (default: this one, as explain)"
    )
    p.add_argument("--seed", type=int, default=1, help="for the draws and the modelled replies")
    p.add_argument(
        "--jobs",
        type=int,
        choices=[1, 2],
        help="processes: 2 decides the candidate in a second process that reads the logs too (same"
        " result, faster); default 2 when the logs are files and this host has 2 cores or more",
    )
    p.add_argument("--json", action="store_true", help="JSON instead of the tables")
    p.add_argument(
        "--html",
        metavar="PATH",
        help="also write an HTML report with hourly volume plots per endpoint (needs matplotlib)",
    )

    p = add(
        "reputation",
        "services.cmd_reputation",
        "the providers' reputation exports (Postmaster Tools, SNDS): import them, show what they say",
    )
    p.add_argument("action", choices=["import", "show"])
    p.add_argument("files", nargs="*", metavar="FILE", help="import: the export files")
    p.add_argument(
        "--format",
        choices=["postmaster-v1", "postmaster-v2", "snds-data", "snds-status"],
        help="import: what the files are (default: told from each file's first bytes)",
    )
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = add(
        "tenant",
        "services.cmd_tenant",
        "hold a tenant's new mail (Postfix's hold queue, Exim's frozen messages) or move it to a pool;"
        " release it; list holds and moves",
    )
    p.add_argument("action", choices=["hold", "move", "release", "list"])
    p.add_argument("tenant", nargs="?", help="hold, move, release: one of `tenants:`")
    p.add_argument("--pool", help="move: the pool its new mail goes to, whatever rule it matches")
    p.add_argument(
        "--for", dest="for_", default="1d", metavar="DURATION", help="hold, move: how long (default 1d)"
    )
    p.add_argument("--reason", default="", help="hold, move: why, shown with it")
    p.add_argument(
        "--postfix-dir",
        metavar="DIR",
        help="release: the Postfix config whose hold queue is released (default: requeue.postfix_config_dir)",
    )
    p.add_argument(
        "--exim",
        metavar="BINARY",
        help="release: thaw the tenant's frozen messages in this Exim's queue instead (default with"
        " feedback.log_format: exim: exim4 on PATH)",
    )
    p.add_argument(
        "--exim-config",
        metavar="FILE",
        help="release: the Exim runtime config (exim -C FILE) whose queue it is",
    )

    p = add("experiment", "services.cmd_experiment", "A/B experiments on routing: list, start, stop, report")
    p.add_argument("action", choices=["list", "start", "stop", "report"])
    p.add_argument("name", nargs="?", help="the experiment (experiments: in the YAML)")
    p.add_argument("--reset", action="store_true", help="start: drop the counts of an earlier run")

    p = add("completion", cmd_completion, "print a shell completion script for smtp-balancer")
    p.add_argument("shell", choices=["bash", "zsh", "tcsh"])

    p = add("table", "services.cmd_table", "serve Postfix's delivery-time table (socketmap) for moved mail")
    add_log_options(p)

    p = add("render", "services.cmd_render", "print MTA configuration generated from the YAML")
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
