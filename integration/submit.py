"""Test mail, and submitting it over SMTP: shared by the Postfix and Exim harnesses."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY


def build_message(
    seq: int,
    sender: str,
    recipients: list[str],
    tag: str = "",
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    for name, value in (headers or {}).items():
        msg[name] = value
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = f"test {seq}"
    msg["X-Test-Seq"] = str(seq)
    if tag:
        msg["X-Test-Tag"] = tag
    msg.set_content(f"message {seq}\n")
    return msg


def message_bytes(
    seq: int,
    sender: str,
    recipients: list[str],
    tag: str = "",
    headers: dict[str, str] | None = None,
) -> bytes:
    """``build_message`` as sent over SMTP, the same bytes. Written out directly when
    every header is short ASCII (what the email package then produces, without its
    policy machinery: 1.7 ms a message, a fifth of the test process's CPU in the
    20,000-message fleet test); otherwise through the email package."""
    fields = [*(headers or {}).items(), ("From", sender), ("To", ", ".join(recipients))]
    fields += [("Subject", f"test {seq}"), ("X-Test-Seq", str(seq))]
    if tag:
        fields.append(("X-Test-Tag", tag))
    lines = [f"{name}: {value}" for name, value in fields]
    if any(len(line) > 78 or not line.isascii() or "\r" in line or "\n" in line for line in lines):
        return build_message(seq, sender, recipients, tag, headers).as_bytes(policy=SMTP_POLICY)
    lines += [
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 7bit",
        "MIME-Version: 1.0",
    ]
    return ("\r\n".join(lines) + f"\r\n\r\nmessage {seq}\r\n").encode("ascii")


def send_many(
    port: int,
    count: int,
    threads: int = 8,
    recipients: Callable[[int], list[str]] = lambda i: [f"user{i}@example{i % 5}.test"],
    tag: Callable[[int], str] = lambda i: "",
    start: int = 0,
    headers: Callable[[int], dict[str, str]] = lambda i: {},
    sender: Callable[[int], str] = lambda i: f"sender{i % 7}@shop.test",
    started_at: dict[int, float] | None = None,
    before: Callable[[int], None] = lambda i: None,
) -> list[str]:
    """Send ``count`` messages to 127.0.0.1:``port`` over persistent connections;
    returns the SMTP errors. ``started_at``: filled with each message's monotonic time
    before its MAIL FROM, so the MTA decided it later than that. ``before``: called with
    each message's number before it is sent (a test stops a daemon mid-run with it)."""
    errors: list[str] = []
    lock = threading.Lock()
    todo = iter(range(start, start + count))

    def worker() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                before(i)
                rcpts, from_ = recipients(i), sender(i)
                if started_at is not None:
                    started_at[i] = time.monotonic()
                try:
                    if "".join([from_, *rcpts]).isascii():
                        smtp.sendmail(from_, rcpts, message_bytes(i, from_, rcpts, tag(i), headers(i)))
                    else:  # send_message asks for SMTPUTF8
                        smtp.send_message(build_message(i, from_, rcpts, tag(i), headers(i)), from_, rcpts)
                except smtplib.SMTPException as exc:
                    with lock:
                        errors.append(f"message {i}: {exc}")

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return errors
