"""``smtp-balancer replay``: the decision log and the MTA log of a period decided
again under the live config (``-c``) and a candidate, in simulated time, never
touching Redis (``smtp_balancer/replay``)."""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from smtp_balancer.cli.common import config_of, log_lines
from smtp_balancer.config import ConfigInvalid, load_config
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.planner import Planner
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.engine.plumbing import foreign_endpoints, this_host
from smtp_balancer.feedback.dialects import LogDialect, dialect_for
from smtp_balancer.feedback.responses import applied_rules
from smtp_balancer.render.exim import transport_names
from smtp_balancer.replay.inputs import Attempt, Message, Unread, attempt_of, message_of
from smtp_balancer.replay.order import SLACK_S, in_time_order, merged
from smtp_balancer.replay.period import replay_period
from smtp_balancer.replay.plots import PlotsUnavailable, as_html, pyplot
from smtp_balancer.replay.replies import ReplyModel
from smtp_balancer.replay.report import as_dict, render
from smtp_balancer.replay.simulate import Run, Simulator

PROGRESS_EVERY = 20_000
T = TypeVar("T")


class Progress:
    """A line on a terminal (messages read, simulated time reached, rate); silent otherwise."""

    def __init__(self, on: bool) -> None:
        self.on, self.started, self.count = on, time.monotonic(), 0

    def step(self, message: Message) -> None:
        self.count += 1
        if self.on and self.count % PROGRESS_EVERY == 0:
            rate = self.count / max(time.monotonic() - self.started, 1e-9)
            when = datetime.fromtimestamp(message.at).strftime("%Y-%m-%d %H:%M:%S")
            print(f"\rreplayed {self.count} messages, at {when}, {rate:,.0f}/s", end="", file=sys.stderr)

    def done(self) -> None:
        if self.on and self.count >= PROGRESS_EVERY:
            print(file=sys.stderr)


def log_dialect(config: BalancerConfig, mta: str) -> LogDialect:
    return dialect_for(ProviderTable.from_config(config), transport_names(config) if mta == "exim" else None)


def _whole(lines: Iterator[str], unread: Unread) -> Iterator[str]:
    """A log's lines but a last one with no newline: a log cut short (a crash, a copy
    taken mid-write) ends in part of a line, which must not pass for a whole one."""
    for line in lines:
        if line.endswith("\n"):
            yield line
        else:
            unread.note("last line of a log with no newline: taken as cut short")


def _in_order(paths: list[str], parse: Callable[[str], T | None], what: str, unread: Unread) -> Iterator[T]:
    """Each log's records (``parse`` of each whole line), set in time order, the logs merged."""

    def late(_: object) -> None:
        unread.note(f"{what} more than {SLACK_S:.0f} s out of time order (replayed where it stood)")

    return merged(
        (
            in_time_order(
                (x for line in _whole(log_lines([p]), unread) if (x := parse(line)) is not None), _at, late
            )
            for p in paths
        ),
        _at,
    )


def decision_stream(paths: list[str], unread: Unread) -> Iterator[Message]:
    return _in_order(paths, lambda line: message_of(line, unread), "decision line", unread)


def attempt_stream(paths: list[str], dialect: LogDialect, year: int, unread: Unread) -> Iterator[Attempt]:
    zone = datetime.now().astimezone().tzinfo
    return _in_order(
        paths,
        lambda line: attempt_of(line, dialect, year, zone, unread),  # type: ignore[arg-type]
        "MTA log line",
        unread,
    )


def _at(item: Any) -> float:
    return item.at


class NoDecisions(ValueError):
    """The decision logs hold no line replay can use."""


def jobs_of(args: argparse.Namespace) -> int:
    """2 when asked, or by default when both logs are files (stdin can be read only
    once) and there is a second core; else 1."""
    files = "-" not in (*args.decisions, *args.mta_log)
    if args.jobs is not None:
        return args.jobs if files else 1
    return 2 if files and (os.cpu_count() or 1) >= 2 else 1


def replayed(
    args: argparse.Namespace,
    live: BalancerConfig,
    configs: dict[str, BalancerConfig],
    host: str,
    unread: Unread,
    each: Callable[[Message], None] = lambda m: None,
) -> tuple[dict[str, Run], Run]:
    """The period decided under each named config: their runs, and what the log says
    actually happened (read with ``live``'s providers and transports). Raises
    ValueError for logs it cannot use."""
    model = ReplyModel()
    simulators = [
        Simulator(config, model, name, args.seed, foreign_endpoints(config, host))
        for name, config in configs.items()
    ]
    messages = decision_stream(args.decisions, unread)
    first = next(messages, None)
    if first is None:
        raise NoDecisions
    year = datetime.fromtimestamp(first.at).year  # for syslog stamps, which have none
    attempts = attempt_stream(args.mta_log, log_dialect(live, args.mta), year, unread)
    actual = replay_period(
        itertools.chain([first], messages), attempts, model, simulators, Planner(live), each
    )
    return {s.run.name: s.run for s in simulators}, actual


class Helper:
    """One replay in a forked process, its Run sent back through a pipe."""

    def __init__(self, work: Callable[[], Run]) -> None:
        context = multiprocessing.get_context("fork")
        self._results, sender = context.Pipe(duplex=False)
        self.process = context.Process(target=_work, args=(work, sender), daemon=True)
        self.process.start()
        sender.close()

    def result(self) -> Run:
        try:
            kind, value = self._results.recv()
        except EOFError:
            raise ValueError(
                f"the candidate's replay process ended without a result (exit {self.process.exitcode})"
            ) from None
        if kind == "error":
            raise ValueError(value)
        return value  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()


def _work(work: Callable[[], Run], sender: Connection) -> None:
    try:
        sender.send(("run", work()))
    except ValueError as exc:  # the logs: the parent finds the same and says it
        sender.send(("error", str(exc)))


def run(args: argparse.Namespace) -> int:
    live = config_of(args)
    try:
        candidate = load_config(args.candidate, shadow=False)
    except ConfigInvalid as exc:
        print(f"smtp-balancer: candidate config error: {exc}", file=sys.stderr)
        return 2
    plt = None
    if args.html:
        try:
            plt = pyplot()  # before the work, not after it
        except PlotsUnavailable as exc:
            print(f"smtp-balancer: {exc}", file=sys.stderr)
            return 1
    unread = Unread()
    progress = Progress(sys.stderr.isatty() and not args.json)
    host = args.host or this_host()  # whose logs these are: its daemons' endpoints only
    configs = {"live_replayed": live, "candidate": candidate}
    helper = None
    if jobs_of(args) == 2:
        # the candidate in a second process that reads the same logs: its model and draws
        # are the ones it has here (same seed, same replies), so its run is the same
        configs.pop("candidate")
        helper = Helper(
            lambda: replayed(args, live, {"candidate": candidate}, host, Unread())[0]["candidate"]
        )
    try:
        runs, actual = replayed(args, live, configs, host, unread, progress.step)
        if helper is not None:
            runs["candidate"] = helper.result()
    except NoDecisions:
        print("smtp-balancer: no decision lines that replay can use in these logs", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return 1
    finally:
        if helper is not None:
            helper.stop()
    progress.done()
    names = [r.name for r in applied_rules(candidate.feedback)]
    report = as_dict(actual, runs["live_replayed"], runs["candidate"], names, unread.reasons)
    text = render(report)
    print(json.dumps(report, indent=2) if args.json else text)
    if plt is not None:
        try:
            Path(args.html).write_text(as_html(report, text))
        except OSError as exc:
            print(f"smtp-balancer: cannot write {args.html}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    return 0
