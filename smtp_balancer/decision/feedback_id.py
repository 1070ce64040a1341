"""The Feedback-ID header's value, for Gmail's feedback loop. Sans I/O.

Gmail aggregates complaints by each colon-separated field of the header, the last
being the sender's own id; the fields come from the decision and the message's
tenant and class, never from the message's headers, so a sender cannot make its
complaints count under another tenant.
"""

from __future__ import annotations

import re

from smtp_balancer.decision.facts import Decision

UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
NONE = "none"


def feedback_id(fmt: str, sender_id: str, decision: Decision, message_class: str, tenant: str) -> str:
    """``fmt`` (``milter.feedback_id.format``) filled in; a field never holds a colon."""
    values = {
        "rule": decision.rule or NONE,
        "pool": decision.pool or NONE,
        "endpoint": decision.endpoint or decision.outcome or NONE,
        "tenant": tenant,
        "class": message_class,
        "sender_id": sender_id,
    }
    return fmt.format_map({k: UNSAFE.sub("-", v)[:64] or NONE for k, v in values.items()})
