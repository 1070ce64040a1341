"""Replay speed: a synthetic period's logs decided again, against the feedback
daemon's parser on the same MTA log, in the same run.

Writes N decision lines (the policy daemon's, as the real model decided them
under the test topology, out3 warming) and N Postfix delivery lines (a tenth of
Gmail's on out2 deferred with 421 4.7.28), then times:
  - baseline: the feedback daemon's line processing (``Processor.process``, parsing
    and rule matching, no Redis) over the MTA log;
  - replay: what ``smtp-balancer replay`` does, reading both logs, deciding each
    message under the live config and a candidate, and reporting.
Then it times the command itself, ``smtp-balancer replay --jobs 1`` and ``--jobs 2``
(the candidate in a second process), report included.
It prints messages/s for replay (target 20,000), lines/s for the baseline (over
the first 200,000 lines), the ratio, and the process's RSS after 100,000
messages, half of them and all of them: flat when the replay holds only its
look-ahead.

Bounded: N messages (default 1,000,000; about 4 minutes). Run: make bench-replay
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from integration.configs import deep_merge, topology
from integration.log_lines import decision_lines
from smtp_balancer.cli.main import main as cli_main
from smtp_balancer.cli.replay import attempt_stream, decision_stream, log_dialect
from smtp_balancer.config import validate_config
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.planner import Planner
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.processor import Processor
from smtp_balancer.feedback.responses import ResponseMatcher, builtin_rules
from smtp_balancer.replay.inputs import Message, Unread
from smtp_balancer.replay.period import replay_period
from smtp_balancer.replay.replies import ReplyModel
from smtp_balancer.replay.report import as_dict
from smtp_balancer.replay.simulate import Simulator

CHUNK = 10_000
DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "example.test")
START = datetime(2026, 11, 24, 0, 0, tzinfo=UTC).timestamp()
LIVE = deep_merge(
    {"mx_lookup": {"enabled": False}, **topology()},
    {"endpoints": {"out3": {"warmup": {"start": "2026-11-24", "schedule": [5000]}}}},
)


def rss_mb() -> float:
    """The process's resident memory now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_logs(folder: Path, n: int) -> tuple[Path, Path]:
    """The period's logs: one message every 50 ms, each with one delivery line, written
    in chunks (a million messages' lines are never all in memory)."""
    rng = random.Random(1)
    config = validate_config(LIVE)
    sim = Simulator(config, ReplyModel(), "actual")
    decisions, mail = folder / "policyd.log", folder / "mail.log"
    with decisions.open("w") as dfile, mail.open("w") as mfile:
        for first in range(0, n, CHUNK):
            decided, mta = [], []
            for i in range(first, min(n, first + CHUNK)):
                at = START + i * 0.05
                domain = DOMAINS[i % 4]
                facts = Facts(sender="news@shop.test", recipients=(f"u{i}@{domain}",), queue_id=f"{i:011X}")
                d = sim.decide(Message(at, facts.queue_id, facts, "", "", ""))
                decided.append((facts, d, at))
                if d.endpoint:
                    refused = d.endpoint == "out2" and domain == "gmail.com" and rng.random() < 0.1
                    status = (
                        "deferred (host x said: 421 4.7.28 rate limited)"
                        if refused
                        else "sent (250 2.0.0 OK)"
                    )
                    stamp = datetime.fromtimestamp(at + 0.3, UTC).strftime("%b %d %H:%M:%S")
                    mta.append(
                        f"{stamp} mta postfix/{d.endpoint}/smtp[9536]: {facts.queue_id}: to=<u{i}@{domain}>,"
                        f" relay={domain}[192.0.2.25]:25, delay=0.42, delays=0.01/0/0.2/0.21,"
                        f" dsn={'4.7.28' if refused else '2.0.0'}, status={status}\n"
                    )
            dfile.writelines(line + "\n" for line in decision_lines(decided))
            mfile.writelines(mta)
    return decisions, mail


