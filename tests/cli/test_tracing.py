"""Putting one message together from log lines (sans I/O): decision lines in logfmt or
JSON, Postfix and Exim delivery lines, a requeued message's new queue id."""

from __future__ import annotations

from smtp_balancer.cli.tracing import Trace, Tracer, render
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.classify import BounceClassifier, builtin_classes

TRACER = Tracer(ProviderTable.build(), BounceClassifier(builtin_classes()), {"sb_out2": "out2"})

POSTFIX = [
    "ts=2026-12-02T09:00:00.000+00:00 level=info logger=smtp_balancer.decision msg=decision"
    " decision_id=94a05d88bad2a4e9 via=policyd queue_id=A14F220C580 outcome=route rule=bulk pool=bulk"
    ' endpoint=out2 degraded=false nrcpt=1 reason="weight 2 in pool bulk" action="FILTER out2:"',
    "Dec 02 09:00:00 mta postfix/cleanup[1]: A14F220C580: message-id=<m1@shop.test>",
    "Dec 02 09:00:01 mta postfix/out2/smtp[2]: A14F220C580: to=<bob@gmail.com>,"
    " relay=gmail.com[127.0.0.1]:25, delay=0.1, delays=0/0/0/0.1, dsn=4.7.28, status=deferred"
    " (host gmail.com[127.0.0.1] said: 421-4.7.28 unusual rate, temporarily rate limited)",
    # moved by the requeue daemon: pickup names the old id, cleanup the same Message-ID
    "Dec 02 09:00:05 mta postfix/pickup[3]: B2222222222: uid=0 from=<news@shop.test> orig_id=A14F220C580",
    "Dec 02 09:00:05 mta postfix/cleanup[1]: B2222222222: message-id=<m1@shop.test>",
    "Dec 02 09:00:06 mta postfix/out1/smtp[4]: B2222222222: to=<bob@gmail.com>,"
    " relay=gmail.com[127.0.0.1]:25, delay=6, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 OK)",
    "Dec 02 09:00:06 mta postfix/qmgr[5]: B2222222222: removed",
    "Dec 02 09:00:07 mta postfix/out1/smtp[4]: C3333333333: to=<x@gmail.com>,"
    " relay=gmail.com[127.0.0.1]:25, delay=1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 OK)",
]


def trace(query: str, lines: list[str]) -> Trace:
    ids, mid = TRACER.find_ids(query, lines)
    t = Trace(query, sorted(ids), mid)
    TRACER.collect(t, ids, lines)
    return t


def test_by_queue_id_decision_id_or_message_id_across_a_requeue() -> None:
    for query in ("A14F220C580", "94a05d88bad2a4e9", "m1@shop.test", "<m1@shop.test>", "B2222222222"):
        t = trace(query, POSTFIX)
        assert t.queue_ids == ["A14F220C580", "B2222222222"], query
        assert [(a.endpoint, a.status, a.bounce_class) for a in t.attempts] == [
            ("out2", "deferred", "rate_limited"),
            ("out1", "sent", "none"),
        ]
        assert t.outcome == "sent" and t.message_id == "<m1@shop.test>"
        assert t.decisions[0]["reason"] == "weight 2 in pool bulk"
    assert "outcome:    sent" in render(trace("A14F220C580", POSTFIX))


def test_exim_lines_and_json_decision_lines() -> None:
    lines = [
        '{"ts": "2026-12-02T09:00:00", "msg": "decision", "decision_id": "0123456789abcdef",'
        ' "queue_id": "1xYgXf-0006Qf-2h", "outcome": "route", "endpoint": "out2", "degraded": false}',
        "2026-12-02 09:00:00 1xYgXf-0006Qf-2h <= news@shop.test H=([127.0.0.1]) [127.0.0.1] P=esmtp S=343"
        " id=m2@shop.test",
        "2026-12-02 09:00:01 1xYgXf-0006Qf-2h == bob@gmail.com R=sb_direct T=sb_out2 defer (-44)"
        " H=mx [192.0.2.1]: SMTP error from remote mail server after RCPT TO:<bob@gmail.com>:"
        " 421 4.7.28 rate limited",
    ]
    t = trace("1xYgXf-0006Qf-2h", lines)
    assert t.decisions[0]["degraded"] == "false" and t.decisions[0]["endpoint"] == "out2"
    assert [(a.endpoint, a.status) for a in t.attempts] == [("out2", "deferred")]
    assert t.outcome == "deferred, still queued"
    assert trace("0123456789abcdef", lines).queue_ids == ["1xYgXf-0006Qf-2h"]


def test_an_unknown_id_traces_nothing() -> None:
    assert trace("NOSUCHID0000", POSTFIX).queue_ids == []
