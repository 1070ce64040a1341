"""The Postfix policy-delegation protocol, sans I/O.

A request is ``name=value`` lines ending with an empty line; the reply is
``action=...`` and an empty line (SMTPD_POLICY_README). ``RequestParser`` is fed
bytes and hands back complete requests. It knows no sockets, finds the framing
in linear time (each byte is scanned once, h11-style), and enforces hard limits
so that no client can make it buffer without bound.
"""

from __future__ import annotations

from typing import ClassVar, Final

from mypy_extensions import i64

MAX_REQUEST_BYTES: Final = 64 * 1024
MAX_ATTRIBUTES: Final = 256

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


# the kept names as flat bytes tables, read by the compiled byte loops without a call
# or a reference count: a line's name is hashed as it is scanned, its slot holds the
# one kept name of that hash (or none), and only that name is compared, byte by byte.
# A line's name is never made into a string or hashed as one (hashing each line's
# fresh name was a third of the parse), and a non-kept line costs one table read:
# nested lists cost a cache miss per level per line, on a request whose data is cold.
HASH_SLOTS: Final = 1024
HASH_MASK: Final = HASH_SLOTS - 1
MULTIPLIERS: Final = tuple(range(31, 4096, 2))  # tried in turn until no two kept names share a slot


def name_hash(raw: bytes, multiplier: int) -> int:
    """What ``RequestParser._kept`` computes of a line's name as it scans it."""
    h = 0
    for byte in raw:
        h = (h * multiplier + byte) & 0xFFFFFF
    return h & HASH_MASK


