"""A recording SMTP sink (aiosmtpd) that can play a mailbox provider.

It records, per delivered message, the peer IP (the source IP of the route
taken), the HELO name, the envelope and the headers. Replies can be scripted
per (source IP, recipient domain), e.g. ``421-4.7.28`` from 127.0.0.3 for
gmail.com, which the feedback tests need.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Received:
    peer_ip: str
    helo: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    at: float
    content: bytes = b""  # the whole message as received: a bounce's attached parts too

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class _Handler:
    messages: list[Received] = field(default_factory=list)
    scripted: dict[tuple[str, str], str] = field(default_factory=dict)
    # (peer, domain) -> (reply, share): refuse exactly that share of RCPTs, evenly spread
    shares: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_refused_at: dict[tuple[str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        domain = address.rpartition("@")[2].lower()
        with self.lock:
            reply = self.scripted.get((peer, domain)) or self.scripted.get((peer, "*"))
            if reply is None and (peer, domain) in self.shares:
                shared, share = self.shares[(peer, domain)]
                i = self.seen[(peer, domain)]
                self.seen[(peer, domain)] += 1
                # the i-th RCPT is refused when it crosses the next multiple of 1/share
                reply = shared if int((i + 1) * share) > int(i * share) else None
            if reply:
                self.refused[(peer, domain)] += 1
                self.first_refused_at.setdefault((peer, domain), time.monotonic())
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        content = envelope.original_content or b""
        parsed = BytesHeaderParser(policy=compat32).parsebytes(content)
        received = Received(
            peer_ip=peer,
            helo=session.host_name or "",
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            headers=tuple((k, str(v)) for k, v in parsed.items()),
            at=time.monotonic(),
            content=content,
        )
        with self.lock:
            self.messages.append(received)
        return "250 2.0.0 Ok: recorded"


# Ports come from a block of their own per pytest-xdist worker, below the kernel's
# ephemeral range (32768-60999 by default): bind(0) hands every process ports from
# one shared range, and a CI run had two workers draw the same one before either
# daemon bound it ("policyd.listen ...: Address already in use").
PORTS_FIRST, PORTS_END = 10_000, 32_768


def _port_block() -> range:
    """This process's ports: block 0 without xdist, block n + 1 for worker gw<n>."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (PORTS_END - PORTS_FIRST) // (workers + 1)
    first = PORTS_FIRST + (index % (workers + 1)) * size
    return range(first, first + size)


_next_port = 0  # the offset in the block of the next port to try


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, from this process's block, in turn: a port comes back only once
    the block is used up (two daemons of one test once shared a metrics port that
    bind(0) had handed out again, and the second never started)."""
    global _next_port
    block = _port_block()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(len(block)):
        port = block[_next_port % len(block)]
        _next_port += 1
        with socket.socket(family) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue  # in use (another program, a connection in TIME_WAIT)
        return port
    raise RuntimeError(f"no free port on {host} in {block}")


def free_port_on(hosts: tuple[str, ...]) -> int:
    """A port free on every one of ``hosts`` at once (a dual-stack sink listens on both)."""
    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                with socket.socket(family) as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


class Sink:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None, also: tuple[str, ...] = ()) -> None:
        """``also``: more addresses (``::1`` for a dual-stack host) on the same port, into
        the same record: ``peer_ip`` then tells which family each delivery used."""
        self.host = host
        self.port = port or free_port_on((host, *also))
        self.handler = _Handler()
        self.controllers = [
            Controller(self.handler, hostname=h, port=self.port, ready_timeout=10, decode_data=False)
            for h in (host, *also)
        ]

    def start(self) -> None:
        for controller in self.controllers:
            controller.start()

    def stop(self) -> None:
        for controller in self.controllers:
            controller.stop()

    def script(self, source_ip: str, domain: str, reply: str) -> None:
        """Answer ``reply`` at RCPT to ``domain`` (or "*") from ``source_ip``."""
        with self.handler.lock:
            self.handler.scripted[(source_ip, domain.lower())] = reply

    def script_share(self, source_ip: str, domain: str, reply: str, share: float) -> None:
        """Answer ``reply`` to exactly ``share`` of the RCPTs to ``domain`` from ``source_ip``."""
        with self.handler.lock:
            self.handler.shares[(source_ip, domain.lower())] = (reply, share)

    def clear_scripts(self) -> None:
        with self.handler.lock:
            self.handler.scripted.clear()
            self.handler.shares.clear()

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Received]:
        """Wait until ``count`` messages arrived; raises with what did arrive."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"sink got {len(got)} of {count} messages within {timeout:.0f}s")
            time.sleep(0.05)
