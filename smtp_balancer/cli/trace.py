"""``smtp-balancer trace``: one message's story from the logs, with what Redis says it caused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import redis

from smtp_balancer.cli.report import printable, reputation_about, reputation_line
from smtp_balancer.cli.tracing import Trace, Tracer, render
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.classify import BounceClassifier
from smtp_balancer.observe.status import Snapshot
from smtp_balancer.render.exim import transport_names
from smtp_balancer.state.feedback_store import REASON_QUOTE


def printable_lines(text: str) -> str:
    """Log text shown on a terminal: control characters escaped, line breaks kept."""
    return "\n".join(printable(line) for line in text.splitlines())


# the shipped units' SyslogIdentifier: where journald keeps the decision lines
JOURNAL_IDENTIFIERS = ("smtp-balancer-policyd", "smtp-balancer-milter")


def journal_lines(journal_file: str | None) -> Iterator[str]:
    """The daemons' lines from journald (or from a journal file), oldest first.
    Nothing where there is no journalctl; a named file that cannot be read is an error."""
    cmd = ["journalctl", "--quiet", "--output=cat", "--no-pager"]
    if journal_file:
        cmd.append(f"--file={journal_file}")
    for identifier in JOURNAL_IDENTIFIERS:
        cmd += ["--identifier", identifier]
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
        )
    except FileNotFoundError:
        if journal_file:
            raise ValueError(f"cannot read journal {journal_file}: journalctl is not installed") from None
        return
    assert proc.stdout is not None and proc.stderr is not None
    with proc:
        yield from proc.stdout
        problem = proc.stderr.read().strip()
    if journal_file and proc.returncode != 0:
        why = problem or f"journalctl exit {proc.returncode}"
        raise ValueError(f"cannot read journal {journal_file}: {why}")


def trace(
    config: BalancerConfig,
    wanted: str,
    logs: list[str],
    as_json: bool,
    snapshot: Callable[[], Snapshot],
    journal: bool = True,
    journal_file: str | None = None,
) -> int:
    """Without ``logs``: feedback.log_file (the MTA's) and the daemons' journal, where
    each is; with them, those logs only, and a ``journal_file`` if one is named."""
    paths = logs or [config.feedback.log_file]
    use_journal = bool(journal_file) or (journal and not logs)
    stdin = sys.stdin.read().splitlines() if "-" in paths else []

    def lines() -> Iterator[str]:
        for path in paths:
            if path == "-":
                yield from stdin
                continue
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    yield from f
            except OSError as exc:
                if logs or not use_journal:
                    raise ValueError(f"cannot read log {path}: {exc.strerror}") from exc
        if use_journal:
            yield from journal_lines(journal_file)

    tracer = Tracer(
        ProviderTable.from_config(config),
        BounceClassifier.from_config(config.feedback),
        transport_names(config),
    )
    ids, message_id = tracer.find_ids(wanted, lines())
    found = Trace(wanted, sorted(ids), message_id)
    tracer.collect(found, ids, lines())
    quotes = {" ".join(a.response.split())[:REASON_QUOTE] for a in found.attempts if a.status != "sent"}
    routes = {d["endpoint"] for d in found.decisions if d.get("endpoint")} | {
        a.endpoint for a in found.attempts
    }
    senders = [d["sender_domain"] for d in found.decisions if d.get("sender_domain")]
    if quotes or routes or senders:
        try:
            taken = snapshot()
            records = reputation_about(taken.reputation, routes, None, senders[-1] if senders else "")
            found.reputation = [reputation_line(r) for r in records]
            for ep in taken.endpoints.values() if quotes else ():
                for sus in ep.suspensions:
                    if any(q and q in sus.reason for q in quotes):
                        found.suspensions.append(f"suspension {ep.name}/{sus.provider}: {sus.reason}")
                if ep.state != "active" and any(q and q in ep.reason for q in quotes):
                    found.suspensions.append(f"{ep.state} {ep.name}: {ep.reason}")
        except redis.RedisError as exc:
            found.suspensions.append(
                f"(Redis unreachable, suspensions and reputation not shown: {type(exc).__name__})"
            )
    print(found.as_json() if as_json else printable_lines(render(found)))
    return 0 if ids else 1
