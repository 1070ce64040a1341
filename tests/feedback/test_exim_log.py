"""Exim main log lines, as Exim 4.96 wrote them in the harness, parsed into deliveries."""

from __future__ import annotations

import pytest

from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.delivery_log import LogLineError
from smtp_balancer.feedback.exim_log import parse_exim_line

PROVIDERS = ProviderTable.build()
TRANSPORTS = {"sb_out1": "out1", "sb_out2": "out2"}
GMAIL_421 = (
    "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating\\n421 4.7.28 from"
    " your IP address. To protect our users from spam, mail sent from your IP address has been"
    " temporarily rate limited. - gsmtp"
)


def parse(line: str):
    return parse_exim_line(line, PROVIDERS, TRANSPORTS)


def test_delivered_deferred_bounced_and_more_recipients() -> None:
    sent = parse(
        "2026-12-02 09:22:23 1xYgXf-0006Qf-2X => u0@gmail.com R=sb_direct T=sb_out2 H=127.0.0.10"
        ' [127.0.0.10] C="250 2.0.0 Ok: recorded"'
    )
    assert sent is not None
    assert (sent.queue_id, sent.endpoint, sent.recipient, sent.status) == (
        "1xYgXf-0006Qf-2X", "out2", "u0@gmail.com", "sent"
    )  # fmt: skip
    assert (sent.relay_host, sent.relay_addr, sent.dsn, sent.provider) == (
        "127.0.0.10",
        "127.0.0.10",
        "2.0.0",
        "google",
    )
    assert sent.response == "250 2.0.0 Ok: recorded"
    more = parse(
        "2026-12-02 09:22:23 1xYgXf-0006Qf-2X -> v0@yahoo.com R=sb_direct T=sb_out1 H=127.0.0.10"
        ' [127.0.0.10] C="250 2.0.0 Ok: recorded"'
    )
    assert more is not None and more.status == "sent" and more.endpoint == "out1" and more.provider == "yahoo"
    deferred = parse(
        "2026-12-02 09:22:23 1xYgXf-0006Qf-2h == u4@gmail.com R=sb_direct T=sb_out2 defer (-44)"
        " H=127.0.0.10 [127.0.0.10]: SMTP error from remote mail server after RCPT TO:<u4@gmail.com>: "
        + GMAIL_421
    )
    assert deferred is not None and deferred.status == "deferred" and deferred.dsn == "4.7.28"
    assert deferred.response.startswith("421-4.7.28 Our system") and deferred.endpoint == "out2"
    bounced = parse(
        "2026-12-02 09:22:23 1xYgXf-0006Qf-2h ** v4@yahoo.com R=sb_direct T=sb_out2 H=127.0.0.10"
        " [127.0.0.10]: SMTP error from remote mail server after RCPT TO:<v4@yahoo.com>:"
        " 550 5.1.1 no such user"
    )
    assert bounced is not None and bounced.status == "bounced" and bounced.dsn == "5.1.1"
    assert bounced.response == "550 5.1.1 no such user"


def test_lines_without_a_host_or_one_of_our_transports() -> None:
    refused = parse(
        "2026-12-02 09:22:23 1xYgXf-0006Qf-2h == u4@gmail.com R=sb_direct T=sb_out1 defer (111):"
        " Connection refused"
    )
    assert refused is not None and refused.endpoint == "out1" and refused.relay_host == ""
    assert refused.response == "Connection refused" and refused.dsn == "4.0.0"
    unrouted = parse("2026-12-02 09:22:23 1xYgXf-0006Qf-2h ** x@nowhere.test: Unrouteable address")
    assert unrouted is not None and unrouted.endpoint == "" and unrouted.response == "Unrouteable address"
    assert unrouted.recipient == "x@nowhere.test"
    own = parse(
        '2026-12-02 09:22:23 1xYgXf-0006Qf-2h => x@gmail.com R=plain T=plain_smtp H=h [192.0.2.1] C="250 ok"'
    )
    assert own is not None and own.endpoint == ""  # the operator's own transport: not an endpoint


@pytest.mark.parametrize(
    "line",
    [
        "2026-12-02 09:22:23 1xYgXf-0006Qf-2X <= sender0@shop.test H=([127.0.0.1]) [127.0.0.1] P=esmtp S=343",
        "2026-12-02 09:22:23 1xYgXf-0006Qf-2X Completed",
        "2026-12-02 09:22:23 Start queue run: pid=24743",
        "Dec  2 09:22:23 mta postfix/smtp[1]: ABC: to=<a@b.c>, relay=none, status=sent (x)",
    ],
)
def test_other_lines_are_not_deliveries(line: str) -> None:
    assert parse(line) is None


def test_a_delivery_marker_without_an_address_is_garbage() -> None:
    with pytest.raises(LogLineError):
        parse("2026-12-02 09:22:23 1xYgXf-0006Qf-2X => garbage-without-at R=x T=sb_out1")


@pytest.mark.parametrize(
    ("tail", "seconds"),
    [
        (" DT=0.003s", 0.003),  # +deliver_time +millisec, as Exim 4.96 wrote it in the harness
        (" DT=2s", 2.0),
        (" DT=1m5s", 65.0),
        ("", None),  # without +deliver_time
        (" DT=soon", None),
    ],
)
def test_deliver_time_is_the_transfer_time(tail: str, seconds: float | None) -> None:
    sent = parse(
        "2026-12-02 19:39:46.311 1xYqB8-0006Rx-0w => u0@gmail.com R=sb_direct T=sb_out2 H=127.0.0.10"
        f' [127.0.0.10] C="250 2.0.0 Ok: recorded"{tail}'
    )
    assert sent is not None and sent.transfer_s == seconds


def test_a_deliver_time_inside_the_reply_is_not_believed() -> None:
    sent = parse(
        "2026-12-02 19:39:46.311 1xYqB8-0006Rx-0w => u0@gmail.com R=sb_direct T=sb_out2 H=127.0.0.10"
        ' [127.0.0.10] C="250 ok DT=999s" DT=0.5s'
    )
    assert sent is not None and sent.transfer_s == 0.5
