"""RFC 5965 feedback reports for tests, shaped as Yahoo's and Microsoft's feedback loops send them."""

from __future__ import annotations

from pathlib import Path

from integration.sink import Received


def arf_report(
    source_ip: str | None = "127.0.0.3",
    *,
    reporter: str = "feedback@arf.mail.yahoo.com",
    feedback_type: str = "abuse",
    mail_from: str | None = "bounce@shop.test",
    rcpt_to: str = "u1@yahoo.com",
    original_from: str = "news@shop.test",
    headers_only: bool = False,
    extra_fields: str = "",
    received: tuple[str, ...] = (),
    original_message: bytes | None = None,
) -> bytes:
    """A multipart/report with the three parts RFC 5965 names; None drops Source-IP.
    ``received``: the original's Received header values, latest hop first;
    ``original_message``: the whole original as delivered (instead of a made-up one)."""
    fields = [
        f"Feedback-Type: {feedback_type}",
        "User-Agent: Yahoo!-Mail-Feedback/2.0",
        "Version: 1",
        *([f"Source-IP: {source_ip}"] if source_ip is not None else []),
        *([f"Original-Mail-From: <{mail_from}>"] if mail_from else []),
        f"Original-Rcpt-To: <{rcpt_to}>",
        "Arrival-Date: Wed, 02 Dec 2026 10:00:00 +0000",
        "Reported-Domain: shop.test",
    ]
    added = "".join(f"Received: {r}\r\n" for r in received)  # the reporter's own hops on top
    original = added + (
        f"Return-Path: <{mail_from or 'other@elsewhere.test'}>\r\n"
        f"From: Shop <{original_from}>\r\nTo: {rcpt_to}\r\n"
        "Subject: Our winter sale\r\nMessage-ID: <sale-1@shop.test>\r\n"
    )
    if original_message is not None:
        original = added + original_message.decode("utf-8", "replace").replace("\r\n", "\n").replace(
            "\n", "\r\n"
        )
    original_part = (
        "Content-Type: text/rfc822-headers\r\n\r\n" + original
        if headers_only
        else "Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
        + original
        + "\r\nBuy now.\r\n"
    )
    text = (
        f"From: Feedback Loop <{reporter}>\r\n"
        "To: fbl@fbl.test\r\n"
        "Subject: FW: Our winter sale\r\n"
        "Date: Wed, 02 Dec 2026 11:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="arf-b"\r\n'
        "\r\n"
        "--arf-b\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is an email abuse report for an email message received from IP "
        f"{source_ip} on Wed, 02 Dec 2026 10:00:00 +0000.\r\n"
        "--arf-b\r\n"
        "Content-Type: message/feedback-report\r\n\r\n" + "\r\n".join(fields) + "\r\n" + extra_fields + "\r\n"
        "--arf-b\r\n" + original_part + "--arf-b--\r\n"
    )
    return text.encode()


NOT_MULTIPART = (
    b"From: someone@yahoo.com\r\nTo: fbl@fbl.test\r\nSubject: spam!!\r\n\r\nI did not ask for this.\r\n"
)


def report_about(message: Received) -> bytes:
    """The report a feedback loop sends about a message the sink received: the original
    as delivered (our MTA's Received header in it), the reporter's own hop on top."""
    return arf_report(
        message.peer_ip,
        rcpt_to=message.rcpt_tos[0],
        received=(f"from mta.test ([{message.peer_ip}]) by mx.yahoo.test with ESMTPS id 9yahoo9hop;",),
        original_message=message.content,
    )


def maildir_of_reports(root: Path, messages: list[Received]) -> Path:
    """A Maildir whose new/ holds one report about each message, for `fbl --maildir`."""
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, message in enumerate(messages):
        (root / "new" / f"{i}.report").write_bytes(report_about(message))
    return root