class KeptNames:
    """``keep``'s ASCII names in slots (``slots[hash]``: 1 + the name's index, 0 for
    none), their bytes one after another in ``blob`` (``starts``, ``sizes``: 2 and 1
    bytes each), and ``names`` the strings handed back, their hashes already known.
    ``usable`` is False when the names do not fit (longer than 255 bytes, more than
    255 of them, or no multiplier spreads them): every request takes the general path."""

    def __init__(self, keep: frozenset[str]) -> None:
        names = sorted(n for n in keep if n and n.isascii())  # no ASCII line has another
        raws = [n.encode() for n in names]
        self.names = names
        self.multiplier = 0
        self.slots = self.starts = self.sizes = b""
        self.blob = b"".join(raws)
        if len(names) > 255 or len(self.blob) >= 1 << 16 or any(len(r) > 255 for r in raws):
            return
        starts, offset = bytearray(), 0  # where each name starts in blob
        for raw in raws:
            starts += offset.to_bytes(2, "little")
            offset += len(raw)
        self.starts = bytes(starts)
        self.sizes = bytes(len(r) for r in raws)
        for multiplier in MULTIPLIERS:
            hashes = [name_hash(r, multiplier) for r in raws]
            if len(set(hashes)) == len(hashes):
                slots = bytearray(HASH_SLOTS)
                for i, h in enumerate(hashes):
                    slots[h] = i + 1
                self.multiplier, self.slots = multiplier, bytes(slots)
                return

    @property
    def usable(self) -> bool:
        return self.multiplier > 0


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
        self._names = KeptNames(keep if keep is not None else frozenset())
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for the terminator

    @property
    def pending(self) -> bool:
        """True when a partial request is buffered (EOF now would cut it off)."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[PolicyRequest]:
        """Add bytes; every request they complete. Raises ProtocolError, and then the
        requests completed before the bad one are not handed back either: the
        connection closes (a list, not a generator: cheaper per request)."""
        if not self._buf and len(data) <= self.max_bytes + 2:
            # the usual case: one whole request in one read (what Postfix sends), found
            # in the decoded text: compiled code searches a str natively, where each
            # bytes method is a call that parses its arguments
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = ""  # the way below names the request that is not UTF-8
            end = text.find("\n\n")
            if 0 < end == len(text) - 2 and "\r" not in text:
                return [self._parse_text(text, end, data)]
        self._buf += data
        requests: list[PolicyRequest] = []
        while True:
            end = self._find_end()
            if end < 0:
                if len(self._buf) > self.max_bytes:
                    raise Oversized(f"request exceeds {self.max_bytes} bytes without an empty line")
                return requests
            raw, cut = bytes(self._buf[:end]), end
            # the terminator is "\n\n" or "\n\r\n"
            cut += 2 if self._buf[end + 1 : end + 2] == b"\n" else 3
            del self._buf[:cut]
            self._scanned = 0
            if len(raw) > self.max_bytes:
                raise Oversized(f"request exceeds {self.max_bytes} bytes")
            requests.append(self._parse(raw))

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
        return self._parse_text(text, len(text), raw)

    def _parse_text(self, text: str, end: int, data: bytes) -> PolicyRequest:
        """The request in ``text[:end]`` (what follows is its terminator), decoded
        from ``data``."""
        # ASCII (as long as its bytes): a byte's offset is its character's
        names = self._names
        if self.keep is not None and names.usable and len(text) == len(data) and "\r" not in text:
            # counts the lines itself: None for too many, to be named below
            fast = self._kept(
                data,
                text,
                end,
                self.max_attributes,
                names.slots,
                names.multiplier,
                names.blob,
                names.starts,
                names.sizes,
                names.names,
            )
            if fast is not None:
                return fast
        if end < len(text):
            text = text[:end]
        if text.count("\n") >= self.max_attributes:
            raise TooManyAttributes(f"request has more than {self.max_attributes} attributes")
        if self.keep is None and "\r" not in text:
            fast = self._split(text)
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
    def _kept(
        data: bytes,
        text: str,
        end: i64,
        max_attributes: i64,
        slots: bytes,
        multiplier: i64,
        blob: bytes,
        starts: bytes,
        sizes: bytes,
        names: list[str],
    ) -> PolicyRequest | None:
        """The kept attributes (``KeptNames``) of the lines in the first ``end`` bytes
        of ``data``, an ASCII request, and ``text`` its decoding; the last of a name
        wins, as in a dict. None when a line is not name=value, or there are more than
        ``max_attributes``. Compiled, the byte loops are native: no call per line."""
        request: PolicyRequest = {}
        pos: i64 = 0
        lines: i64 = 0
        while True:
            lines += 1
            if lines > max_attributes:
                return None
            eq = pos  # the line's first "=", or its end
            h: i64 = 0
            while eq < end:
                byte: i64 = data[eq]
                if byte == 61 or byte == 10:  # "=", "\n"
                    break
                h = (h * multiplier + byte) & 0xFFFFFF
                eq += 1
            if eq <= pos or eq >= end or data[eq] != 61:  # an empty name, or no "="
                return None
            eol = eq + 1
            while eol < end and data[eol] != 10:
                eol += 1
            slot: i64 = slots[h & HASH_MASK]
            if slot:
                index = slot - 1
                size = eq - pos
                if sizes[index] == size:
                    start: i64 = starts[2 * index] + 256 * starts[2 * index + 1]
                    k: i64 = 0
                    while k < size and data[pos + k] == blob[start + k]:
                        k += 1
                    if k == size:
                        request[names[index]] = text[eq + 1 : eol]
            if eol >= end:
                return request
            pos = eol + 1

    def eof(self) -> None:
        """The peer closed; raises Truncated if it left half a request."""
        if self._buf.strip():
            raise Truncated(f"connection closed inside a request ({len(self._buf)} bytes buffered)")


# replies by action: a daemon gives a handful of actions (DUNNO, FILTER <endpoint>:,
# ...), each made once; cleared when full (a HOLD names its tenant)
_REPLIES: Final[dict[str, bytes]] = {}
REPLIES_MAX: Final = 256


def format_reply(action: str) -> bytes:
    """``action=<action>`` plus the empty line; the action may not break framing."""
    reply = _REPLIES.get(action)
    if reply is None:
        if "\n" in action or "\r" in action:
            raise ValueError("a policy action cannot contain a newline")
        reply = f"action={action}\n\n".encode()
        if len(_REPLIES) >= REPLIES_MAX:
            _REPLIES.clear()
        _REPLIES[action] = reply
    return reply
