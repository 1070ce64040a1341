"""Postfix delivery lines, as Postfix writes them (samples from the harness's real logs)."""

import pytest

from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.delivery_log import LogLineError, parse_line, parse_requeue, split_program

T = ProviderTable.build()


def test_sent_through_an_endpoint():
    d = parse_line(
        "Nov 24 02:48:11 mta postfix/out2/smtp[9536]: E301620C36A: to=<bob@gmail.com>, "
        "relay=gmail-smtp-in.l.google.com[142.250.1.27]:25, delay=0.42, delays=0.01/0/0.2/0.21, "
        "dsn=2.0.0, status=sent (250 2.0.0 OK  1700000000 x1-20020a05 - gsmtp)",
        T,
    )
    assert d is not None
    assert (d.queue_id, d.endpoint, d.program, d.status, d.dsn) == (
        "E301620C36A",
        "out2",
        "smtp",
        "sent",
        "2.0.0",
    )
    assert (d.relay_host, d.relay_addr, d.relay_port) == ("gmail-smtp-in.l.google.com", "142.250.1.27", 25)
    assert d.delays == (0.01, 0.0, 0.2, 0.21) and d.delay_s == 0.42
    assert d.transfer_s == pytest.approx(0.41)
    assert d.provider == "google" and d.recipient_domain == "gmail.com"


def test_deferred_with_parentheses_in_the_reply_and_rfc3339_time():
    d = parse_line(
        "2026-11-24T02:48:11.123456+00:00 mta postfix/out3/smtp[1]: ABC: to=<a@corp.test>, orig_to=<x@y.test>, "
        "relay=corp-test.mail.protection.outlook.com[52.101.1.1]:25, conn_use=2, delay=1, delays=0/0/0.5/0.5, "
        "dsn=4.7.650, status=deferred (host corp-test.mail.protection.outlook.com[52.101.1.1] said: "
        "451 4.7.650 The mail server [192.0.2.3] has been temporarily rate limited (in reply to RCPT TO command))",
        T,
    )
    assert d is not None and d.status == "deferred" and d.provider == "microsoft" and d.endpoint == "out3"
    assert d.response.endswith("(in reply to RCPT TO command)")


def test_relay_none_default_transport_and_provider_from_domain():
    d = parse_line(
        "Nov 24 02:48:11 mta postfix/smtp[9532]: E19BF20C366: to=<b@yahoo.com>, relay=none, delay=0.03, "
        "delays=0/0.02/0.01/0, dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:2599: Connection refused)",
        T,
    )
    assert d is not None and d.endpoint == "" and d.relay_host == "" and d.relay_port is None
    assert d.provider == "yahoo"


@pytest.mark.parametrize(
    "line",
    [
        "Nov 24 02:48:11 mta postfix/qmgr[1]: ABC: from=<a@b.test>, size=300, nrcpt=1 (queue active)",
        "Nov 24 02:48:11 mta postfix/cleanup[1]: ABC: message-id=<x@y>",
        "Nov 24 02:48:11 mta kernel: something else entirely",
        "",
        "\x00\xff garbage",
    ],
)
def test_other_lines_are_not_deliveries(line: str):
    assert parse_line(line, T) is None


@pytest.mark.parametrize(
    "line",
    [
        "Nov 24 02:48:11 mta postfix/smtp[1]: ABC: to=<a@b.test>, relay=x, delay=oops",
        "Nov 24 02:48:11 mta postfix/smtp[1]: ABC: to=<a@b.test>, relay=none, delay=1, delays=0/0/0/0, "
        "dsn=2.0.0, status=teleported (ok)",
        "Nov 24 02:48:11 mta postfix/smtp[1]: ABC: to=<a@b.test>, relay=not a relay, delay=1, delays=0/0/0/0, "
        "dsn=2.0.0, status=sent (ok)",
    ],
)
def test_broken_delivery_lines_raise(line: str):
    with pytest.raises(LogLineError):
        parse_line(line, T)


def test_split_program():
    assert split_program("postfix/out2/smtp") == ("out2", "smtp")
    assert split_program("postfix/smtp") == ("", "smtp")
    assert split_program("postfix") == ("", "postfix")


def test_pickup_names_the_queue_id_a_requeued_message_had() -> None:
    line = "Dec  2 10:00:01 mta postfix/pickup[771]: 4NewId9Z: uid=0 from=<news@shop.test> orig_id=3OldId7Q\n"
    assert parse_requeue(line) == ("4NewId9Z", "3OldId7Q")
    assert parse_requeue(line.replace("postfix/pickup", "postfix-sb/pickup")) == ("4NewId9Z", "3OldId7Q")
    # any other program, no orig_id, or a garbled one: not a requeue
    assert parse_requeue(line.replace("pickup", "cleanup")) is None
    assert parse_requeue(line.replace(" orig_id=3OldId7Q", "")) is None
    assert parse_requeue(line.replace("orig_id=3OldId7Q", "orig_id=3Old<Id>")) is None
    assert parse_requeue("garbage orig_id=1 \x00\n") is None
