"""A seeded fuzz of the policy protocol against the running server (real Redis).

100,000 requests: valid framing with hostile values in every attribute the daemon
reads (numbers in other scripts, huge and negative numbers, control characters,
long values, empty values, NUL), and some broken framing (a line without "=",
bytes that are not UTF-8). Every request either gets its reply, or its connection
is closed with the error counted in ``smtp_balancer_policy_protocol_errors_total``;
nothing is dropped silently, and nothing is logged as a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

from prometheus_client import REGISTRY

from tests.policyd.test_server import start, tcp_port

REQUESTS = 100_000
CONNECTIONS = 8
NUMERIC = ("size", "recipient_count", "sent_at", "encryption_keysize", "client_port", "policy_context")
TEXT = ("sender", "recipient", "queue_id", "instance", "client_address", "sasl_username")
EXIM_SHARE = 0.1  # requests that list ``recipients``: Exim's, one a connection
STATES = ("RCPT", "END-OF-MESSAGE", "DATA", "CONNECT", "rcpt", "")
HOSTILE = (
    "",
    "0",
    "-1",
    "²",
    "٣٤",
    "1e9",
    "9" * 5000,
    "12345678901234567890123",
    " 7",
    "0x10",
    "\x1b[31mred",
    "a" * 2000,
    "x@" + "y" * 300,
    "a@b.test,c@d.test,,",
    "\u202eevil",
    "nul\x00byte",
)


def errors() -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "smtp_balancer_policy_protocol_errors":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def request(rng: random.Random) -> tuple[bytes, bool]:
    """One request, and whether its framing is broken (a protocol error is due). One
    that lists ``recipients`` is Exim's, the last on its connection."""
    attrs = {"request": "smtpd_access_policy", "protocol_state": rng.choice(STATES)}
    for name in rng.sample(NUMERIC, rng.randint(0, len(NUMERIC))):
        attrs[name] = rng.choice(HOSTILE) if rng.random() < 0.7 else str(rng.randint(0, 10**6))
    names = rng.sample(TEXT, rng.randint(1, len(TEXT)))
    if rng.random() < EXIM_SHARE:
        names.append("recipients")
    for name in names:
        attrs[name] = rng.choice(HOSTILE) if rng.random() < 0.5 else f"u{rng.randint(0, 99)}@gmail.com"
    body = b"".join(f"{k}={v}\n".encode() for k, v in attrs.items())
    broken = rng.random() < 0.02
    if broken:
        body += rng.choice([b"no equals sign\n", b"bad=\xff\xfe\n"])
    return body + b"\n", broken


async def client(port: int, rng: random.Random, count: int, tally: dict[str, int]) -> None:
    reader = writer = None
    for _ in range(count):
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert reader is not None
        data, broken = request(rng)
        writer.write(data)
        reply = await reader.read(4096) if broken else await reader.readuntil(b"\n\n")
        if not broken and b"\nrecipients=" in data:
            # Exim's ${readsocket} sends one request a connection: answered, it is shut
            assert reply.startswith(b"action="), reply
            assert await reader.read() == b""
            tally["answered"] += 1
            writer.close()
            reader = writer = None
        elif broken:
            # the connection is closed: nothing more is answered on a broken stream
            assert reply == b"" or not reply.startswith(b"action="), reply
            tally["closed"] += 1
            writer.close()
            reader = writer = None
        else:
            assert reply.startswith(b"action="), reply
            tally["answered"] += 1
    if writer is not None:
        writer.close()


async def test_100000_hostile_requests_are_answered_or_counted(make_config, tmp_path: Path, caplog):
    server, engine = await start(make_config, tmp_path, max_connections=64)
    tally = {"answered": 0, "closed": 0}
    before = errors()
    try:
        with caplog.at_level(logging.ERROR):
            await asyncio.gather(
                *(
                    client(tcp_port(server), random.Random(f"fuzz-{c}"), REQUESTS // CONNECTIONS, tally)
                    for c in range(CONNECTIONS)
                )
            )
    finally:
        await server.close()
        await engine.aclose()
    assert tally["answered"] + tally["closed"] == REQUESTS
    assert tally["closed"] > 0 and errors() - before == tally["closed"]
    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert tracebacks == [], tracebacks[0].getMessage()
