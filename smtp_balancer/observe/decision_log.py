"""One log line per decision, the same from the policy daemon and the milter.

The line carries the decision id that the milter's info header also shows, and
the MTA's queue id, so a message can be followed from the header to the
decision and on to the MTA's delivery lines.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.decision.providers import domain_of
from smtp_balancer.observe.lines import Deferred, Event, enabled, writer_for
from smtp_balancer.observe.logfmt import Tail, logfmt_text, logfmt_value

log: Final = logging.getLogger("smtp_balancer.decision")

MAX_DOMAINS: Final = 20  # rcpt_domains names this many domains at most: a line stays short


# a domain as a recipient address can give it: anything else is written "?", so that
# no client's address can forge the list's commas, counts or "+"
_DOMAIN: Final = re.compile(r"[a-z0-9._:\[\]-]+")


_checked: Final[dict[str, str]] = {}  # domain -> as written; recipients' domains repeat
CHECKED_MAX: Final = 4096


def _domain(recipient: str) -> str:
    domain = domain_of(recipient)
    written = _checked.get(domain)
    if written is None:
        written = domain if _DOMAIN.fullmatch(domain) else "?"
        if len(domain) <= 253:  # a DNS name's most: a client's junk is not kept
            if len(_checked) >= CHECKED_MAX:  # bounded: cleared when full
                _checked.clear()
            _checked[domain] = written
    return written


def encode_domains(recipients: Sequence[str]) -> str:
    """``rcpt_domains``: each domain once, in first-seen order, with its count past 1."""
    if len(recipients) == 1:
        return _domain(recipients[0])
    counts = Counter(_domain(r) for r in recipients)
    named = list(counts.items())[:MAX_DOMAINS]
    parts = [domain if n == 1 else f"{domain}*{n}" for domain, n in named]
    if len(counts) > MAX_DOMAINS:
        parts.append(f"+{len(recipients) - sum(n for _, n in named)}")
    return ",".join(parts)


def decode_domains(text: str) -> tuple[list[tuple[str, int]], int]:
    """``rcpt_domains`` back: (domain, recipients) pairs, and the recipients not named.
    Raises ValueError for a value no daemon writes."""
    pairs: list[tuple[str, int]] = []
    rest = 0
    for part in text.split(",") if text else ():
        if part.startswith("+") and part[1:].isdigit() and part[1:].isascii():
            rest += int(part[1:])
            continue
        domain, star, count = part.partition("*")
        if not domain or (star and not (count.isdigit() and count.isascii() and int(count) > 0)):
            raise ValueError(f"not a recipient domain list: {text[:80]!r}")
        pairs.append((domain, int(count) if star else 1))
    return pairs, rest


# every field of the line, after ts, level, logger and msg=decision: what it says
# (docs/reference/logs.md is generated from this; tests check the line has these)
FIELDS = {
    "decision_id": "16 random hex digits; the milter's info header (`milter.info_header`) carries it too",
    "via": "who decided: `policyd` or `milter`",
    "queue_id": "the MTA's queue id, which its own delivery lines carry (absent when not known yet)",
    "sender_domain": "the envelope sender's domain (empty for the null sender)",
    "rcpt_domains": "the recipients' domains in first-seen order, `*N` after one with N recipients"
    f" (`gmail.com*2,yahoo.com`); past {MAX_DOMAINS} domains, `+N` counts the other recipients",
    "size": "the message size in bytes, as the MTA declared it (empty when not known)",
    "draw": "the message's uniform value in [0, 1), which chose among the weights: a replay of the"
    " log decides with it again (empty when no rule matched)",
    "outcome": "`route`, `default` (the MTA's default transport), `defer`, `no_rule` or `inbound`",
    "rule": "the rule that matched",
    "pool": "the pool the endpoint was drawn from",
    "endpoint": "the endpoint picked (empty when none was)",
    "degraded": "`true` when decided without Redis, from the YAML alone",
    "nrcpt": "recipients counted against caps",
    "reason": "why this route: `weighted draw`, a spill, every endpoint capped, ...",
    "experiment": "in an experiment: its name",
    "arm": "in an experiment: the arm the message drew",
    "shadow_outcome": "shadow mode: the outcome under the candidate config (`shadow.config`), never acted on",
    "shadow_rule": "shadow mode: the rule that matched under the candidate",
    "shadow_pool": "shadow mode: the pool the candidate drew from",
    "shadow_endpoint": "shadow mode: the endpoint the candidate picked (empty when none)",
    "shadow_reason": "shadow mode: why the candidate chose so",
    "action": "policy daemon: the answer sent to the MTA (`FILTER out2:`, `DUNNO`)",
    "message_class": "the message class (milter: from the message; policy daemon: Exim's header attributes)",
}


def log_decision(via: str, facts: Facts, decision: Decision, **more: Any) -> None:
    """``via``: policyd or milter. ``more``: what only that caller knows (action, class)."""
    if not enabled(log, logging.INFO):
        return
    line = DecisionLine(via, facts, decision, more)
    writer = writer_for(log)
    if writer is not None:
        writer.defer(line)  # rendered with the next ones (lines.DEFER_MAX)
        return
    _, _, msg, ids, tail, _ = line.event()
    log.info(msg, extra={"fields": {**ids, **dict(tail)}})


class DecisionLine(Deferred):
    """A decision's line, unrendered. It renders the same later: nothing changes a
    Facts or a Decision once made (``dataclasses.replace`` makes new ones), and
    ``more`` is the caller's own keyword dict of strings."""

    def __init__(self, via: str, facts: Facts, decision: Decision, more: dict[str, Any]) -> None:
        self.via = via
        self.facts = facts
        self.decision = decision
        self.more = more

    def event(self) -> Event:
        facts, decision, via = self.facts, self.decision, self.via
        tail: Tail = (
            ("outcome", decision.outcome),
            ("rule", decision.rule),
            ("pool", decision.pool),
            ("endpoint", decision.endpoint),
            ("degraded", decision.degraded),
            ("nrcpt", facts.quota_count),
            ("reason", decision.reason),
        )
        if decision.arm:
            tail += (("experiment", decision.experiment), ("arm", decision.arm))
        if (shadow := decision.shadow) is not None:
            tail += (
                ("shadow_outcome", shadow.outcome),
                ("shadow_rule", shadow.rule),
                ("shadow_pool", shadow.pool),
                ("shadow_endpoint", shadow.endpoint),
                ("shadow_reason", shadow.reason),
            )
        if self.more:
            tail += tuple(self.more.items())
        # what varies per message first; the rest repeats, and is rendered once (Tail)
        queue_id = facts.queue_id or None
        sender_domain = facts.sender_domain
        rcpt_domains = encode_domains(facts.recipients)
        ids = {
            "decision_id": decision.decision_id,
            "via": via,
            "queue_id": queue_id,
            # what replaying the log needs of the message (``smtp-balancer replay``)
            "sender_domain": sender_domain,
            "rcpt_domains": rcpt_domains,
            "size": facts.size,
            "draw": decision.r,
        }
        rendered = render_ids(
            decision.decision_id, via, queue_id, sender_domain, rcpt_domains, facts.size, decision.r
        )
        return logging.INFO, log.name, "decision", ids, tail, rendered


def render_ids(
    decision_id: str,
    via: str,
    queue_id: str | None,
    sender_domain: str,
    rcpt_domains: str,
    size: int | None,
    draw: float | None,
) -> str:
    """The line's per-message fields as ``render_pairs`` renders them, in one step
    (their keys need no cleaning; tests compare the two)."""
    return (
        f"decision_id={logfmt_text(decision_id)} via={logfmt_text(via)} queue_id={logfmt_value(queue_id)}"
        f" sender_domain={logfmt_text(sender_domain)} rcpt_domains={logfmt_text(rcpt_domains)}"
        f" size={logfmt_value(size)} draw={logfmt_value(draw)}"
    )
