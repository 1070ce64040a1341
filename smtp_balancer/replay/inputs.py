"""What replay reads, sans I/O: decision lines become messages with their facts and
time; the MTA log's delivery lines become timed attempts.

A decision line gives the message's time, its sender's domain, its recipients'
domains and counts, its size and the route it actually got. Replay cannot know
the full addresses: each recipient becomes ``r<N>@<domain>`` and the sender
``replay@<domain>``, so rules on whole addresses, client addresses or SASL names,
and stickiness by recipient or sender address, are not reproduced.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from smtp_balancer.decision.facts import Facts
from smtp_balancer.feedback.delivery_log import Delivery, LogLineError
from smtp_balancer.feedback.dialects import LogDialect
from smtp_balancer.observe.decision_log import decode_domains
from smtp_balancer.observe.log_reader import parse_fields
from smtp_balancer.state.values import parse_int

NUMBER_DIGITS = 15


@dataclass(slots=True, init=False)
class Message:
    """Not frozen, and its own __init__: see decision/facts.py."""

    at: float  # epoch seconds of the decision
    queue_id: str
    facts: Facts
    outcome: str  # what it actually got
    endpoint: str
    rule: str
    r: float | None = None  # the draw it actually had: replay decides with it again

    def __init__(
        self,
        at: float,
        queue_id: str,
        facts: Facts,
        outcome: str,
        endpoint: str,
        rule: str,
        r: float | None = None,
    ) -> None:
        self.at = at
        self.queue_id = queue_id
        self.facts = facts
        self.outcome = outcome
        self.endpoint = endpoint
        self.rule = rule
        self.r = r


@dataclass
class Unread:
    """Lines that were not used, by why: counted and reported, never fatal."""

    reasons: Counter[str] = field(default_factory=Counter)

    def note(self, why: str) -> None:
        self.reasons[why] += 1


def message_of(line: str, unread: Unread) -> Message | None:
    """A decision line's message; None (and a count in ``unread``) for any other line."""
    fields = parse_fields(line)
    if fields is None:
        unread.note("not a structured log line")
        return None
    if fields.get("msg") != "decision":
        unread.note("not a decision line")
        return None
    if "rcpt_domains" not in fields or "sender_domain" not in fields:
        unread.note("decision line without rcpt_domains (written by a release before replay)")
        return None
    # reason is the last field every decision line has: without it (or an outcome, or
    # a routed message's endpoint) the line was cut short or edited
    if (
        "reason" not in fields
        or not fields.get("outcome")
        or (fields["outcome"] == "route" and not fields.get("endpoint"))
    ):
        unread.note("decision line cut short or missing fields (outcome, endpoint, reason)")
        return None
    try:
        at = datetime.fromisoformat(fields.get("ts", "")).timestamp()
        pairs, rest = decode_domains(fields["rcpt_domains"])
    except ValueError:
        unread.note("decision line with a bad ts or rcpt_domains")
        return None
    sender_domain = fields["sender_domain"]
    recipients = tuple(f"r{i}@{domain}" for domain, n in pairs for i in range(n))
    nrcpt = parse_int(fields.get("nrcpt"), NUMBER_DIGITS)
    facts = Facts(
        sender=f"replay@{sender_domain}" if sender_domain else "",
        recipients=recipients,
        size=parse_int(fields.get("size"), NUMBER_DIGITS),
        message_class=fields.get("message_class") or None,
        queue_id=fields.get("queue_id", ""),
        recipient_count=max(nrcpt or 0, len(recipients) + rest) or None,
    )
    return Message(
        at,
        facts.queue_id,
        facts,
        fields.get("outcome", ""),
        fields.get("endpoint", ""),
        fields.get("rule", ""),
        _draw(fields.get("draw", "")),
    )


def _draw(text: str) -> float | None:
    """A logged draw: a number in [0, 1); anything else is no draw (a fresh one is made)."""
    try:
        r = float(text)
    except ValueError:
        return None
    return r if 0.0 <= r < 1.0 else None


@dataclass(slots=True, init=False)
class Attempt:
    """Not frozen, and its own __init__: see decision/facts.py."""

    at: float  # epoch seconds, to the second the MTA logs
    delivery: Delivery

    def __init__(self, at: float, delivery: Delivery) -> None:
        self.at = at
        self.delivery = delivery


_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}


_CLASSIC: dict[tuple[str, int, timezone], float] = {}  # classic stamps read: a log repeats each second's


def stamp_of(line: str, year: int, zone: timezone) -> float | None:
    """The time at the start of an MTA log line: ``2026-12-05 16:44:43`` (Exim),
    ``2026-12-05T16:44:43.123+00:00`` (ISO syslog) or ``Dec  5 16:44:43`` (classic
    syslog, Postfix's maillog_file; ``year`` and ``zone`` complete it). A stamp in whole
    seconds gives the middle of its second: half a second off at most."""
    if not line[:4].isdigit():
        return _classic_stamp(line[:15], year, zone)
    try:
        head = line[:32].split(" ", 2)
        at = datetime.fromisoformat(head[0] if "T" in head[0] else f"{head[0]} {head[1]}")
    except (ValueError, IndexError):
        return None
    seconds = (at if at.tzinfo else at.replace(tzinfo=zone)).timestamp()
    return seconds if at.microsecond or "." in head[0] else seconds + 0.5


def _classic_stamp(text: str, year: int, zone: timezone) -> float | None:
    """``Dec  5 16:44:43`` as the middle of its second, read once per second of the log."""
    known = _CLASSIC.get((text, year, zone))
    if known is not None:
        return known
    try:
        month, day, clock = text.split()
        hh, mm, ss = (int(x) for x in clock.split(":"))
        at = datetime(year, _MONTHS[month], int(day), hh, mm, ss, tzinfo=zone)
    except (ValueError, KeyError):
        return None
    if len(_CLASSIC) >= 4096:
        _CLASSIC.clear()
    _CLASSIC[(text, year, zone)] = seconds = at.timestamp() + 0.5
    return seconds


def attempt_of(line: str, dialect: LogDialect, year: int, zone: timezone, unread: Unread) -> Attempt | None:
    """A delivery line's attempt; None for any other line (garbage is counted)."""
    if not dialect.maybe_delivery(line):
        return None
    try:
        delivery = dialect.parse(line)
    except LogLineError:
        unread.note("MTA log line that looks like a delivery but does not parse")
        return None
    if delivery is None:
        return None
    at = stamp_of(line, year, zone)
    if at is None:
        unread.note("MTA delivery line without a time")
        return None
    return Attempt(at, delivery)
