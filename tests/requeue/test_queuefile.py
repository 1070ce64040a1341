"""Postfix queue files read without Postfix: envelope, pending recipients, FILTER, headers."""

from __future__ import annotations

import pytest

from smtp_balancer.requeue.queuefile import QueueFileError, parse_queue_file, records


def record(kind: str, data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    n, length = len(raw), bytearray()
    while True:  # base-128, low digits first, high bit: more follows (record.c)
        byte = n & 0x7F
        n >>= 7
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return kind.encode() + bytes(length) + raw


def queue_file(*, end: bool = True, filter_in: str = "extracted", header: str = "Subject: hi") -> bytes:
    """Shaped like a deferred file Postfix 3.7 wrote (seen with postcat and by hand)."""
    parts = [
        record("C", "            449             709               2             "),
        record("T", "1796200214 549746"),
        record("A", "create_time=1796200214"),
        record("S", "sender1@shop.test"),
        record("A", "client_address=192.0.2.7"),
        record("O", "u1@gmail.com"),
        record("R", "u1@gmail.com"),
        record("O", "y1@yahoo.com"),
        record("D", "y1@yahoo.com"),  # delivered: qmgr rewrote R to D in place
        record("M", ""),
        record("L", header[:10]),  # a long line: L records, then its final N
        record("N", header[10:]),
        record("N", "Precedence: bulk"),
        record("L", "out9:"),  # content: a continued line, never a FILTER
        record("N", ""),
        record("N", "L out9: is body text"),
        record("X", ""),
    ]
    if filter_in == "extracted":
        parts.append(record("L", "out2:"))
    if end:
        parts.append(record("E", ""))
    return b"".join(parts)


def test_envelope_pending_recipients_filter_and_headers() -> None:
    msg = parse_queue_file("88B7520E08D", queue_file())
    assert msg.queue_id == "88B7520E08D"
    assert msg.arrival == 1796200214.0
    assert msg.sender == "sender1@shop.test"
    assert msg.pending == ("u1@gmail.com",)  # the delivered yahoo recipient is done
    assert msg.content_filter == "out2:" and msg.transport == "out2"
    assert msg.attribute("client_address") == "192.0.2.7"
    assert msg.headers[:1] == (("Subject", "hi"),)
    assert msg.header("precedence") == "bulk"


def test_an_l_record_in_the_content_is_a_continued_line_not_a_filter() -> None:
    msg = parse_queue_file("Q1", queue_file(filter_in="none"))
    assert msg.content_filter == ""


def test_a_length_spanning_several_bytes() -> None:
    long = "x" * 1000
    assert records(record("N", long)) == [(ord("N"), long.encode())]


@pytest.mark.parametrize(
    "data, why",
    [
        (queue_file(end=False), "no end record"),
        (queue_file()[:-3], "past the end"),
        (b"T\x85", "truncated record length"),
        (b"N\xff\xff\xff\xff\xff\x01", "more than 5 digits"),
    ],
)
def test_incomplete_or_corrupt_files_are_refused_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(QueueFileError, match=why):
        parse_queue_file("Q1", data)
