"""``smtp-balancer fbl``: take ARF reports from stdin (a pipe transport) or a Maildir.

Nothing is lost: a report that cannot be used is kept (a file in
``feedback.complaints.keep_dir`` for stdin; flagged in the Maildir's cur/) and
counted. A complaint that cannot be counted because Redis is away exits 75
(EX_TEMPFAIL), so the MTA keeps the message and retries; a Maildir file stays
in new/ for the next run.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import redis

from smtp_balancer.complaints.arf import ReportError, parse_report
from smtp_balancer.complaints.attribute import Attribution, Attributor
from smtp_balancer.complaints.store import ComplaintStore
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.state.rates import RateResult

log = logging.getLogger("smtp_balancer.fbl")
EX_OK = 0
EX_TEMPFAIL = 75  # sysexits.h: Postfix and Exim defer the message and retry
CHUNK = 1 << 16


@dataclass(frozen=True)
class Outcome:
    result: str  # one of complaints.store.RESULTS
    why: str
    attribution: Attribution | None = None
    queue_ids: tuple[str, ...] = ()  # of the original message's Received headers

    @property
    def usable(self) -> bool:
        return self.result in ("complaint", "not_counted")


class Intake:
    def __init__(self, attributor: Attributor, store: ComplaintStore, feedback_types: list[str]) -> None:
        self.attributor = attributor
        self.store = store
        self.feedback_types = frozenset(feedback_types)

    def judge(self, raw: bytes, size: int, limit: int) -> Outcome:
        """What one report is; pure apart from parsing. ``size``: its whole length."""
        if size > limit:
            return Outcome("too_large", f"{size} bytes, above max_report_bytes ({limit})")
        try:
            report = parse_report(raw)
        except ReportError as exc:
            return Outcome(exc.kind, str(exc))
        except Exception as exc:  # the email package on hostile input: keep it, never crash
            return Outcome("malformed", f"unparsable ({type(exc).__name__}: {str(exc)[:120]})")
        attribution = self.attributor.attribute(report)
        # a report about mail from an address that is none of ours is kept whatever its
        # type: a wrong Source-IP, or an endpoint missing from the config, is to be looked at
        if attribution.endpoint is None:
            return Outcome(
                "unattributed",
                f"Source-IP {report.source_ip} is none of our endpoints"
                f" (Feedback-Type {report.feedback_type})",
                attribution,
            )
        if report.feedback_type not in self.feedback_types:
            return Outcome("not_counted", f"Feedback-Type {report.feedback_type}", attribution)
        return Outcome(
            "complaint", f"from {report.reporter or 'an unnamed reporter'}", attribution, report.queue_ids
        )

    def count(self, outcome: Outcome) -> Counted:
        """Record the outcome in Redis, run the complaint rate rules and the tenant hold
        (RedisError propagates)."""
        if outcome.result != "complaint" or outcome.attribution is None:
            self.store.record(outcome.result, outcome.attribution)
            return Counted()
        arm = self.store.arm_of(outcome.queue_ids)
        self.store.record(outcome.result, outcome.attribution, arm)
        rates = self.store.evaluate(outcome.attribution)
        return Counted(arm, rates, self.store.hold_tenant(outcome.attribution))


@dataclass(frozen=True)
class Counted:
    """What counting a report did: its experiment arm, the rate rules run, a tenant hold."""

    arm: tuple[str, str] | None = None
    rates: list[RateResult] = field(default_factory=list)
    held: str = ""


def describe(
    outcome: Outcome, rates: list[RateResult], arm: tuple[str, str] | None = None, held: str = ""
) -> str:
    a = outcome.attribution
    where = f" {a.endpoint or '-'}/{a.provider} tenant {a.tenant}" if a else ""
    line = f"{outcome.result}{where}: {outcome.why}"
    if arm is not None:
        line += f"; experiment {arm[0]} arm {arm[1]}"
    for r in rates:
        line += f"; rule {r.rule}: {r.rate_percent:.2f}% of {r.attempts} delivered, {r.outcome}"
        if r.outcome == "tripped":
            line += f" ({r.action} {r.endpoint} for {r.scope})"
    return f"{line}; {held}" if held else line


def unique_name() -> str:
    """A Maildir-style file name: unique per host, process and moment."""
    return f"{time.time_ns()}.P{os.getpid()}R{os.urandom(4).hex()}.{socket.gethostname()}"


def read_stdin(stream: BinaryIO, limit: int, keep_dir: Path) -> tuple[bytes, int, Path | None]:
    """Up to limit+1 bytes in memory; a larger report is streamed to a kept file whole."""
    head = stream.read(limit + 1)
    if len(head) <= limit:
        return head, len(head), None
    size = len(head)

    def rest() -> Iterator[bytes]:
        nonlocal size
        yield head
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            yield chunk

    path = keep(rest(), keep_dir, "too_large")
    return b"", size, path


def keep(chunks: Iterable[bytes], keep_dir: Path, result: str) -> Path:
    """Write the report where an operator can inspect it: synced, then renamed into
    place, so a partial file never shows; readable by its owner and group only (a
    report quotes recipients' addresses)."""
    keep_dir.mkdir(parents=True, exist_ok=True)
    name = f"{unique_name()}.{result}"
    tmp = keep_dir / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    final = keep_dir / name
    tmp.rename(final)
    return final


def take_stdin(intake: Intake, stream: BinaryIO, limit: int, keep_dir: Path, keep_all: bool) -> int:
    try:
        raw, size, kept = read_stdin(stream, limit, keep_dir)
        outcome = intake.judge(raw, size, limit)
        if kept is None and (keep_all or not outcome.usable):
            kept = keep([raw], keep_dir, outcome.result)
    except OSError as exc:
        print(
            f"smtp-balancer fbl: cannot keep the report in {keep_dir}: {exc}; try again later",
            file=sys.stderr,
        )
        return EX_TEMPFAIL
    where = f" (kept as {kept})" if kept else ""
    try:
        counted = intake.count(outcome)
    except redis.RedisError as exc:
        if outcome.result == "complaint":
            print(
                f"smtp-balancer fbl: Redis: {type(exc).__name__}: {exc}; the complaint waits for a retry",
                file=sys.stderr,
            )
            return EX_TEMPFAIL
        # an unusable report is safe on disk: only its counter is lost
        log.error("Redis: %s; %s report not counted%s", exc, outcome.result, where)
        counted = Counted()
    _report(outcome, counted, where)
    return EX_OK


def maildir_files(root: Path) -> Iterator[Path]:
    new = root / "new"
    if not new.is_dir():
        raise ValueError(f"{root} is not a Maildir (no new/ directory)")
    yield from sorted(p for p in new.iterdir() if p.is_file() and not p.name.startswith("."))


def take_maildir(intake: Intake, root: Path, limit: int) -> int:
    """Each file of new/ is judged, counted, then moved to cur/ (flagged F when unusable)."""
    done = 0
    files = list(maildir_files(root))
    (root / "cur").mkdir(exist_ok=True)
    for path in files:
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                raw = f.read(limit + 1) if size <= limit else b""
        except OSError as exc:
            log.error("cannot read %s: %s; skipped", path, exc)
            continue
        outcome = intake.judge(raw, size, limit)
        try:
            counted = intake.count(outcome)
        except redis.RedisError as exc:
            print(
                f"smtp-balancer fbl: Redis: {type(exc).__name__}: {exc}; {path.name} and later stay in new/",
                file=sys.stderr,
            )
            return EX_TEMPFAIL
        flags = "S" if outcome.usable else "FS"  # Flagged: look at it
        target = root / "cur" / f"{path.name.partition(':')[0]}:2,{flags}"
        try:
            path.rename(target)
        except OSError as exc:  # counted, but the next run would count it again: say so
            log.error("cannot move %s to cur/ (%s): move it by hand, or it is counted twice", path, exc)
            continue
        _report(outcome, counted, "" if outcome.usable else f" (kept as {target})")
        done += 1
    print(f"smtp-balancer fbl: {done} report{'s' if done != 1 else ''} read from {root}")
    return EX_OK


def _report(outcome: Outcome, counted: Counted, where: str) -> None:
    line = describe(outcome, counted.rates, counted.arm, counted.held) + where
    print(line)
    level = logging.INFO if outcome.usable else logging.WARNING
    log.log(level, "report %s", line)


def run(config: BalancerConfig, maildir: str | None, stdin: BinaryIO) -> int:
    from smtp_balancer.state.client import sync_client

    fbl = config.feedback.complaints
    client = sync_client(config.redis)
    try:
        intake = Intake(Attributor(config), ComplaintStore(client, config), list(fbl.feedback_types))
        if maildir is not None:
            return take_maildir(intake, Path(maildir), fbl.max_report_bytes)
        return take_stdin(intake, stdin, fbl.max_report_bytes, Path(fbl.keep_dir), fbl.keep == "all")
    finally:
        client.close()
