"""What policyd's request path does per message, counted rather than timed: machine
instructions and cache misses, under valgrind's callgrind, against a DUNNO server
written as an asyncio Protocol (benchmarks/dunno_protocol.py), the same way.

On a real MTA the daemon is woken for each request after Postfix's processes have
run, so its code and data are no longer in the CPU's caches: `make bench-e2e`
measured about two and a half times the CPU a hot loop needs for the same work.
That figure moves 20% from run to run on a shared machine. This one does not: both
servers are fed the same RCPT and END-OF-MESSAGE requests in process (policyd with
its real engine deciding from its mirror of a private redis-server), a 16 MB write
between requests evicts the caches as the MTA would (--evict-mb 0: a hot loop),
and callgrind counts only inside each server's data_received (valgrind's
simulated 8 MB last-level cache). Both run on the daemon's event loop
(policyd/loop.py), with a select() before each request as the loop makes: a
request read right after one is known to be fresh without asking the kernel.
Per message it prints instructions and last-level cache misses, and policyd's
figures as multiples of the baseline's.

Run: make bench-footprint (needs valgrind: apt-get install valgrind; a few minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from policyd.loop import PolicyLoop, noted_selector  # noqa: E402 (after the path)

# the C function both servers' data_received is called through: what callgrind counts
TOGGLE = "_operator_call"
LL_CACHE = "8388608,16,64"
# the longest feed(settle=True) waits for a decision that went to Redis (a budget is less)
SETTLE_S = 30.0


def request(state: str, i: int, marker: str, domain: str = "example.test") -> bytes:
    """A request as Postfix 3.7's smtpd sends it, every attribute."""
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": "ESMTP",
        "client_address": "127.0.0.1",
        "client_name": "localhost",
        "client_port": "45678",
        "reverse_client_name": "localhost",
        "server_address": "127.0.0.1",
        "server_port": "25",
        "helo_name": "localhost",
        "sender": "news@shop.test",
        "recipient": f"user@{domain}" if state == "RCPT" else "",
        "recipient_count": "0" if state == "RCPT" else "1",
        "queue_id": "" if state == "RCPT" else f"Q{i:08X}",
        "instance": f"1234.{i:x}.0",
        "size": "312",
        "etrn_domain": "",
        "stress": "",
        "sasl_method": "",
        "sasl_username": "",
        "sasl_sender": "",
        "ccert_subject": "",
        "ccert_issuer": "",
        "ccert_fingerprint": "",
        "ccert_pubkey_fingerprint": "",
        "encryption_protocol": "",
        "encryption_cipher": "",
        "encryption_keysize": "0",
        "policy_context": marker,
        "compatibility_level": "3.6",
        "mail_version": "3.7.11",
    }
    return ("".join(f"{k}={v}\n" for k, v in attrs.items()) + "\n").encode()


class Transport(asyncio.Transport):
    """Where the replies go: counted, nothing sent."""

    def __init__(self) -> None:
        super().__init__()
        self.replies = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 45678) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.replies += bytes(data).count(b"\n\n")

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def feed(
    server: str,
    messages: int,
    evict_mb: int,
    layer: dict[str, Any] | None = None,
    domains: Sequence[str] = ("example.test",),
    settle: bool = False,
) -> int:
    """Inside the measured process: RCPT and END-OF-MESSAGE per message; returns the
    replies. ``layer``: laid over policyd's config; ``domains``: the recipients', in turn;
    ``settle``: a decision that goes to Redis is waited for (else it ends the run)."""
    from smtp_balancer.generation import MARKER

    transport = Transport()
    if server == "dunno":
        from dunno_protocol import Dunno

        protocol: asyncio.Protocol = Dunno()
        stop = None
    else:
        protocol, stop = await policy_connection(layer)
    protocol.connection_made(transport)
    junk = bytearray(evict_mb * 1024 * 1024)
    stride = junk[::64]
    data_received = protocol.data_received
    loop = asyncio.get_running_loop()
    noted = noted_selector(loop)
    if noted is None:
        raise SystemExit("not on the daemon's event loop (policyd.loop.PolicyLoop)")
    try:
        for i in range(messages):
            for state in ("RCPT", "END-OF-MESSAGE"):
                data = request(state, i, MARKER, domains[i % len(domains)])
                if evict_mb:  # the MTA's processes ran in between: one write per cache line
                    junk[::64] = stride
                noted.select(0)  # the loop's select() that found the request readable
                operator.call(data_received, data)
            settled_by = loop.time() + SETTLE_S
            while settle and getattr(protocol, "busy", False):
                if loop.time() > settled_by:
                    raise SystemExit(f"a decision that went to Redis did not settle within {SETTLE_S:g} s")
                await asyncio.sleep(0.001)  # the loop settles it (a lease fell short)
            if getattr(protocol, "busy", False):
                raise SystemExit("a decision went to Redis: the mirror was not fresh")
    finally:
        if stop is not None:
            await stop()
    return transport.replies


