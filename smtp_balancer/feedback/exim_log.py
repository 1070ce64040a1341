"""Exim main log lines -> Delivery records, sans I/O (the feedback daemon's Exim parser).

Exim 4.96 writes one line per recipient and attempt (seen on the real Exim in
integration/test_feedback_exim.py):

  <time> 1xYgXf-0006Qf-2X => u0@gmail.com R=sb_direct T=sb_out2 H=gmail.com [192.0.2.1] C="250 ..."
  <time> 1xYgXf-0006Qf-2h == u4@gmail.com R=sb_direct T=sb_out2 defer (-44) H=gmail.com
         [192.0.2.1]: SMTP error from remote mail server after RCPT TO:<u4@gmail.com>: 421-4.7.28 ...
  <time> 1xYgXf-0006Qf-2h ** v4@yahoo.com R=sb_direct T=sb_out2 H=... [...]: SMTP error ...: 550 5.1.1 ...

``=>`` delivered, ``->`` another recipient of the same delivery, ``==`` deferred,
``**`` failed (bounced). The rendered config gives each endpoint its own
transport (``T=sb_<endpoint>``), since Exim logs no source address on ``==`` and
``**`` lines even with ``+outgoing_interface``. Lines that are not delivery results
return None; delivery-shaped lines that do not parse raise LogLineError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.delivery_log import Delivery, LogLineError

FLAGS = {"=>": "sent", "->": "sent", "==": "deferred", "**": "bounced"}
# the markers a delivery result carries, for a cheap pre-filter
MARKERS = (" => ", " -> ", " == ", " ** ")

# time, zone, [pid], then the message id
_HEAD = (
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [+-]\d{4})?(?: \[\d+\])? "
    r"(?P<id>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) "
)
_LINE = re.compile(_HEAD + r"(?P<flag>=>|->|==|\*\*) (?P<rest>.*)$")
# an arrival: "<= sender@dom H=..." (the null sender is "<= <>")
_ARRIVAL = re.compile(_HEAD + r"<= (?P<sender><>|\S+)")
# log_selector +sender_on_delivery adds the sender to each delivery line
_SENDER = re.compile(r" F=<(?P<sender>[^>]*)>")
_RECIPIENT = re.compile(r"^(?P<rcpt>\S+)(?: (?:\([^)]*\)|<[^>]*>))*")
_TRANSPORT = re.compile(r" T=(?P<t>\S+)")
_HOST = re.compile(r" H=(?P<host>\S+) \[(?P<addr>[^\]]+)\](?::(?P<port>\d+))?")
_CONFIRM = re.compile(r' C="(?P<c>(?:[^"\\]|\\.)*)"')
# "SMTP error from remote mail server after RCPT TO:<a@b>: " before the reply itself
_SMTP_ERROR = re.compile(r"^SMTP error from remote mail server after .*?: (?=[2-5]\d\d[ -])")
# log_selector +deliver_time: "DT=0.003s" (with +millisec), "DT=2s", "DT=1m5s"
_DELIVER_TIME = re.compile(r" DT=(?P<dt>(?:\d+(?:\.\d+)?[wdhms])+)(?= |$)")
_UNIT_S = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_TIME_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_DSN = re.compile(r"\b[245]\d\d[ -](?P<dsn>[245]\.\d{1,3}\.\d{1,3})\b")
_DEFAULT_DSN = {"sent": "2.0.0", "deferred": "4.0.0", "bounced": "5.0.0"}


def exim_seconds(text: str) -> float:
    """Exim's printed time ("1m5s", "0.003s") in seconds."""
    return sum(float(n) * _UNIT_S[unit] for n, unit in _TIME_PART.findall(text))


def parse_exim_arrival(line: str) -> tuple[str, str] | None:
    """An arrival (``<=``) line -> (message id, envelope sender); None for any other line."""
    m = _ARRIVAL.match(line)
    if m is None:
        return None
    sender = m.group("sender")
    return m.group("id"), "" if sender == "<>" else sender


def parse_exim_line(line: str, providers: ProviderTable, transports: Mapping[str, str]) -> Delivery | None:
    """``transports``: Exim transport name -> endpoint (render.exim.transport_names)."""
    m = _LINE.match(line.rstrip("\n"))
    if m is None:
        return None
    status = FLAGS[m.group("flag")]
    rest = m.group("rest")
    r = _RECIPIENT.match(rest)
    if r is None or "@" not in r.group("rcpt"):
        raise LogLineError(f"unparsable Exim delivery line: {line[:160]!r}")
    recipient = r.group("rcpt").rstrip(":").strip("<>")
    t = _TRANSPORT.search(rest)
    transport = t.group("t") if t else ""
    h = _HOST.search(rest)
    host, addr, port = (h.group("host"), h.group("addr"), h.group("port")) if h else ("", "", None)
    transfer_s = None
    if status == "sent":
        c = _CONFIRM.search(rest)
        response = c.group("c") if c else ""
        # after the quoted reply, which a hostile server could fill with " DT=..."
        if (dt := _DELIVER_TIME.search(rest, c.end() if c else 0)) is not None:
            transfer_s = exim_seconds(dt.group("dt"))
    else:
        # the reason follows the host's "]: " (or the router/transport part's ": ")
        tail = rest[h.end() :] if h else rest[r.end() :]
        response = tail.split(": ", 1)[1] if ": " in tail else tail.strip()
        response = _SMTP_ERROR.sub("", response, count=1)
    f = _SENDER.search(rest)
    d = _DSN.search(response)
    provider = providers.for_mx(host) if host else "other"
    if provider == "other":
        provider = providers.for_domain(recipient.rpartition("@")[2])
    return Delivery(
        queue_id=m.group("id"),
        endpoint=transports.get(transport, ""),
        program=transport,
        recipient=recipient,
        relay_host=host,
        relay_addr=addr,
        relay_port=int(port) if port else None,
        delay_s=0.0,  # Exim logs the message's age only with +queue_time
        delays=(),
        dsn=d.group("dsn") if d else _DEFAULT_DSN[status],
        status=status,
        response=response,
        provider=provider,
        sender=f.group("sender") if f else None,
        transfer_s=transfer_s,
    )
