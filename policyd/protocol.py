"""The Postfix policy-delegation protocol, sans I/O.

A request is ``name=value`` lines ending with an empty line; the reply is
``action=...`` and an empty line (SMTPD_POLICY_README). ``RequestParser`` is fed
bytes and hands back complete requests. It knows no sockets, finds the framing
in linear time (each byte is scanned once, h11-style), and enforces hard limits
so that no client can make it buffer without bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

MAX_REQUEST_BYTES = 64 * 1024
MAX_ATTRIBUTES = 256

PolicyRequest = dict[str, str]


class ProtocolError(Exception):
    """A request we will not serve; ``kind`` is the metric label."""

    kind: ClassVar[str] = "malformed"


class Oversized(ProtocolError):
    kind: ClassVar[str] = "oversized"


class TooManyAttributes(ProtocolError):
    kind: ClassVar[str] = "too_many_attributes"


class MalformedLine(ProtocolError):
    kind: ClassVar[str] = "malformed"


class NotUtf8(ProtocolError):
    kind: ClassVar[str] = "not_utf8"


class Truncated(ProtocolError):
    kind: ClassVar[str] = "truncated"


class RequestParser:
    """``keep``: the attribute names to hand back (None: all of them). Postfix sends
    about 30 attributes and a server reads a dozen: the others are checked for
    framing (each line ``name=value``) but never made into strings."""

    def __init__(
        self,
        max_bytes: int = MAX_REQUEST_BYTES,
        max_attributes: int = MAX_ATTRIBUTES,
        keep: frozenset[str] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_attributes = max_attributes
        self.keep = keep
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for the terminator

    @property
    def pending(self) -> bool:
        """True when a partial request is buffered (EOF now would cut it off)."""
        return bool(self._buf)

    def feed(self, data: bytes) -> Iterator[PolicyRequest]:
        """Add bytes; yield every complete request. Raises ProtocolError."""
        if not self._buf:
            # the usual case: one whole request in one read (what Postfix sends)
            end = data.find(b"\n\n")
            # find, not `in`: CPython's bytes `in` first tries the operand as an int,
            # raising and formatting a TypeError on every request
            if 0 < end == len(data) - 2 and end <= self.max_bytes and data.find(b"\r") < 0:
                yield self._parse(data[:end])
                return
        self._buf += data
        while True:
            end = self._find_end()
            if end < 0:
                if len(self._buf) > self.max_bytes:
                    raise Oversized(f"request exceeds {self.max_bytes} bytes without an empty line")
                return
            raw, cut = bytes(self._buf[:end]), end
            # the terminator is "\n\n" or "\n\r\n"
            cut += 2 if self._buf[end + 1 : end + 2] == b"\n" else 3
            del self._buf[:cut]
            self._scanned = 0
            if len(raw) > self.max_bytes:
                raise Oversized(f"request exceeds {self.max_bytes} bytes")
            yield self._parse(raw)

    def _find_end(self) -> int:
        """Index of the newline that ends the last attribute line, or -1."""
        buf = self._buf
        if buf[:1] == b"\n" or buf[:2] == b"\r\n":
            raise MalformedLine("empty request")
        # resume where the last search stopped, less the 2 bytes a terminator may straddle
        start = max(self._scanned - 2, 0)
        found = [i for i in (buf.find(b"\n\n", start), buf.find(b"\n\r\n", start)) if i >= 0]
        if found:
            return min(found)
        self._scanned = len(buf)
        return -1

    def _parse(self, raw: bytes) -> PolicyRequest:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotUtf8(f"request is not UTF-8 (byte {exc.start})") from exc
        if text.count("\n") >= self.max_attributes:
            raise TooManyAttributes(f"request has more than {self.max_attributes} attributes")
        if "\r" not in text:
            fast = self._split(text) if self.keep is None else self._kept(text, self.keep)
            if fast is not None:
                return fast
        # the slow path: CR line ends, or a bad line to name in the error
        request = {}
        for line in text.split("\n"):
            name, sep, value = line.rstrip("\r").partition("=")
            if not sep or not name:
                raise MalformedLine(f"line without name=value: {line[:60]!r}")
            request[name] = value
        if self.keep is not None:
            return {name: value for name, value in request.items() if name in self.keep}
        return request

    @staticmethod
    def _split(text: str) -> PolicyRequest | None:
        """Every attribute (None when a line is not name=value)."""
        try:  # split in C; a line without "=" makes dict() refuse it
            request: PolicyRequest = dict([line.split("=", 1) for line in text.split("\n")])  # type: ignore[misc]
        except ValueError:
            return None
        return None if "" in request else request

    @staticmethod
    def _kept(text: str, keep: frozenset[str]) -> PolicyRequest | None:
        """The attributes in ``keep``, the last of a name winning as in a dict (None when
        a line is not name=value)."""
        request: PolicyRequest = {}
        end = len(text)
        pos = 0
        while True:
            eol = text.find("\n", pos)
            if eol < 0:
                eol = end
            eq = text.find("=", pos, eol)
            if eq <= pos:  # no "=", or an empty name
                return None
            name = text[pos:eq]
            if name in keep:
                request[name] = text[eq + 1 : eol]
            if eol == end:
                return request
            pos = eol + 1

    def eof(self) -> None:
        """The peer closed; raises Truncated if it left half a request."""
        if self._buf.strip():
            raise Truncated(f"connection closed inside a request ({len(self._buf)} bytes buffered)")


def format_reply(action: str) -> bytes:
    """``action=<action>`` plus the empty line; the action may not break framing."""
    if "\n" in action or "\r" in action:
        raise ValueError("a policy action cannot contain a newline")
    return f"action={action}\n\n".encode()
