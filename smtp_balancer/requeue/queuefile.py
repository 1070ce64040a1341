"""Postfix queue files, read without Postfix: sans-I/O, bytes in, a QueuedMessage out.

A queue file is a sequence of records: one type byte, the length as base-128
digits (low first, high bit = more), then the data (global/rec_type.h,
record.c). What we need is in the envelope and the extracted segment:
- ``T`` arrival time "sec usec"; ``S`` sender; ``A`` attributes "name=value";
- ``R`` a recipient still to do; ``D`` a recipient done (qmgr rewrites the type
  byte in place once delivered or bounced);
- ``L`` in the envelope or extracted segment: the content filter (FILTER
  ``transport:nexthop``). In the message segment ``L`` is a continued line:
  Postfix uses one letter for both, so the segment decides.
Reading the file directly is about 7x faster than one ``postcat -e`` per message.
"""

from __future__ import annotations

from dataclasses import dataclass

REC_TIME = ord("T")
REC_FROM = ord("S")
REC_ATTR = ord("A")
REC_RCPT = ord("R")
REC_DONE = ord("D")
REC_FILT = ord("L")
REC_MESG = ord("M")
REC_XTRA = ord("X")
REC_END = ord("E")
REC_NORM = ord("N")
REC_CONT = ord("L")
MAX_HEADER_LINES = 200  # classification needs a few headers near the top
MAX_RECORD = 1 << 26  # a length past this is a corrupt file, not a record


class QueueFileError(ValueError):
    """Bytes that are not a complete Postfix queue file."""


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    queue_id: str
    arrival: float  # epoch seconds
    sender: str
    content_filter: str  # "" when the message has none
    pending: tuple[str, ...]  # recipients not yet delivered or bounced
    attributes: tuple[tuple[str, str], ...] = ()
    # the first header lines as queued (unfolded): what the milter classified
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def transport(self) -> str:
        """The content filter's transport: the endpoint a FILTER bound it to."""
        return self.content_filter.partition(":")[0]

    def attribute(self, name: str) -> str:
        for key, value in self.attributes:
            if key == name:
                return value
        return ""


def records(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    i, size = 0, len(data)
    while i < size:
        kind = data[i]
        i += 1
        length = shift = 0
        while True:
            if i >= size:
                raise QueueFileError("truncated record length")
            if shift > 28:
                raise QueueFileError("record length of more than 5 digits")
            byte = data[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if length > MAX_RECORD or i + length > size:
            raise QueueFileError(f"record of {length} bytes past the end of the file")
        out.append((kind, data[i : i + length]))
        i += length
    return out


def parse_queue_file(queue_id: str, data: bytes) -> QueuedMessage:
    """The envelope of one queue file; QueueFileError for anything incomplete
    (a file still being written has no end record yet)."""
    arrival = 0.0
    sender = ""
    content_filter = ""
    pending: list[str] = []
    attributes: list[tuple[str, str]] = []
    segment = "envelope"
    ended = False
    lines: list[str] = []
    partial = ""  # a long header line arrives as L records, then its final N record
    in_headers = True
    for kind, value in records(data):
        if kind == REC_MESG:
            segment = "message"
        elif kind == REC_XTRA:
            segment = "extracted"
        elif kind == REC_END:
            ended = True
            break
        elif segment == "message":
            if not in_headers or len(lines) >= MAX_HEADER_LINES or kind not in (REC_NORM, REC_CONT):
                continue  # the body: never read, never trusted for routing
            partial += value.decode("utf-8", "replace")
            if kind == REC_CONT:
                continue
            if not partial:
                in_headers = False  # the empty line after the headers
            else:
                lines.append(partial)
            partial = ""
        elif kind == REC_TIME:
            try:
                arrival = float(value.split()[0])
            except (ValueError, IndexError) as exc:
                raise QueueFileError(f"bad arrival time {value[:40]!r}") from exc
        elif kind == REC_FROM:
            sender = value.decode("utf-8", "replace")
        elif kind == REC_RCPT:
            pending.append(value.decode("utf-8", "replace"))
        elif kind == REC_FILT:
            content_filter = value.decode("utf-8", "replace")
        elif kind == REC_ATTR:
            name, _, text = value.decode("utf-8", "replace").partition("=")
            attributes.append((name, text))
    if not ended:
        raise QueueFileError("no end record (still being written, or truncated)")
    return QueuedMessage(
        queue_id,
        arrival,
        sender,
        content_filter,
        tuple(pending),
        tuple(attributes),
        unfold(lines),
    )


def unfold(lines: list[str]) -> tuple[tuple[str, str], ...]:
    """Header lines (continuations start with white space) as (name, value) pairs."""
    out: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            name, value = out[-1]
            out[-1] = (name, value + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            out.append((name.strip(), value.strip()))
    return tuple(out)
