"""Postfix's socketmap protocol: netstring requests, split anywhere, and bad input."""

from __future__ import annotations

import pytest

from smtp_balancer.requeue.socketmap import RequestParser, SocketmapError, TableRequest, netstring


def test_requests_split_anywhere_and_pipelined() -> None:
    data = netstring("route a@gmail.com") + netstring("reroute out2 5 1tA-B-C x@y.z")
    parser = RequestParser()
    got = []
    for i in range(len(data)):
        got += parser.feed(data[i : i + 1])
    assert got == [TableRequest("route", "a@gmail.com"), TableRequest("reroute", "out2 5 1tA-B-C x@y.z")]
    assert netstring("OK out1:") == b"8:OK out1:,"


@pytest.mark.parametrize(
    "data, why",
    [
        (b"GET / HTTP/1.0\r\n", "length"),
        (b"5:route!", "closing comma"),
        (b"99999999:", "at most"),
        (b"5:route,", "'<name> <key>'"),
        (b"12345678901:", "length"),
    ],
)
def test_garbage_closes_the_connection_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(SocketmapError, match=why):
        RequestParser().feed(data)
