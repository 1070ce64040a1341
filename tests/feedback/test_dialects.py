"""The two log dialects, chosen once per daemon: each reads only its own MTA's lines."""

from __future__ import annotations

from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.dialects import EximDialect, PostfixDialect

PROVIDERS = ProviderTable.build()
POSTFIX_SENT = (
    "Nov 24 02:48:11 mta postfix/out2/smtp[1]: ABC1: to=<bob@gmail.com>, relay=gmail-smtp-in.l.google.com"
    "[192.0.2.1]:25, delay=0.5, delays=0/0/0.2/0.3, dsn=2.0.0, status=sent (250 2.0.0 OK)"
)
POSTFIX_PICKUP = (
    "Dec  2 10:00:01 mta postfix/pickup[771]: 4NewId9Z: uid=0 from=<news@shop.test> orig_id=3OldId7Q"
)
EXIM_SENT = (
    "2026-12-02 09:22:23 1xYgXf-0006Qf-2X => u0@gmail.com R=sb_direct T=sb_out2 H=127.0.0.10"
    ' [127.0.0.10] C="250 2.0.0 Ok: recorded"'
)
EXIM_ARRIVAL = (
    "2026-12-02 09:22:23 1xYgXf-0006Qf-2X <= sender0@shop.test H=([127.0.0.1]) [127.0.0.1] P=esmtp S=343"
)


def test_postfix_reads_postfix_lines_only() -> None:
    postfix = PostfixDialect(PROVIDERS)
    assert postfix.maybe_delivery(POSTFIX_SENT) and not postfix.maybe_delivery(EXIM_SENT)
    sent = postfix.parse(POSTFIX_SENT)
    assert sent is not None and (sent.queue_id, sent.endpoint, sent.status) == ("ABC1", "out2", "sent")
    assert postfix.requeued(POSTFIX_PICKUP) == ("4NewId9Z", "3OldId7Q")
    assert postfix.requeued(POSTFIX_SENT) is None
    assert postfix.arrival_marker in "ABC1: from=<a@b.test>, size=300, nrcpt=1 (queue active)"


def test_exim_reads_exim_lines_only() -> None:
    exim = EximDialect(PROVIDERS, {"sb_out2": "out2"})
    assert exim.maybe_delivery(EXIM_SENT) and not exim.maybe_delivery(POSTFIX_SENT)
    sent = exim.parse(EXIM_SENT)
    assert sent is not None and (sent.queue_id, sent.endpoint, sent.status) == (
        "1xYgXf-0006Qf-2X",
        "out2",
        "sent",
    )
    assert exim.arrival(EXIM_ARRIVAL) == ("1xYgXf-0006Qf-2X", "sender0@shop.test")
    assert exim.requeued(POSTFIX_PICKUP) is None  # Exim keeps a moved message's id
