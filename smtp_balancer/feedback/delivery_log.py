"""Postfix delivery log lines -> Delivery records, sans I/O (the feedback daemon's parser).

A delivery line names the transport by its syslog_name: our rendered master.cf
sets ``-o syslog_name=postfix/<endpoint>``, so ``postfix/out2/smtp[123]`` is a
delivery through endpoint out2; ``postfix/smtp`` is Postfix's default
transport. The provider comes from the relay host's MX suffix, so no DNS is
needed. Lines that are not delivery results return None; lines that look like
one but do not parse raise LogLineError, so the caller can count them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from smtp_balancer.decision.providers import ProviderTable

STATUSES = frozenset({"sent", "deferred", "bounced", "expired"})

# syslog or RFC 3339 timestamp, host, then the Postfix program and its pid
_PREFIX = r"^(?:\w{3} +\d{1,2} [\d:]{8}|\d{4}-\d\d-\d\dT\S+) \S+ (?P<program>postfix[\w/.-]*)\[\d+\]: "
_LINE = re.compile(_PREFIX + r"(?P<queue_id>[0-9A-Za-z]+): (?P<rest>.*)$")
_DELIVERY = re.compile(
    r"^to=<(?P<recipient>[^>]*)>,(?: orig_to=<[^>]*>,)? relay=(?P<relay>[^,]+),"
    r"(?: conn_use=\d+,)? delay=(?P<delay>[\d.]+), delays=(?P<delays>[\d./]+),"
    r" dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), status=(?P<status>\w+) \((?P<response>.*)\)$"
)
# qmgr's "from=<a@b>, size=.., nrcpt=.. (queue active)", pickup's "uid=0 from=<a@b>"
_SENDER = re.compile(r"^(?:uid=\d+ )?from=<(?P<sender>[^>]*)>")
_RELAY = re.compile(r"^(?P<host>[^\[\s]+)\[(?P<addr>[^\]]*)\](?::(?P<port>\d+))?$")
DEFAULT_TRANSPORT = ""


class LogLineError(ValueError):
    """A delivery-shaped line that does not parse."""


@dataclass(slots=True, init=False)
class Delivery:
    """One delivery line. Not frozen (never changed once made, all the same) and its own
    __init__: compiled (setup.py), a frozen dataclass's generated __init__ costs ten
    times as much, per line."""

    queue_id: str
    endpoint: str  # "" for Postfix's default transport
    program: str  # smtp, lmtp, error, ...
    recipient: str
    relay_host: str  # "" for relay=none
    relay_addr: str
    relay_port: int | None
    delay_s: float
    delays: tuple[float, ...]  # before queue manager, in queue, connection setup, transmission
    dsn: str
    status: str  # sent | deferred | bounced | expired
    response: str
    provider: str
    # invalid_recipient, rate_limited, ... (feedback/classify.py); "none" when delivered
    bounce_class: str = "none"
    # the envelope sender when the line names it (Exim with +sender_on_delivery), else None
    sender: str | None = None
    tenant: str = "other"  # feedback/tenants.py
    # seconds to connect and transmit: Postfix's delays c + d, Exim's DT= (log_selector
    # +deliver_time); None when the line does not say
    transfer_s: float | None = None

    def __init__(
        self,
        queue_id: str,
        endpoint: str,
        program: str,
        recipient: str,
        relay_host: str,
        relay_addr: str,
        relay_port: int | None,
        delay_s: float,
        delays: tuple[float, ...],
        dsn: str,
        status: str,
        response: str,
        provider: str,
        bounce_class: str = "none",
        sender: str | None = None,
        tenant: str = "other",
        transfer_s: float | None = None,
    ) -> None:
        self.queue_id = queue_id
        self.endpoint = endpoint
        self.program = program
        self.recipient = recipient
        self.relay_host = relay_host
        self.relay_addr = relay_addr
        self.relay_port = relay_port
        self.delay_s = delay_s
        self.delays = delays
        self.dsn = dsn
        self.status = status
        self.response = response
        self.provider = provider
        self.bounce_class = bounce_class
        self.sender = sender
        self.tenant = tenant
        self.transfer_s = transfer_s

    def but(
        self,
        *,
        queue_id: str | None = None,
        endpoint: str | None = None,
        bounce_class: str | None = None,
        tenant: str | None = None,
    ) -> Delivery:
        """A copy with these fields changed: ``dataclasses.replace`` without its cost (it
        reads every field's definition on each call)."""
        return Delivery(
            self.queue_id if queue_id is None else queue_id,
            self.endpoint if endpoint is None else endpoint,
            self.program,
            self.recipient,
            self.relay_host,
            self.relay_addr,
            self.relay_port,
            self.delay_s,
            self.delays,
            self.dsn,
            self.status,
            self.response,
            self.provider,
            self.bounce_class if bounce_class is None else bounce_class,
            self.sender,
            self.tenant if tenant is None else tenant,
            self.transfer_s,
        )

    @property
    def recipient_domain(self) -> str:
        return self.recipient.rpartition("@")[2].lower()


def split_program(program: str) -> tuple[str, str]:
    """``postfix/out2/smtp`` -> ("out2", "smtp"); ``postfix/smtp`` -> ("", "smtp")."""
    parts = program.split("/")
    if len(parts) < 2:
        return DEFAULT_TRANSPORT, program
    return "/".join(parts[1:-1]), parts[-1]


# Postfix 3.7 logs this and connects from the host's default address instead: the
# mail still leaves, from the wrong IP (integration/test_unplumbed_postfix.py)
BIND_ERROR = "smtp_connect_addr: bind "
_BIND_WARNING = re.compile(_PREFIX + "warning: " + BIND_ERROR)


def bind_error_endpoint(line: str) -> str | None:
    """The endpoint of a bind warning line (``postfix/out2/smtp``), else None."""
    m = _BIND_WARNING.match(line)
    return split_program(m.group("program"))[0] if m else None


def parse_sender(line: str) -> tuple[str, str] | None:
    """A message's sender line -> (queue id, envelope sender); None for any other line."""
    m = _LINE.match(line.rstrip("\n"))
    if m is None:
        return None
    s = _SENDER.match(m.group("rest"))
    return (m.group("queue_id"), s.group("sender")) if s else None


REQUEUED_MARK = " orig_id="
# pickup's line for a message `postsuper -r` requeued: "NEWID: uid=0 from=<a@b> orig_id=OLDID"
_ORIG_ID = re.compile(r" orig_id=(?P<old>[0-9A-Za-z]+)$")


def parse_requeue(line: str) -> tuple[str, str] | None:
    """(new queue id, old queue id) from pickup's line for a requeued message, else None."""
    m = _LINE.match(line.rstrip("\n"))
    if m is None or not m.group("program").endswith("/pickup"):
        return None
    o = _ORIG_ID.search(m.group("rest"))
    return (m.group("queue_id"), o.group("old")) if o and o.group("old") != m.group("queue_id") else None


def parse_line(line: str, providers: ProviderTable) -> Delivery | None:
    m = _LINE.match(line.rstrip("\n"))
    if m is None:
        return None
    rest = m.group("rest")
    if not rest.startswith("to=<"):
        return None  # from=, message-id=, removed, and the like: not a delivery result
    d = _DELIVERY.match(rest)
    if d is None:
        raise LogLineError(f"unparsable delivery line: {line[:160]!r}")
    status = d.group("status")
    if status not in STATUSES:
        raise LogLineError(f"unknown delivery status {status!r}")
    endpoint, program = split_program(m.group("program"))
    relay = d.group("relay")
    host = addr = ""
    port = None
    if relay != "none":
        r = _RELAY.match(relay)
        if r is None:
            raise LogLineError(f"unparsable relay {relay!r}")
        host, addr = r.group("host"), r.group("addr")
        port = int(r.group("port")) if r.group("port") else None
    recipient = d.group("recipient")
    delays = tuple(float(x) for x in d.group("delays").split("/"))
    # the relay's MX suffix names the provider; without one (no connection), the domain does
    provider = providers.for_mx(host) if host else "other"
    if provider == "other":
        provider = providers.for_domain(recipient.rpartition("@")[2])
    return Delivery(
        queue_id=m.group("queue_id"),
        endpoint=endpoint,
        program=program,
        recipient=recipient,
        relay_host=host,
        relay_addr=addr,
        relay_port=port,
        delay_s=float(d.group("delay")),
        delays=delays,
        dsn=d.group("dsn"),
        status=status,
        response=d.group("response"),
        provider=provider,
        transfer_s=delays[2] + delays[3] if len(delays) == 4 else None,
    )
