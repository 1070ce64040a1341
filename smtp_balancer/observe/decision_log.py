"""One log line per decision, the same from the policy daemon and the milter.

The line carries the decision id that the milter's info header also shows, and
the MTA's queue id, so a message can be followed from the header to the
decision and on to the MTA's delivery lines.
"""

from __future__ import annotations

import logging
from typing import Any

from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.observe.logs import Tail, event

log = logging.getLogger("smtp_balancer.decision")

# every field of the line, after ts, level, logger and msg=decision: what it says
# (docs/reference/logs.md is generated from this; tests check the line has these)
FIELDS = {
    "decision_id": "16 random hex digits; the milter's info header (`milter.info_header`) carries it too",
    "via": "who decided: `policyd` or `milter`",
    "queue_id": "the MTA's queue id, which its own delivery lines carry (absent when not known yet)",
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
    # what varies per message first; the rest repeats, and is rendered once (Tail)
    ids = {"decision_id": decision.decision_id, "via": via, "queue_id": facts.queue_id or None}
    event(log, logging.INFO, "decision", ids, tail + tuple(more.items()) if more else tail)
