"""The per-connection protocol state without sockets: ordering, waiting, EOF, errors."""

from __future__ import annotations

import pytest

from policyd.connection import ConnectionState
from policyd.protocol import ProtocolError
from policyd.session import Drawn
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Pending


def request(n: int, state: str = "RCPT") -> bytes:
    return f"request=smtpd_access_policy\nprotocol_state={state}\nrecipient=r{n}@x.test\n\n".encode()


def answers(slow: set[str]):  # type: ignore[no-untyped-def]
    """An answer function: DUNNO at once, or a Pending for recipients in ``slow``."""
    seen: list[str] = []

    def answer(req):  # type: ignore[no-untyped-def]
        seen.append(req["recipient"])
        if req["recipient"] in slow:
            return Drawn(req, Pending(Facts(recipients=(req["recipient"],)), None))
        return f"DUNNO {req['recipient']}"

    return answer, seen


def test_requests_in_one_chunk_are_answered_in_order():
    answer, _ = answers(set())
    conn = ConnectionState(answer)
    replies = conn.receive_data(request(1) + request(2) + request(3)[:10])
    assert replies == [b"action=DUNNO r1@x.test\n\n", b"action=DUNNO r2@x.test\n\n"]
    assert conn.mid_request and not conn.finished
    assert conn.receive_data(request(3)[10:]) == [b"action=DUNNO r3@x.test\n\n"]


def test_a_waiting_request_holds_back_the_ones_behind_it():
    answer, seen = answers({"r2@x.test"})
    conn = ConnectionState(answer)
    assert conn.receive_data(request(1) + request(2) + request(3)) == [b"action=DUNNO r1@x.test\n\n"]
    assert isinstance(conn.waiting, Drawn) and conn.waiting.pending.facts.recipients == ("r2@x.test",)
    assert seen == ["r1@x.test", "r2@x.test"]  # r3 not even looked at while r2 waits
    assert conn.receive_data(request(4)) == []  # still behind r2
    assert conn.answered("FILTER out2:") == [
        b"action=FILTER out2:\n\n",
        b"action=DUNNO r3@x.test\n\n",
        b"action=DUNNO r4@x.test\n\n",
    ]
    assert conn.waiting is None


def exim_request(n: int) -> bytes:
    """As the rendered Exim ACL sends it: the recipients listed (our extension)."""
    return (
        "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\n"
        f"recipient=r{n}@x.test\nrecipients=r{n}@x.test\n\n"
    ).encode()


@pytest.mark.parametrize("slow", [False, True])
def test_exims_one_request_finishes_the_connection_once_answered(slow: bool):
    """${readsocket} sends one request and reads until end-of-file: answered, the
    connection is finished without waiting for Exim's shutdown to be read."""
    answer, _ = answers({"r1@x.test"} if slow else set())
    conn = ConnectionState(answer)
    replies = conn.receive_data(exim_request(1))
    if slow:
        assert replies == [] and not conn.finished
        replies = conn.answered("FILTER out1:")
    assert replies == [b"action=FILTER out1:\n\n" if slow else b"action=DUNNO r1@x.test\n\n"]
    assert conn.finished and not conn.eof


def test_a_postfix_connection_is_not_finished_by_its_answers():
    answer, _ = answers(set())
    conn = ConnectionState(answer)
    conn.receive_data(request(1) + request(2, "END-OF-MESSAGE"))
    assert not conn.finished  # Postfix sends its next request on the same connection


def test_eof_after_the_request_answers_then_finishes():
    answer, _ = answers({"r1@x.test"})
    conn = ConnectionState(answer)
    assert conn.receive_data(request(1, "END-OF-MESSAGE")) == []
    assert conn.receive_eof() == [] and not conn.finished  # Exim shut its side; r1 still waits
    assert conn.answered("FILTER out1:") == [b"action=FILTER out1:\n\n"]
    assert conn.finished


def test_a_cut_off_request_at_eof_is_a_protocol_error():
    answer, _ = answers(set())
    conn = ConnectionState(answer)
    conn.receive_data(request(1)[:20])
    with pytest.raises(ProtocolError):
        conn.receive_eof()


def test_a_protocol_error_drops_what_was_queued():
    answer, seen = answers({"r1@x.test"})
    conn = ConnectionState(answer)
    conn.receive_data(request(1))
    with pytest.raises(ProtocolError):
        conn.receive_data(request(2) + b"no equals sign\n\n")
    assert not conn.queue and seen == ["r1@x.test"]


def test_replies_come_in_request_order_however_the_bytes_arrive():
    """Seeded: 300 requests cut into random reads, a random third of them waiting on a
    draw; the replies, read as they come, are in request order."""
    import random

    rng = random.Random(7)
    for _ in range(20):
        names = [f"r{n}@x.test" for n in range(300)]
        answer, _ = answers({n for n in names if rng.random() < 0.33})
        conn = ConnectionState(answer)
        data = b"".join(request(n) for n in range(300))
        replies: list[bytes] = []
        while data:
            cut = rng.randint(1, 400)
            replies += conn.receive_data(data[:cut])
            data = data[cut:]
            while isinstance(conn.waiting, Drawn) and rng.random() < 0.5:
                replies += conn.answered(f"DUNNO {conn.waiting.pending.facts.recipients[0]}")
        while isinstance(conn.waiting, Drawn):
            replies += conn.answered(f"DUNNO {conn.waiting.pending.facts.recipients[0]}")
        assert replies == [f"action=DUNNO {n}\n\n".encode() for n in names]
