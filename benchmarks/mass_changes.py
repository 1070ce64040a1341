"""Decisions while 100,000 tracked keys change at once: probe latency and daemon memory.

A real policy daemon (local decisions from the tracked mirror) on a private
redis-server. A probe client sends one END-OF-MESSAGE request every 2 ms on one
connection and times each answer. After a quiet baseline, one pipeline writes
100,000 suspension keys and one HSET of 100,000 junk weight fields. The script
prints the probe's p50/p99/max before and during the change (the baseline is the
same probe before the change, in the same run), timeouts, how long the daemon
took to absorb the change, and the daemon's RSS growth.

Bounded: the baseline and the change window are fixed in time. Run: make bench-mass
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from integration.configs import topology  # noqa: E402
from integration.daemons import PolicydProcess  # noqa: E402
from integration.redis_server import RedisServer  # noqa: E402
from integration.sink import free_port  # noqa: E402
from smtp_balancer.generation import MARKER  # noqa: E402

EOM = (
    b"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nsender=a@shop.test\n"
    b"recipient=b@example.test\npolicy_context=" + MARKER.encode() + b"\n\n"
)
TIMEOUT_S = 1.0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Probe(threading.Thread):
    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.samples: list[tuple[float, float]] = []  # (sent at, seconds)
        self.timeouts = 0
        self.stop = threading.Event()

    def run(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT_S)
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                sock.sendall(EOM)
                data = b""
                while not data.endswith(b"\n\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise OSError("closed")
                    data += chunk
                self.samples.append((sent, time.monotonic() - sent))
            except OSError:
                self.timeouts += 1
                sock.close()
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT_S)
            time.sleep(0.002)
        sock.close()


def summary(values: list[float]) -> str:
    if len(values) < 2:
        return "no samples"
    q = statistics.quantiles(values, n=100)
    p50, p99, top = q[49] * 1000, q[98] * 1000, max(values) * 1000
    return f"n={len(values):>5}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  max {top:7.2f} ms"


def main(keys: int, baseline_s: float, window_s: float) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        server = RedisServer(base / "redis")
        server.start()
        port = free_port()
        config = {
            "redis": {"url": server.url},
            "mx_lookup": {"enabled": False},
            "policyd": {"listen": [f"inet:127.0.0.1:{port}"], "metrics_listen": ""},
            **topology(),
        }
        path = base / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        daemon = PolicydProcess(path, port, base / "policyd.log", log_level="warning")
        daemon.start()
        client = server.client()
        try:
            probe = Probe(port)
            probe.start()
            time.sleep(baseline_s)
            assert daemon.proc is not None
            rss_before = rss_kb(daemon.proc.pid)
            changed_at = time.monotonic()
            pipe = client.pipeline(transaction=False)
            for i in range(keys):
                pipe.set(f"{{sb}}:suspend:out1:p{i}", "mass", ex=600)
            junk = {f"junk{i}": "banana" for i in range(keys)} | {f"out{i}": "banana" for i in (1, 2, 3)}
            pipe.hset("{sb}:pool:main:weights", mapping=junk)
            pipe.execute()
            written = time.monotonic() - changed_at
            time.sleep(window_s)
            rss_after = rss_kb(daemon.proc.pid)
            probe.stop.set()
            probe.join(timeout=5)
            before = [d for t, d in probe.samples if t < changed_at]
            during = [d for t, d in probe.samples if t >= changed_at]
            first = [d for t, d in probe.samples if changed_at <= t < changed_at + written + 3]
            lines = daemon.log_path.read_text(errors="replace").count("unusable weight")
            print(f"mass change: {keys} suspension keys + one HSET of {keys} junk weight fields")
            print(
                f"  written by redis-py in {written:.2f}s; probe: a request every 2 ms, timeout {TIMEOUT_S}s"
            )
            print(f"  before (baseline): {summary(before)}")
            print(f"  first 3 s after the write: {summary(first)}")
            print(f"  whole window:      {summary(during)}")
            print(f"  timeouts: {probe.timeouts}")
            print(
                f"  daemon RSS: {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MB "
                f"(+{(rss_after - rss_before) / 1024:.1f} MB)"
            )
            print(f"  junk log lines for the weights key: {lines}")
        finally:
            daemon.stop()
            client.close()
            server.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of probing before the change")
    parser.add_argument("--window", type=float, default=15.0, help="seconds of probing after it")
    args = parser.parse_args()
    sys.exit(main(args.keys, args.baseline, args.window))
