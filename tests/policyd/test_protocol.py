"""The sans-I/O policy protocol parser: framing, limits, errors."""

from __future__ import annotations

import random

import pytest

from policyd.protocol import (
    MAX_ATTRIBUTES,
    MAX_REQUEST_BYTES,
    KeptNames,
    MalformedLine,
    NotUtf8,
    Oversized,
    ProtocolError,
    RequestParser,
    TooManyAttributes,
    Truncated,
    format_reply,
    name_hash,
)

REQ = b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=a@b.test\n\n"


def test_one_request():
    assert list(RequestParser().feed(REQ)) == [
        {"request": "smtpd_access_policy", "protocol_state": "RCPT", "recipient": "a@b.test"}
    ]


def test_byte_by_byte_and_pipelined():
    parser = RequestParser()
    out = []
    for byte in REQ * 3:
        out += parser.feed(bytes([byte]))
    assert len(out) == 3 and not parser.pending


def test_crlf_and_values_with_equals():
    out = list(RequestParser().feed(b"request=x\r\nccert_subject=CN=a=b\r\n\r\n"))
    assert out == [{"request": "x", "ccert_subject": "CN=a=b"}]


def test_empty_value_kept():
    assert list(RequestParser().feed(b"recipient=\nrequest=x\n\n")) == [{"recipient": "", "request": "x"}]


BAD_REQUESTS = [
    (b"no equals\n\n", MalformedLine),
    (b"=value\n\n", MalformedLine),
    (b"request=x\n=value\n\n", MalformedLine),
    (b"request=x\nno equals\n\n", MalformedLine),
    (b"request=x\r\nno equals\r\n\r\n", MalformedLine),
    (b"a=" + b"x" * MAX_REQUEST_BYTES + b"\n\n", Oversized),
    (b"\n\n", MalformedLine),
    (b"a=\xff\xfe\n\n", NotUtf8),
    (b"".join(b"a%d=1\n" % i for i in range(300)) + b"\n", TooManyAttributes),
]


@pytest.mark.parametrize(("data", "error"), BAD_REQUESTS)
def test_bad_requests(data: bytes, error: type[Exception]):
    with pytest.raises(error):
        list(RequestParser().feed(data))


@pytest.mark.parametrize(("data", "error"), BAD_REQUESTS)
def test_a_parser_that_keeps_some_attributes_refuses_the_same_requests(data: bytes, error: type[Exception]):
    with pytest.raises(error):
        list(RequestParser(keep=frozenset(("request", "a"))).feed(data))


def slot_sharers(keep: frozenset[str]) -> list[str]:
    """Names not kept whose hash slot is a kept name's: of its length, and longer."""
    kept = KeptNames(keep)
    assert kept.usable
    wanted = {name_slot(n, kept.multiplier): n for n in keep}
    found: dict[tuple[str, bool], str] = {}
    for i in range(200_000):
        candidate = f"{i:x}q"
        target = wanted.get(name_slot(candidate, kept.multiplier))
        if target is not None and candidate not in keep:
            found.setdefault((target, len(candidate) == len(target)), candidate)
    assert any(same_length for _, same_length in found), found
    return sorted(found.values())


def name_slot(name: str, multiplier: int) -> int:
    return name_hash(name.encode(), multiplier)


def test_kept_names_sit_in_slots_of_their_own():
    from policyd.session import READ_ATTRIBUTES

    kept = KeptNames(READ_ATTRIBUTES)
    assert kept.usable and sorted(kept.names) == sorted(READ_ATTRIBUTES)
    slots = [name_slot(n, kept.multiplier) for n in kept.names]
    assert len(set(slots)) == len(slots)
    assert [kept.slots[s] for s in slots] == list(range(1, len(slots) + 1))
    assert sum(1 for b in kept.slots if b) == len(slots)
    # names that do not fit: the general path for every request, the same answers
    too_long = frozenset(("request", "x" * 300))
    assert not KeptNames(too_long).usable
    parser = RequestParser(keep=too_long)
    assert parser.feed(b"request=a\n" + b"x" * 300 + b"=b\nother=c\n\n") == [{"request": "a", "x" * 300: "b"}]
    many = frozenset(f"{i:03d}" + "n" * 250 for i in range(300))  # 300 names, 75 KB of them
    assert not KeptNames(many).usable
    name = sorted(many)[7]
    assert RequestParser(keep=many).feed(f"{name}=v\nother=w\n\n".encode()) == [{name: "v"}]


def test_kept_attributes_are_those_of_the_whole_request():
    """Against the parser that keeps everything: the same values (the last of a name
    winning), on Postfix-like requests and hostile variants of them."""
    rng = random.Random(36)
    keep = frozenset(("request", "recipient", "instance", "sender", "x"))
    # and names near the kept ones: a shared first character and length, a hash slot (KeptNames)
    names = [*sorted(keep), "client_address", "size", "ccert_subject", "other", "", "bad name", "x="]
    names += ["senter", "instanse", "y", "recipienT", "sendér", "xx"]
    names += slot_sharers(keep)
    pieces = ["", "=", "a=b", "é", "\r", " ", "\x00", "x=", "=x", "\n"]
    for _ in range(20_000):
        lines = [
            rng.choice(names) + rng.choice(["=", "", "=="]) + rng.choice(pieces)
            for _ in range(rng.randint(1, 8))
        ]
        data = ("\n".join(lines) + "\n\n").encode()
        whole, kept = RequestParser(), RequestParser(keep=keep)
        try:
            want = [{k: v for k, v in r.items() if k in keep} for r in whole.feed(data)]
        except ProtocolError as exc:
            with pytest.raises(type(exc)):
                list(kept.feed(data))
            continue
        assert list(kept.feed(data)) == want, data


