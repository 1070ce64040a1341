"""ARF feedback reports (RFC 5965) -> Report records. Sans I/O.

A report is a multipart/report (report-type=feedback-report) whose second part,
message/feedback-report, holds fields such as Feedback-Type and Source-IP, and
whose third part is the original message or its headers. Anything else raises
ReportError with a short kind (for the metric) and a sentence (for the log).
"""

from __future__ import annotations

import binascii
import ipaddress
import quopri
import re
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr


class ReportError(ValueError):
    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


@dataclass(frozen=True)
class Report:
    feedback_type: str  # abuse, fraud, not-spam, ... (lower case)
    source_ip: str  # the address the reporter received the message from: our endpoint
    reporter: str  # the domain of the report's From
    original_mail_from: str  # Original-Mail-From, else the original's Return-Path, else its From
    original_rcpt_to: str  # the first Original-Rcpt-To, else the original's To
    user_agent: str
    message_id: str  # of the original message, when included
    # the ids in the original's Received headers: one is our MTA's queue id, which
    # names the message's experiment arm (``{sb}:arm:<queue id>``)
    queue_ids: tuple[str, ...] = ()

    @property
    def sender_domain(self) -> str:
        return self.original_mail_from.rpartition("@")[2].lower()

    @property
    def recipient_domain(self) -> str:
        return self.original_rcpt_to.rpartition("@")[2].lower()


def text(value: object) -> str:
    """A header value as clean text: undecodable bytes replaced, whitespace folded,
    control characters shown as "?" (the text reaches terminals and logs)."""
    raw = str(value or "")
    clean = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in " ".join(clean.split()))


def address(value: object) -> str:
    """The address in ``Name <a@b>``, ``<a@b>`` or ``a@b``; "" when there is none."""
    found = parseaddr(text(value))[1]
    return found if "@" in found else ""


MAX_PARTS = 8  # a report needs three; a hostile one may carry hundreds of thousands
HEADER_BLOCK_MAX = 256 * 1024  # of an attached original: its headers, never its body


Bytes = bytes | memoryview  # a report's parts are views into it: a 10 MB report is not copied


def _split_parts(body: Bytes, boundary: bytes) -> list[Bytes]:
    """The first MAX_PARTS body parts of a multipart body (RFC 2046 delimiters: a line
    ``--boundary``, the CRLF before it belongs to it). Read lazily: the rest of a huge
    report is never split, copied or parsed."""
    delimiter = re.compile(rb"(?:\A|\r?\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    parts: list[Bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
            if len(parts) >= MAX_PARTS:
                break
        if match.group(1):  # the close delimiter
            break
        start = match.end()
    return parts


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def _split(raw: Bytes) -> tuple[Message, Bytes]:
    """A message's or body part's header fields, and its body, not parsed (a part that
    starts with an empty line has no header fields)."""
    head = bytes(raw[:2])
    if head[:1] == b"\n" or head == b"\r\n":
        return Message(), raw[len(head) if head == b"\r\n" else 1 :]
    end = _BLANK_LINE.search(raw, 0, HEADER_BLOCK_MAX)
    block, body = (raw[: end.start()], raw[end.end() :]) if end else (raw[:HEADER_BLOCK_MAX], raw[len(raw) :])
    return BytesHeaderParser(policy=policy.compat32).parsebytes(bytes(block)), body


def _decoded(part: Message, body: Bytes) -> Bytes:
    """A part's body without its transfer encoding (base64, quoted-printable)."""
    encoding = text(part.get("Content-Transfer-Encoding")).lower()
    try:
        if encoding == "base64":
            return binascii.a2b_base64(body)
        if encoding == "quoted-printable":
            return quopri.decodestring(bytes(body))
    except (binascii.Error, ValueError):
        return b""
    return body


def _header_block(raw: Bytes) -> Message:
    """The header fields at the top of ``raw``: a message/feedback-report body, an
    attached original's headers. The original's body, however deep its own MIME
    nesting, is never parsed."""
    start = 0
    while start < len(raw) and raw[start] in b"\r\n":
        start += 1
    return _split(memoryview(raw)[start:])[0]


# "by mta.example (Postfix) with ESMTP id 4Xb2Kq0Lw7z9" and Exim's "id 1tXyZa-000Abc-7Q";
# "userid 0" has no word boundary before "id"
_RECEIVED_ID = re.compile(r"\bid\s+([A-Za-z0-9][A-Za-z0-9._-]{3,63})\b")
MAX_RECEIVED = 30  # headers looked at: a hostile report may carry thousands
MAX_IDS = 16


def received_ids(headers: Message) -> tuple[str, ...]:
    """The ids the original's Received headers name, top (latest hop) first."""
    ids: dict[str, None] = {}
    for value in (headers.get_all("Received") or [])[:MAX_RECEIVED]:
        for match in _RECEIVED_ID.finditer(text(value)):
            ids[match.group(1)] = None
    return tuple(ids)[:MAX_IDS]


def parse_report(raw: bytes) -> Report:
    """Only what attribution needs is parsed: the report's headers, its first few parts,
    the original's header block. Memory stays a small multiple of the report's size."""
    msg, body = _split(memoryview(raw))
    ctype = msg.get_content_type()
    if ctype != "multipart/report":
        raise ReportError("malformed", f"Content-Type is {text(ctype)}, not multipart/report")
    report_type = text(msg.get_param("report-type", "", header="content-type")).lower()
    if report_type != "feedback-report":
        raise ReportError("malformed", f"report-type is {report_type or 'missing'}, not feedback-report")
    boundary = msg.get_boundary()
    parts = [_split(p) for p in _split_parts(body, boundary.encode("ascii", "replace"))] if boundary else []
    if not parts:
        raise ReportError("malformed", "a multipart/report without parts")
    feedback = next((p for p in parts if p[0].get_content_type() == "message/feedback-report"), None)
    if feedback is None:
        raise ReportError("malformed", "no message/feedback-report part")
    fields = _header_block(_decoded(*feedback))
    feedback_type = text(fields.get("Feedback-Type")).lower()
    if not feedback_type:
        raise ReportError("malformed", "no Feedback-Type field")
    source = text(fields.get("Source-IP")).strip("[]")
    if not source:
        raise ReportError("no_source_ip", "no Source-IP field: the sending IP is unknown")
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        raise ReportError("no_source_ip", f"Source-IP is not an IP address: {source[:60]!r}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    original = next(
        (p for p in parts if p[0].get_content_type() in ("message/rfc822", "text/rfc822-headers")), None
    )
    headers = _header_block(_decoded(*original)) if original is not None else Message()
    mail_from = (
        address(fields.get("Original-Mail-From"))
        or address(headers.get("Return-Path"))
        or address(headers.get("From"))
    )
    rcpt_to = address(fields.get("Original-Rcpt-To"))
    if not rcpt_to:
        to = [a for _, a in getaddresses([text(v) for v in headers.get_all("To", [])]) if "@" in a]
        rcpt_to = to[0] if to else ""
    return Report(
        feedback_type=feedback_type,
        source_ip=str(ip),
        reporter=address(msg.get("From")).rpartition("@")[2].lower(),
        original_mail_from=mail_from,
        original_rcpt_to=rcpt_to,
        user_agent=text(fields.get("User-Agent"))[:120],
        message_id=text(headers.get("Message-ID"))[:200],
        queue_ids=received_ids(headers),
    )
