"""Replay's inputs: decision lines to messages, MTA log lines to timed attempts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from integration.configs import topology
from integration.log_lines import decision_lines
from smtp_balancer.config import validate_config
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.dialects import EximDialect, PostfixDialect
from smtp_balancer.render.exim import transport_names
from smtp_balancer.replay.inputs import Unread, attempt_of, message_of, stamp_of

AT = datetime(2026, 11, 24, 10, 30, 5, 250_000, tzinfo=UTC).timestamp()
CONFIG = validate_config({"mx_lookup": {"enabled": False}, **topology()})
ROUTED = Decision(outcome="route", reason="weight 2 in pool main", endpoint="out2", pool="main", rule="all")


@pytest.mark.parametrize("style", ["logfmt", "json"])
def test_a_decision_line_gives_the_message_back(style: str):
    facts = Facts(
        sender="News@Shop.Test",
        recipients=("a@gmail.com", "b@yahoo.com", "c@gmail.com"),
        size=2048,
        queue_id="4QxAB",
        recipient_count=4,
    )
    (line,) = decision_lines([(facts, ROUTED, AT)], style)
    unread = Unread()
    m = message_of(line, unread)
    assert m is not None and not unread.reasons
    assert abs(m.at - AT) < 0.001 and (m.queue_id, m.outcome, m.endpoint, m.rule) == (
        "4QxAB",
        "route",
        "out2",
        "all",
    )
    assert m.facts.sender == "replay@shop.test" and m.facts.size == 2048
    assert sorted(r.rpartition("@")[2] for r in m.facts.recipients) == ["gmail.com", "gmail.com", "yahoo.com"]
    assert m.facts.quota_count == 4  # Postfix counted one more than the line names


def test_lines_replay_cannot_use_are_counted_by_why():
    unread = Unread()
    old = (
        "ts=2026-11-24T10:30:00.000+00:00 level=info logger=smtp_balancer.decision msg=decision outcome=route"
    )
    junk = decision_lines([(Facts(recipients=("a@gmail.com",)), ROUTED, AT)])[0].replace(
        "rcpt_domains=gmail.com", "rcpt_domains=gmail.com*0"
    )
    for line in ["", "garbage \x00", '{"msg": "decision"', "ts=x level=info msg=listening", old, junk]:
        assert message_of(line, unread) is None
    assert unread.reasons == {
        "not a structured log line": 3,
        "not a decision line": 1,
        "decision line without rcpt_domains (written by a release before replay)": 1,
        "decision line with a bad ts or rcpt_domains": 1,
    }


def test_a_decision_line_cut_short_is_not_taken_for_a_message():
    (line,) = decision_lines([(Facts(recipients=("a@gmail.com",), queue_id="Q1"), ROUTED, AT)])
    unread = Unread()
    cuts = [line[: line.index(" outcome=")], line[: line.index(" endpoint=")], line[: line.index(" reason=")]]
    assert all(message_of(cut, unread) is None for cut in cuts)
    assert unread.reasons == {"decision line cut short or missing fields (outcome, endpoint, reason)": 3}
    assert message_of(line, unread) is not None


def test_mta_log_times_in_each_form():
    utc = UTC
    second = datetime(2026, 12, 5, 16, 44, 43, tzinfo=UTC).timestamp()
    # whole seconds: the middle of the second
    assert stamp_of("2026-12-05 16:44:43 1xZssM-0001JB-0l => u@gmail.com", 2026, utc) == second + 0.5
    assert stamp_of("Dec  5 16:44:43 mta postfix/smtp[1]: x", 2026, utc) == second + 0.5
    plus_one = timezone(timedelta(hours=1))
    assert (
        stamp_of("2026-12-05T16:44:43.500+01:00 mta postfix/smtp[1]: x", 2026, utc)
        == datetime(2026, 12, 5, 16, 44, 43, 500_000, tzinfo=plus_one).timestamp()
    )
    for junk in ["", "Foo 35 99:99:99 x", "2026-13-45 x", "\x00\x01"]:
        assert stamp_of(junk, 2026, utc) is None
    # classic stamps are remembered per second, year and zone: read again, the same;
    # in another zone or year, their own
    line = "Dec  5 16:44:43 mta postfix/smtp[2]: y"
    assert stamp_of(line, 2026, utc) == second + 0.5
    assert stamp_of(line, 2026, plus_one) == second - 3600 + 0.5
    assert stamp_of(line, 2025, utc) == datetime(2025, 12, 5, 16, 44, 43, tzinfo=UTC).timestamp() + 0.5


def test_delivery_lines_become_timed_attempts_for_postfix_and_exim():
    providers = ProviderTable.from_config(CONFIG)
    unread = Unread()
    postfix = (
        "Nov 24 10:30:07 mta postfix/out2/smtp[3709]: 4QxAB: to=<a@gmail.com>,"
        " relay=gmail.com[127.0.0.1]:25, delay=0.08, delays=0.04/0.01/0.03/0, dsn=4.7.28,"
        " status=deferred (host gmail.com said: 421 4.7.28 slow)"
    )
    a = attempt_of(postfix, PostfixDialect(providers), 2026, UTC, unread)
    assert a is not None and a.at == datetime(2026, 11, 24, 10, 30, 7, 500_000, tzinfo=UTC).timestamp()
    assert (a.delivery.queue_id, a.delivery.endpoint, a.delivery.provider, a.delivery.status) == (
        "4QxAB",
        "out2",
        "google",
        "deferred",
    )
    exim = (
        "2026-11-24 10:30:08 1xZssM-0001JB-0l => u@yahoo.com R=sb_direct T=sb_out1 H=127.0.0.10 [127.0.0.10]"
        ' C="250 2.0.0 Ok" DT=0s'
    )
    e = attempt_of(exim, EximDialect(providers, transport_names(CONFIG)), 2026, UTC, unread)
    assert e is not None and (e.delivery.endpoint, e.delivery.provider, e.delivery.status) == (
        "out1",
        "yahoo",
        "sent",
    )
    assert (
        attempt_of(
            "Nov 24 10:30:07 mta postfix/qmgr[1]: 4QxAB: removed",
            PostfixDialect(providers),
            2026,
            UTC,
            unread,
        )
        is None
    )
    assert not unread.reasons