async def policy_connection(layer: dict[str, Any] | None = None) -> tuple[asyncio.Protocol, object]:
    from integration.configs import deep_merge
    from integration.conftest import base_config
    from integration.redis_server import RedisServer
    from policyd.main import policy_server
    from smtp_balancer.config.loader import validate_config
    from smtp_balancer.engine import Engine
    from smtp_balancer.observe.logs import configure

    # a decision line per message, as a daemon logs. Lines are rendered in batches
    # (observe/lines.py: DEFER_MAX) when one fills, inside data_received, as in a busy
    # daemon; the handler's timed flush, which would render them outside the count
    # (valgrind runs about 50 times slower), never comes
    configure("logfmt", "info", flush_interval_s=3600.0)
    workdir = Path(tempfile.mkdtemp(prefix="sb-footprint-"))
    redis = RedisServer(workdir / "redis")
    redis.start()
    config = validate_config(deep_merge(base_config(redis.url, 10025, 0), layer or {}))
    engine = Engine(config)
    await engine.start()
    for _ in range(200):  # local decisions need a fresh mirror
        if engine.mirror.fresh:
            break
        await asyncio.sleep(0.05)
    server = policy_server(engine, config)  # as the daemon builds it

    async def stop() -> None:
        await engine.aclose()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    return server.connection_protocol(), stop


def measure(server: str, messages: int, evict_mb: int, workdir: Path) -> dict[str, float]:
    """Callgrind's counts inside data_received, per message."""
    out = workdir / f"callgrind.{server}"
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--cache-sim=yes",
            f"--LL={LL_CACHE}",
            f"--toggle-collect={TOGGLE}",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--inside",
            server,
            "--messages",
            str(messages),
            "--evict-mb",
            str(evict_mb),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=3600,
    )
    if proc.returncode != 0 or f"replies={2 * messages}" not in proc.stdout:
        raise SystemExit(f"{server}: the measured run failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    if server == "policyd" and "compiled=True" not in proc.stdout:
        raise SystemExit(
            "policyd ran as Python, not compiled: no compiled modules, or sources changed"
            " since the build (make install first, and edit nothing while this runs)"
        )
    totals = {}
    for name, key in (("instructions", "I   refs"), ("LLi", "LLi misses"), ("LLd", "LLd misses")):
        found = re.search(rf"{key}:\s+([\d,]+)", proc.stderr)
        if found is None:
            raise SystemExit(f"{server}: no '{key}' in valgrind's summary")
        totals[name] = int(found.group(1).replace(",", "")) / messages
    totals["LL misses"] = totals["LLi"] + totals["LLd"]
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--evict-mb", type=int, default=16, help="bytes written between requests (0: hot)")
    parser.add_argument("--inside", choices=("policyd", "dunno"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        with asyncio.Runner(loop_factory=PolicyLoop) as runner:  # as policyd/main.py runs
            replies = runner.run(feed(args.inside, args.messages, args.evict_mb))
        import policyd.server

        # a tree edited since its build runs every module from source (smtp_balancer/native.py)
        print(f"replies={replies} compiled={policyd.server.__file__.endswith('.so')}")
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    print(
        f"request footprint: {args.messages} messages (RCPT + END-OF-MESSAGE), "
        f"{args.evict_mb} MB written between requests, callgrind inside data_received"
    )
    with tempfile.TemporaryDirectory(prefix="sb-footprint-") as tmp:
        results = {
            server: measure(server, args.messages, args.evict_mb, Path(tmp))
            for server in ("dunno", "policyd")
        }
    for name in ("instructions", "LLi", "LLd", "LL misses"):
        base, ours = results["dunno"][name], results["policyd"][name]
        print(
            f"{name:>13} per message: policyd {ours:12,.0f}   DUNNO (Protocol) {base:10,.0f}"
            f"   {ours / base:6.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
