"""Log lines -> counts, rule hits and garbage, without I/O."""

from __future__ import annotations

from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.processor import Processor
from smtp_balancer.feedback.reporting import endpoint_label
from smtp_balancer.feedback.responses import ResponseMatcher, builtin_rules

NOW = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC: a fixed minute bucket


def line(ep: str, status: str, response: str, rcpt: str = "bob@gmail.com") -> str:
    prog = f"postfix/{ep}/smtp" if ep else "postfix/smtp"
    return (
        f"Nov 24 02:48:11 mta {prog}[9536]: E301620C36A: to=<{rcpt}>, "
        "relay=gmail-smtp-in.l.google.com[142.250.1.27]:25, delay=0.42, delays=0.01/0/0.2/0.21, "
        f"dsn=4.7.28, status={status} ({response})"
    )


def processor() -> Processor:
    return Processor(ProviderTable.build(), ResponseMatcher(builtin_rules()), {"out1", "out2"})


def test_counts_per_endpoint_provider_minute_and_status_for_configured_endpoints_only() -> None:
    batch = processor().process(
        [
            line("out1", "sent", "250 ok"),
            line("out1", "sent", "250 ok"),
            line("out2", "deferred", "host x said: 421 4.2.0 later"),
            line("out2", "bounced", "host x said: 550 5.7.1 rejected by policy, blocked").replace(
                "dsn=4.7.28", "dsn=5.7.1"
            ),
            line("", "sent", "250 ok"),  # Postfix's default transport: metrics only
            line("out9", "sent", "250 ok"),  # not ours: metrics only
        ],
        "u",
        NOW,
    )
    minute = "202611181106"
    assert dict(batch.outcomes) == {
        ("out1", "google", minute, "sent"): 2,
        # connection setup and transmission (delays c + d) of the delivered ones, for adaptive
        ("out1", "google", minute, "latency_ms"): 2 * (200 + 210),
        ("out2", "google", minute, "deferred"): 1,
        ("out2", "google", minute, "bounced"): 1,
        ("out2", "google", minute, "blocked"): 1,  # a block-type refusal (policy_block)
    }
    assert len(batch.deliveries) == 6 and batch.hits == []


def test_a_matching_reply_becomes_a_hit_with_a_per_line_uid() -> None:
    batch = processor().process(
        ["junk", line("out2", "deferred", "host x said: 421-4.7.28 unusual rate")], "it:7:100", NOW
    )
    assert [(h.rule.name, h.endpoint, h.provider, h.uid) for h in batch.hits] == [
        ("google-rate-limited", "out2", "google", "it:7:100:1")
    ]


def test_garbage_is_reported_and_other_lines_ignored() -> None:
    batch = processor().process(
        [
            "",
            "\x00\x01 binary",
            "Nov 24 02:48:11 mta postfix/qmgr[1]: ABC: from=<a@b>, size=1, nrcpt=1 (queue active)",
            "Nov 24 02:48:11 mta postfix/smtp[1]: ABC: to=<broken>, status=sent",
        ],
        "u",
        NOW,
    )
    assert batch.ignored == 3 and len(batch.garbage) == 1 and "unparsable" in batch.garbage[0]


def test_metric_labels_stay_bounded() -> None:
    known = {"out1"}
    assert [endpoint_label(n, known) for n in ("out1", "", "relay", "x" * 300)] == [
        "out1",
        "default",
        "unconfigured",
        "unconfigured",
    ]


def test_postfix_bind_warnings_are_counted_per_endpoint() -> None:
    warning = "Dec  2 14:23:50 mta postfix/{ep}smtp[18854]: warning: smtp_connect_addr: bind 192.0.2.55: "
    lines = [
        warning.format(ep="out2/") + "Cannot assign requested address",
        warning.format(ep="out2/") + "Cannot assign requested address",
        warning.format(ep="") + "Cannot assign requested address",  # Postfix's default transport
        "Dec  2 14:23:50 mta postfix/out2/smtp[1]: warning: something else entirely",
    ]
    batch = processor().process(lines, "u", NOW)
    assert batch.bind_errors == {"out2": 2, "": 1}
    assert batch.ignored == 4 and not batch.garbage
