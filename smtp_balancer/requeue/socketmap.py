"""Postfix's socketmap protocol, sans-I/O: netstrings in, netstrings out.

A request is the netstring ``<table-name> <key>``; the reply is ``OK <value>``,
``NOTFOUND ``, ``TEMP <reason>``, ``TIMEOUT <reason>`` or ``PERM <reason>``
(socketmap_table(5)). Postfix keeps the connection open for more requests.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_REQUEST = 10_000  # socketmap_max_reply is 100000; a request is a name and an address


class SocketmapError(ValueError):
    """Bytes that are not a netstring request: the connection is closed."""


@dataclass(frozen=True, slots=True)
class TableRequest:
    name: str
    key: str


def netstring(text: str) -> bytes:
    data = text.encode()
    return str(len(data)).encode() + b":" + data + b","


class RequestParser:
    """Feed bytes, take complete requests; a SocketmapError ends the connection."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[TableRequest]:
        self._buf += data
        out = []
        while True:
            colon = self._buf.find(b":")
            if colon < 0:
                if len(self._buf) > 10 or (self._buf and not self._buf.isdigit()):
                    raise SocketmapError("not a netstring length")
                return out
            digits = bytes(self._buf[:colon])
            if not digits.isdigit() or len(digits) > 10:
                raise SocketmapError(f"bad netstring length {digits[:12]!r}")
            length = int(digits)
            if length > MAX_REQUEST:
                raise SocketmapError(f"request of {length} bytes (at most {MAX_REQUEST})")
            end = colon + 1 + length
            if len(self._buf) < end + 1:
                return out
            if self._buf[end] != ord(","):
                raise SocketmapError("netstring without its closing comma")
            body = bytes(self._buf[colon + 1 : end]).decode("utf-8", "replace")
            del self._buf[: end + 1]
            name, sep, key = body.partition(" ")
            if not sep or not name or not key:
                raise SocketmapError(f"request is not '<name> <key>': {body[:80]!r}")
            out.append(TableRequest(name, key))