def baseline(mail: Path, limit: int) -> float:
    """The feedback daemon's lines/s over the MTA log's first ``limit`` lines: parse,
    classify, match, count."""
    config = validate_config(LIVE)
    processor = Processor(
        ProviderTable.from_config(config), ResponseMatcher(builtin_rules()), set(config.endpoints)
    )
    with mail.open() as f:
        lines = [line for _, line in zip(range(limit), f, strict=False)]
    started = time.perf_counter()
    for i in range(0, len(lines), 500):  # the daemon's batches
        processor.process(lines[i : i + 500], f"b{i}", now=START)
    return len(lines) / (time.perf_counter() - started)


def replay(decisions: Path, mail: Path, rss_at: set[int]) -> tuple[float, int, dict[int, float]]:
    """What ``smtp-balancer replay`` does (its own readers and driver): messages/s,
    messages, and the RSS (MB) after each count of ``rss_at``."""
    live = validate_config(LIVE)
    candidate = validate_config(deep_merge(LIVE, {"pools": {"main": {"endpoints": [{"endpoint": "out1"}]}}}))
    started = time.perf_counter()
    unread = Unread()
    model = ReplyModel()
    sims = [Simulator(live, model, "live_replayed"), Simulator(candidate, model, "candidate")]
    seen, rss = [0], {}

    def each(message: Message) -> None:
        seen[0] += 1
        if seen[0] in rss_at:
            rss[seen[0]] = rss_mb()

    attempts = attempt_stream([str(mail)], log_dialect(live, "postfix"), 2026, unread)
    actual = replay_period(
        decision_stream([str(decisions)], unread), attempts, model, sims, Planner(live), each
    )
    as_dict(actual, sims[0].run, sims[1].run, [r.name for r in sims[1].response_rules], unread.reasons)
    return seen[0] / (time.perf_counter() - started), seen[0], rss


def command(folder: Path, decisions: Path, mail: Path, jobs: int) -> float:
    """``smtp-balancer replay --jobs N`` itself, in this process (its report to /dev/null):
    messages/s over the whole period, the second process included."""
    live = folder / "live.yaml"
    live.write_text(yaml.safe_dump(LIVE))
    candidate = folder / "candidate.yaml"
    candidate.write_text(
        yaml.safe_dump(deep_merge(LIVE, {"pools": {"main": {"endpoints": [{"endpoint": "out1"}]}}}))
    )
    argv = ["-c", str(live), "replay", "--candidate", str(candidate), "--decisions", str(decisions)]
    argv += ["--mta-log", str(mail), "--jobs", str(jobs), "--json"]
    started = time.perf_counter()
    with open(os.devnull, "w") as out, contextlib.redirect_stdout(out):
        if cli_main(argv) != 0:
            raise RuntimeError(f"smtp-balancer replay --jobs {jobs} failed")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    marks = {m for m in (100_000, args.messages // 2, args.messages) if m <= args.messages}
    with tempfile.TemporaryDirectory() as tmp:
        decisions, mail = write_logs(Path(tmp), args.messages)
        lines_s = baseline(mail, 200_000)
        rate, n, rss = replay(decisions, mail, marks)
        both = {jobs: n / command(Path(tmp), decisions, mail, jobs) for jobs in (1, 2)}
    print(f"replay: {n} messages, {rate:,.0f} messages/s (target 20,000), both configs decided")
    for jobs, per_s in both.items():
        print(f"smtp-balancer replay --jobs {jobs}: {per_s:,.0f} messages/s (the command, report included)")
    print(f"baseline: the feedback daemon's processing, {lines_s:,.0f} lines/s over the same MTA log")
    print(f"ratio replay/baseline: {rate / lines_s:.2f} (--jobs 2: {both[2] / lines_s:.2f})")
    print("RSS: " + ", ".join(f"{rss[m]:.0f} MB after {m:,} messages" for m in sorted(rss)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