def test_oversized_without_terminator_fails_early():
    parser = RequestParser()
    with pytest.raises(Oversized):
        for _ in range(100):
            list(parser.feed(b"x=" + b"y" * 4096))
    assert len(parser._buf) <= MAX_REQUEST_BYTES + 4096 + 2  # never buffers past the limit


def test_truncated_at_eof():
    parser = RequestParser()
    assert list(parser.feed(b"request=x\nprotocol")) == []
    with pytest.raises(Truncated):
        parser.eof()
    RequestParser().eof()  # clean EOF between requests is fine


def test_a_read_that_ends_in_a_bad_request_hands_back_none():
    """A good request and a bad one in the same read: the error, and neither request
    (the connection answers nothing more on a broken stream and closes; Postfix and
    Exim wait for each answer before the next request, so no good one is lost)."""
    parser = RequestParser(keep=frozenset(("request",)))
    with pytest.raises(MalformedLine):
        parser.feed(REQ + b"junk\n\n")
    assert RequestParser().feed(REQ + REQ) == [RequestParser().feed(REQ)[0]] * 2


class _CountingBuffer(bytearray):
    """The parser's buffer, counting the bytes each search covers."""

    searched = 0

    def find(self, sub, start=0, *end):  # type: ignore[override]
        self.searched += len(self) - start
        return super().find(sub, start, *end)


def test_scan_is_linear():
    # a 60 KiB request in 1-byte feeds must not rescan the buffer each time: each search
    # resumes where the last stopped, less the 2 bytes a terminator may straddle. Counted in
    # bytes searched, not timed: a rescan covers ~3.6e9 bytes, resumed searches at most 6 a feed
    parser = RequestParser()
    buf = parser._buf = _CountingBuffer()
    big = b"a=" + b"x" * 60_000 + b"\n\n"
    for i in range(len(big) - 1):
        assert parser.feed(big[i : i + 1]) == []
    assert parser._buf is buf and 0 < buf.searched <= 6 * len(big), buf.searched
    assert parser.feed(big[-1:]) == [{"a": "x" * 60_000}]
    assert not parser.pending


def test_reply():
    assert format_reply("FILTER out2:") == b"action=FILTER out2:\n\n"
    with pytest.raises(ValueError):
        format_reply("DUNNO\nevil=1")


def test_replies_are_kept_by_action_within_a_bound():
    from policyd import protocol

    for i in range(3 * protocol.REPLIES_MAX):  # HOLD names a tenant: actions can be many
        action = f"HOLD tenant t{i} is held"
        assert format_reply(action) == f"action={action}\n\n".encode()
        assert format_reply(action) == f"action={action}\n\n".encode()  # the kept one
        assert len(protocol._REPLIES) <= protocol.REPLIES_MAX
    for _ in range(2):  # a refused action is refused every time, never kept
        with pytest.raises(ValueError):
            format_reply("DUNNO\revil=1")


@pytest.mark.parametrize("keep", [None, frozenset(("a1", "request"))])
def test_the_attribute_limit_is_the_same_on_every_path(keep):
    """MAX_ATTRIBUTES lines parse, one more is refused: whole in one read (the usual
    case) and a byte at a time (the buffered way)."""
    for lines, ok in ((MAX_ATTRIBUTES, True), (MAX_ATTRIBUTES + 1, False)):
        data = b"".join(b"a%d=1\n" % i for i in range(lines)) + b"\n"
        for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
            parser = RequestParser(keep=keep)
            if ok:
                requests = [r for chunk in chunks for r in parser.feed(chunk)]
                assert len(requests) == 1 and requests[0].get("a1") == "1"
            else:
                with pytest.raises(TooManyAttributes):
                    for chunk in chunks:
                        list(parser.feed(chunk))


def test_a_request_read_whole_or_a_byte_at_a_time_is_the_same():
    """The one-read fast path against the buffered way, on hostile bytes: the same
    requests, or the same error (bad UTF-8, CR line ends, several requests in a read)."""
    rng = random.Random(37)
    pieces = [b"request=smtpd_access_policy", b"a=b", b"sender=x@y", b"\r", b"\xff", b"\xc3\xa9", b"=", b"\n"]
    for _ in range(5_000):
        data = b"\n".join(rng.choice(pieces) for _ in range(rng.randint(1, 6))) + b"\n\n"
        for keep in (None, frozenset(("request", "a", "sender"))):
            outcomes = []
            for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
                parser, got = RequestParser(keep=keep), []
                try:
                    for chunk in chunks:
                        got += parser.feed(chunk)
                    outcomes.append(got)
                except ProtocolError as exc:
                    outcomes.append(type(exc))
            assert outcomes[0] == outcomes[1], data
