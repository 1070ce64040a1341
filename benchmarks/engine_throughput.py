"""Decision throughput and latency against a private local redis-server.

For 1, 16 and 64 concurrent callers in one process it measures:
  - Engine.decide (one EVALSHA of select.lua per decision), and
  - two PING loops, measured in the same run so ratios hold on a noisy machine:
    a plain round-trip PING loop with redis-py (the standard client: one
    round trip per call, the ceiling the target is set against), and PING
    through our own pipelined channel (the transport's ceiling: it shows what
    the Lua script itself costs inside Redis).

Bounded: a fixed number of operations per level. Run: make bench-engine
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integration.redis_server import RedisServer
from smtp_balancer.config import validate_config
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine

NOW = datetime.now(UTC)


def bench_config(url: str) -> dict:
    today = NOW.date().isoformat()
    return {
        "redis": {"url": url, "max_connections": 128, "connect_timeout_ms": 2000},
        "decision": {"budget_ms": 2000},
        "mx_lookup": {"enabled": False},
        "endpoints": {
            "out1": {"bind_address": "127.0.0.2"},
            "out2": {"bind_address": "127.0.0.3"},
            "out3": {"bind_address": "127.0.0.4", "warmup": {"start": today, "schedule": "fast"}},
            "out4": {"bind_address": "127.0.0.5"},
        },
        "pools": {
            "bulk": {
                "endpoints": [
                    {"endpoint": e, "weight": w}
                    for e, w in (("out1", 1), ("out2", 2), ("out3", 1), ("out4", 1))
                ]
            }
        },
        "rules": [
            {"name": "tx", "message_class": ["transactional"], "pool": "bulk"},
            {"name": "all", "pool": "bulk"},
        ],
    }


async def run_level(op, concurrency: int, total: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


async def main(total: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            config = validate_config(bench_config(server.url))
            engine = Engine(config)
            facts = [
                Facts(sender=f"s{i}@shop{i % 50}.test", recipients=(f"u{i}@gmail.com", f"v{i}@yahoo.com"))
                for i in range(1000)
            ]
            counter = 0

            async def decide() -> None:
                nonlocal counter
                counter += 1
                d = await engine.decide(facts[counter % 1000])
                if d.degraded:
                    raise RuntimeError(f"degraded decision in benchmark: {d.reason}")

            async def ping() -> None:
                await engine.channel.call("PING")

            plain = redis.asyncio.Redis(unix_socket_path=str(server.socket), max_connections=128)

            await decide()
            await ping()
            await plain.ping()
            print(f"engine benchmark: {total} operations per level, one process, redis on a unix socket")
            print(
                f"{'callers':>7} {'decisions/s':>12} {'p50 ms':>7} {'p99 ms':>7}"
                f" {'redis-py PING/s':>16} {'ratio':>6} {'pipelined PING/s':>17} {'ratio':>6}"
            )
            for concurrency in (1, 16, 64):
                d_time, d_lat = await run_level(decide, concurrency, total)
                plain_time, _ = await run_level(plain.ping, concurrency, total)
                pipe_time, _ = await run_level(ping, concurrency, total)
                rate, plain_rate, pipe_rate = total / d_time, total / plain_time, total / pipe_time
                print(
                    f"{concurrency:>7} {rate:>12.0f} {pct(d_lat, 50):>7.2f} {pct(d_lat, 99):>7.2f}"
                    f" {plain_rate:>16.0f} {rate / plain_rate:>6.2f}"
                    f" {pipe_rate:>17.0f} {rate / pipe_rate:>6.2f}"
                )
            await engine.aclose()
            await plain.aclose()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000, help="operations per level (default 20000)")
    sys.exit(asyncio.run(main(parser.parse_args().ops)))
