"""The built-in response pack against replies quoted from the providers' documentation."""

from __future__ import annotations

import pytest

from smtp_balancer.feedback.delivery_log import Delivery
from smtp_balancer.feedback.responses import ResponseMatcher, builtin_rules


def delivery(provider: str, response: str, status: str = "deferred") -> Delivery:
    return Delivery(
        "Q1",
        "out2",
        "smtp",
        "a@x.test",
        "mx.test",
        "127.0.0.1",
        25,
        1.0,
        (0, 0, 0, 1),
        "4.0.0",
        status,
        response,
        provider,
    )


@pytest.mark.parametrize(
    ("provider", "status", "response", "rule"),
    [
        (
            "google",
            "deferred",
            "host gmail-smtp-in.l.google.com[142.250.1.1] said: 421-4.7.28 Gmail has "
            "detected an unusual rate of unsolicited mail originating from your IP address. "
            "(in reply to end of "
            "DATA command)",
            "google-rate-limited",
        ),
        (
            "google",
            "bounced",
            "host x said: 550-5.7.1 Our system has detected that this message is likely "
            "suspicious due to the very low reputation of the sending IP address.",
            "google-ip-reputation",
        ),
        (
            "yahoo",
            "deferred",
            "host mta5.am0.yahoodns.net[1.2.3.4] said: 421 4.7.0 [TSS04] Messages from "
            "192.0.2.1 temporarily deferred due to unexpected volume or user complaints",
            "yahoo-tss04",
        ),
        (
            "yahoo",
            "bounced",
            "host x said: 554 5.7.9 [TS03] All messages from 192.0.2.1 will be permanently "
            "deferred; Retrying will NOT succeed.",
            "yahoo-ts03",
        ),
        (
            "microsoft",
            "bounced",
            "host x said: 550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't "
            "sent. Please contact your Internet service provider since part of their network is on our block "
            "list (S3150).",
            "microsoft-blocklist",
        ),
        (
            "microsoft",
            "deferred",
            "host x said: 451 4.7.650 The mail server [192.0.2.1] has been temporarily "
            "rate limited due to IP reputation.",
            "microsoft-rate-limited",
        ),
        (
            "microsoft",
            "deferred",
            "host x said: 421 4.7.500 Server busy. Please try again later from [192.0.2.1].",
            "microsoft-server-busy",
        ),
        (
            "other",
            "bounced",
            "host x said: 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked "
            "using zen.spamhaus.org",
            "blocklist-cited",
        ),
        (
            "other",
            "bounced",
            "host x said: 550 5.7.1 blocked using b.barracudacentral.org",
            "blocklist-cited",
        ),
    ],
)
def test_documented_replies_match_their_rule(provider: str, status: str, response: str, rule: str) -> None:
    matched = ResponseMatcher(builtin_rules()).match(delivery(provider, response, status))
    assert matched is not None and matched.name == rule


@pytest.mark.parametrize(
    ("provider", "response"),
    [
        # sender authentication: another IP does not help, so no rule may take the IP out
        ("google", "host x said: 550-5.7.26 This mail is unauthenticated, which poses a security risk"),
        ("google", "host x said: 421-4.7.26 This mail has been rate limited because it is unauthenticated"),
        # a Gmail code seen at another provider is not Gmail's
        ("yahoo", "host x said: 421-4.7.28 unusual rate"),
        ("google", "host x said: 250 2.0.0 OK"),
    ],
)
def test_replies_that_must_not_take_an_ip_out(provider: str, response: str) -> None:
    assert ResponseMatcher(builtin_rules()).match(delivery(provider, response)) is None


def test_sent_lines_are_not_matched_unless_a_rule_asks() -> None:
    matcher = ResponseMatcher(builtin_rules())
    assert not matcher.has_sent_rules
    assert matcher.match(delivery("other", "250 ok spamhaus", status="sent")) is None


def test_a_rule_can_trigger_on_a_bounce_class() -> None:
    from dataclasses import replace

    from smtp_balancer.config.feedback import ResponseRuleConfig

    rule = ResponseRuleConfig(name="bad-list", classes=["invalid_recipient"], statuses=["bounced"])
    matcher = ResponseMatcher([rule])
    unknown = delivery("other", "550 5.1.1 no such user", "bounced")
    unknown = replace(unknown, bounce_class="invalid_recipient")
    full = replace(delivery("other", "552 5.2.2 mailbox full", "bounced"), bounce_class="mailbox_full")
    hit = matcher.match(unknown)
    assert hit is not None and hit.name == "bad-list"
    assert matcher.match(full) is None
    with pytest.raises(ValueError, match="give match, classes or both"):
        ResponseRuleConfig(name="empty")
