"""``smtp-balancer replay``: the decision log and the MTA log of a period decided
again under the live config (``-c``) and a candidate, in simulated time, never
touching Redis (``smtp_balancer/replay``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime

from smtp_balancer.cli.common import config_of, log_lines
from smtp_balancer.config import ConfigInvalid, load_config
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.planner import Planner
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.engine.plumbing import foreign_endpoints, this_host
from smtp_balancer.feedback.dialects import LogDialect, dialect_for
from smtp_balancer.render.exim import transport_names
from smtp_balancer.replay.inputs import Attempt, Message, Unread, attempt_of, message_of
from smtp_balancer.replay.replies import ReplyModel
from smtp_balancer.replay.report import as_dict, render
from smtp_balancer.replay.simulate import Simulator, actual_volumes

PROGRESS_EVERY = 20_000


class Progress:
    """A line on a terminal (messages read, simulated time reached, rate); silent otherwise."""

    def __init__(self, on: bool) -> None:
        self.on, self.started, self.count = on, time.monotonic(), 0

    def step(self, what: str, at: float) -> None:
        self.count += 1
        if self.on and self.count % PROGRESS_EVERY == 0:
            rate = self.count / max(time.monotonic() - self.started, 1e-9)
            when = datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")
            print(f"\r{what}: {self.count} messages, at {when}, {rate:,.0f}/s", end="", file=sys.stderr)

    def done(self) -> None:
        if self.on and self.count >= PROGRESS_EVERY:
            print(file=sys.stderr)


def _dialect(config: BalancerConfig, mta: str) -> LogDialect:
    return dialect_for(ProviderTable.from_config(config), transport_names(config) if mta == "exim" else None)


def run(args: argparse.Namespace) -> int:
    live = config_of(args)
    try:
        candidate = load_config(args.candidate, shadow=False)
    except ConfigInvalid as exc:
        print(f"smtp-balancer: candidate config error: {exc}", file=sys.stderr)
        return 2
    unread = Unread()
    try:
        messages = [m for line in log_lines(args.decisions) if (m := message_of(line, unread)) is not None]
        messages.sort(key=lambda m: m.at)
        if not messages:
            print("smtp-balancer: no decision lines that replay can use in these logs", file=sys.stderr)
            return 1
        year = datetime.fromtimestamp(messages[0].at).year
        zone = datetime.now().astimezone().tzinfo
        dialect = _dialect(live, args.mta)
        attempts: list[Attempt] = [
            a
            for line in log_lines(args.mta_log)
            if (a := attempt_of(line, dialect, year, zone, unread)) is not None  # type: ignore[arg-type]
        ]
    except ValueError as exc:
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return 1
    replies = ReplyModel(attempts, seed=args.seed)
    progress = Progress(sys.stderr.isatty() and not args.json)

    def shown(name: str) -> Iterator[Message]:
        for m in messages:
            progress.step(name, m.at)
            yield m

    host = args.host or this_host()  # whose logs these are: its daemons' endpoints only
    live_sim = Simulator(live, replies, "live_replayed", args.seed, foreign_endpoints(live, host))
    live_run = live_sim.replay(shown("live"))
    cand = Simulator(
        candidate,
        ReplyModel(attempts, seed=args.seed),
        "candidate",
        args.seed,
        foreign_endpoints(candidate, host),
    )
    cand_run = cand.replay(shown("candidate"))
    progress.done()
    actual = actual_volumes(messages, Planner(live))
    names = [r.name for r in cand.response_rules]
    report = as_dict(actual, live_run, cand_run, names, unread.reasons)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0
