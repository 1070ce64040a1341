"""ARF parsing: the reports feedback loops send, and every way one can be broken."""

from __future__ import annotations

import pytest

from integration.arf import NOT_MULTIPART, arf_report
from smtp_balancer.complaints.arf import ReportError, parse_report


def test_a_yahoo_style_report_gives_its_fields() -> None:
    report = parse_report(arf_report())
    assert report.feedback_type == "abuse"
    assert report.source_ip == "127.0.0.3"
    assert report.reporter == "arf.mail.yahoo.com"
    assert report.original_mail_from == "bounce@shop.test"
    assert report.original_rcpt_to == "u1@yahoo.com"
    assert report.sender_domain == "shop.test" and report.recipient_domain == "yahoo.com"
    assert report.message_id == "<sale-1@shop.test>"


def test_without_original_mail_from_the_original_return_path_names_the_sender() -> None:
    raw = arf_report(mail_from=None, headers_only=True, reporter="staff@hotmail.com")
    report = parse_report(raw)
    assert report.original_mail_from == "other@elsewhere.test"
    assert report.reporter == "hotmail.com"


def test_an_ipv4_mapped_source_ip_is_the_ipv4_address() -> None:
    assert parse_report(arf_report("::ffff:127.0.0.4")).source_ip == "127.0.0.4"
    assert parse_report(arf_report("[127.0.0.2]")).source_ip == "127.0.0.2"


@pytest.mark.parametrize(
    ("raw", "kind", "words"),
    [
        (NOT_MULTIPART, "malformed", "not multipart/report"),
        (
            arf_report().replace(b"report-type=feedback-report", b"report-type=delivery-status"),
            "malformed",
            "report-type",
        ),
        (
            arf_report().replace(b"message/feedback-report", b"text/plain"),
            "malformed",
            "no message/feedback-report",
        ),
        (arf_report().replace(b"Feedback-Type: abuse", b"X-Nothing: 1"), "malformed", "no Feedback-Type"),
        (arf_report(None), "no_source_ip", "no Source-IP"),
        (arf_report("not-an-ip"), "no_source_ip", "not an IP address"),
        (arf_report("\xff\xfe".encode("latin-1").decode("latin-1")), "no_source_ip", "not an IP address"),
        (b"\xff\xfe\x00garbage\r\n\r\n\x80\x81", "malformed", "not multipart/report"),
        (b"", "malformed", "not multipart/report"),
    ],
)
def test_a_broken_report_names_what_is_wrong(raw: bytes, kind: str, words: str) -> None:
    with pytest.raises(ReportError) as err:
        parse_report(raw)
    assert err.value.kind == kind and words in str(err.value)


def test_non_utf8_bytes_in_fields_do_not_crash_the_parser() -> None:
    raw = (
        arf_report()
        .replace(b"Yahoo!-Mail-Feedback/2.0", b"\xff\xfeAgent\x80")
        .replace(b"Source-IP: 127.0.0.3", b"Source-IP: 127.0.0.3\xff")
    )
    with pytest.raises(ReportError) as err:
        parse_report(raw)
    assert err.value.kind == "no_source_ip"
    report = parse_report(arf_report().replace(b"Yahoo!-Mail-Feedback/2.0", b"\xff\xfeAgent\x80"))
    assert report.source_ip == "127.0.0.3" and "Agent" in report.user_agent


def test_control_characters_in_fields_never_reach_a_terminal() -> None:
    raw = arf_report().replace(b"Yahoo!-Mail-Feedback/2.0", b"evil\x1b[31mred\x07")
    assert parse_report(raw).user_agent == "evil?[31mred?"
    with pytest.raises(ReportError) as err:
        parse_report(NOT_MULTIPART.replace(b"Subject: spam!!", b"Content-Type: text/\x1b[2Jplain"))
    assert "\x1b" not in str(err.value)


def test_the_original_received_ids_are_read_postfix_and_exim_alike() -> None:
    received = (
        "from mta.example (mta.example [127.0.0.3]) by mx.yahoo.test with ESMTPS id a12si3456789abc;"
        " Wed, 02 Dec 2026 10:00:00 +0000",
        "from app.example (localhost [127.0.0.1]) by mta.example (Postfix) with ESMTP id 4Xb2Kq0Lw7z9\n"
        "\tfor <u1@yahoo.com>; Wed, 02 Dec 2026 09:59:59 +0000",
        "by app.example (Postfix, from userid 0) id 3F2A1B9C0D; Wed, 02 Dec 2026 09:59:58 +0000",
        "from [127.0.0.1] by exim.example with esmtp (Exim 4.96) (envelope-from <b@shop.test>)"
        " id 1tXyZa-000Abc-7Q for u1@yahoo.com; Wed, 02 Dec 2026 09:59:57 +0000",
    )
    report = parse_report(arf_report(received=received))
    assert report.queue_ids == ("a12si3456789abc", "4Xb2Kq0Lw7z9", "3F2A1B9C0D", "1tXyZa-000Abc-7Q")
    assert parse_report(arf_report()).queue_ids == ()


def test_a_flood_of_received_headers_is_bounded() -> None:
    received = tuple(f"by relay{i}.test with SMTP id ID{i:05d}; Wed, 2 Dec 2026" for i in range(5000))
    report = parse_report(arf_report(received=received, headers_only=True))
    assert len(report.queue_ids) == 16 and report.queue_ids[0] == "ID00000"
