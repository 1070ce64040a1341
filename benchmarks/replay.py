"""Replay speed: a synthetic period's logs decided again, against the feedback
daemon's parser on the same MTA log, in the same run.

Writes N decision lines (the policy daemon's, as the real model decided them
under the test topology, out3 warming) and N Postfix delivery lines (a tenth of
Gmail's on out2 deferred with 421 4.7.28), then times:
  - baseline: the feedback daemon's line processing (``Processor.process``, parsing
    and rule matching, no Redis) over the MTA log;
  - replay: what ``smtp-balancer replay`` does, reading both logs, deciding each
    message under the live config and a candidate, and reporting.
It prints messages/s for replay (target 20,000), lines/s for the baseline, the
ratio, and the process RSS after reading and at the end.

Bounded: N messages (default 100,000). Run: make bench-replay
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integration.configs import deep_merge, topology
from integration.log_lines import decision_lines
from smtp_balancer.config import validate_config
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.planner import Planner
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.dialects import PostfixDialect
from smtp_balancer.feedback.processor import Processor
from smtp_balancer.feedback.responses import ResponseMatcher, builtin_rules
from smtp_balancer.replay.inputs import Message, Unread, attempt_of, message_of
from smtp_balancer.replay.replies import ReplyModel
from smtp_balancer.replay.report import as_dict
from smtp_balancer.replay.simulate import Simulator, actual_volumes

DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "example.test")
START = datetime(2026, 11, 24, 0, 0, tzinfo=UTC).timestamp()
LIVE = deep_merge(
    {"mx_lookup": {"enabled": False}, **topology()},
    {"endpoints": {"out3": {"warmup": {"start": "2026-11-24", "schedule": [5000]}}}},
)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_logs(folder: Path, n: int) -> tuple[Path, Path]:
    """The period's logs: one message every 50 ms, each with one delivery line."""
    rng = random.Random(1)
    config = validate_config(LIVE)
    sim = Simulator(config, ReplyModel([]), "actual")
    decided, mta = [], []
    for i in range(n):
        at = START + i * 0.05
        facts = Facts(sender="news@shop.test", recipients=(f"u{i}@{DOMAINS[i % 4]}",), queue_id=f"{i:011X}")
        d = sim.decide(Message(at, facts.queue_id, facts, "", "", ""))
        decided.append((facts, d, at))
        if d.endpoint:
            domain = DOMAINS[i % 4]
            refused = d.endpoint == "out2" and domain == "gmail.com" and rng.random() < 0.1
            status = "deferred (host x said: 421 4.7.28 rate limited)" if refused else "sent (250 2.0.0 OK)"
            stamp = datetime.fromtimestamp(at + 0.3, UTC).strftime("%b %d %H:%M:%S")
            mta.append(
                f"{stamp} mta postfix/{d.endpoint}/smtp[9536]: {facts.queue_id}: to=<u{i}@{domain}>,"
                f" relay={domain}[192.0.2.25]:25, delay=0.42, delays=0.01/0/0.2/0.21,"
                f" dsn={'4.7.28' if refused else '2.0.0'}, status={status}"
            )
    decisions, mail = folder / "policyd.log", folder / "mail.log"
    decisions.write_text("\n".join(decision_lines(decided)) + "\n")
    mail.write_text("\n".join(mta) + "\n")
    return decisions, mail


def baseline(mail: Path) -> float:
    """The feedback daemon's lines/s over the MTA log: parse, classify, match, count."""
    config = validate_config(LIVE)
    processor = Processor(
        ProviderTable.from_config(config), ResponseMatcher(builtin_rules()), set(config.endpoints)
    )
    lines = mail.read_text().splitlines()
    started = time.perf_counter()
    for i in range(0, len(lines), 500):  # the daemon's batches
        processor.process(lines[i : i + 500], f"b{i}", now=START)
    return len(lines) / (time.perf_counter() - started)


def replay(decisions: Path, mail: Path) -> tuple[float, int, float]:
    """As ``smtp-balancer replay`` does it: messages/s, messages, RSS after reading (MB)."""
    live = validate_config(LIVE)
    candidate = validate_config(deep_merge(LIVE, {"pools": {"main": {"endpoints": [{"endpoint": "out1"}]}}}))
    started = time.perf_counter()
    unread = Unread()
    with decisions.open() as f:
        messages = [m for line in f if (m := message_of(line, unread)) is not None]
    messages.sort(key=lambda m: m.at)
    dialect = PostfixDialect(ProviderTable.from_config(live))
    with mail.open() as f:
        attempts = [a for line in f if (a := attempt_of(line, dialect, 2026, UTC, unread)) is not None]
    read_mb = rss_mb()
    replies = ReplyModel(attempts)
    live_run = Simulator(live, replies, "live_replayed").replay(messages)
    cand = Simulator(candidate, replies.again(1), "candidate")
    cand_run = cand.replay(messages)

    as_dict(
        actual_volumes(messages, Planner(live)),
        live_run,
        cand_run,
        [r.name for r in cand.response_rules],
        unread.reasons,
    )
    return len(messages) / (time.perf_counter() - started), len(messages), read_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        decisions, mail = write_logs(Path(tmp), args.messages)
        lines_s = baseline(mail)
        rate, n, read_mb = replay(decisions, mail)
    print(f"replay: {n} messages, {rate:,.0f} messages/s (target 20,000), both configs decided")
    print(f"baseline: the feedback daemon's processing, {lines_s:,.0f} lines/s over the same MTA log")
    print(f"ratio replay/baseline: {rate / lines_s:.2f}")
    print(f"RSS: {read_mb:.0f} MB after reading the logs, {rss_mb():.0f} MB at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
