"""`make demo`: a walk-through of the engine against a private redis-server.

It shows weights, a warm-up cap with spill, a live weight change, a provider
suspension, explain, status and a Redis outage, using the real CLI. The full
system demo (Postfix, policy daemon, milter, feedback) grows from this as those
issues land.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import yaml

from integration.redis_server import RedisServer
from smtp_balancer.config import load_config
from smtp_balancer.engine import Engine
from smtp_balancer.facts import Facts

CLI = str(Path(sys.executable).with_name("smtp-balancer"))
PROVIDER_DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "example.org"]


def config_yaml(redis_url: str) -> dict:
    today = datetime.now(UTC).date().isoformat()
    return {
        "redis": {"url": redis_url, "prefix": "demo"},
        "decision": {"budget_ms": 50, "retry_after_ms": 500},
        "endpoints": {
            "out1": {"bind_address": "127.0.0.2", "helo_name": "out1.example.com"},
            "out2": {"bind_address": "127.0.0.3", "helo_name": "out2.example.com"},
            "out3": {
                "bind_address": "127.0.0.4",
                "helo_name": "out3.example.com",
                "warmup": {"start": today, "schedule": [{"daily": 150, "hourly": 150}, 400, 800]},
            },
            "tx1": {"bind_address": "127.0.0.5", "helo_name": "tx1.example.com"},
        },
        "pools": {
            "bulk": {
                "endpoints": [
                    {"endpoint": "out1", "weight": 1},
                    {"endpoint": "out2", "weight": 2},
                    {"endpoint": "out3", "weight": 1},
                ]
            },
            "transactional": {
                "endpoints": [{"endpoint": "tx1", "weight": 3}, {"endpoint": "out1", "weight": 1}],
                "stickiness": "sender_domain",
                "overflow": "pool:bulk",
            },
        },
        "rules": [
            {"name": "transactional", "message_class": ["transactional"], "pool": "transactional"},
            {"name": "bulk", "pool": "bulk"},
        ],
    }


def cli(config: Path, *args: str) -> str:
    out = subprocess.run([CLI, "-c", str(config), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"smtp-balancer {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


async def send(
    engine: Engine, count: int, start: int, message_class: str = "bulk"
) -> Counter[tuple[str, str]]:
    seen: Counter[tuple[str, str]] = Counter()
    for i in range(start, start + count):
        domain = PROVIDER_DOMAINS[i % len(PROVIDER_DOMAINS)]
        facts = Facts(
            sender=f"news{i % 5}@shop{i % 3}.example",
            recipients=(f"user{i}@{domain}",),
            message_class=message_class,
        )
        d = await engine.decide(facts)
        seen[(d.endpoint or d.outcome, domain)] += 1
    return seen


def show(seen: Counter[tuple[str, str]]) -> None:
    endpoints = sorted({e for e, _ in seen})
    print(f"  {'endpoint':<9}" + "".join(f"{d:>13}" for d in PROVIDER_DOMAINS) + f"{'total':>8}")
    for ep in endpoints:
        row = [seen[(ep, d)] for d in PROVIDER_DOMAINS]
        print(f"  {ep:<9}" + "".join(f"{n:>13}" for n in row) + f"{sum(row):>8}")


async def walk(config_path: Path, redis: RedisServer) -> None:
    config = load_config(config_path)
    engine = Engine(config)
    try:
        heading("1. config check")
        print(cli(config_path, "check").strip())

        heading("2. 1,000 bulk messages, weights out1:out2:out3 = 1:2:1, out3 warming (cap 150 today)")
        show(await send(engine, 1000, 0))
        print("  -> out3 stopped at its warm-up cap of 150; the rest spilled to out1/out2 by weight")

        heading("3. live weight change: smtp-balancer weight bulk out1 3")
        print(cli(config_path, "weight", "bulk", "out1", "3").strip())
        show(await send(engine, 600, 1000))

        heading("4. Gmail throttles out2: suspend out2 for provider google for 15m")
        print(
            cli(
                config_path,
                "suspend",
                "out2",
                "--provider",
                "google",
                "--for",
                "15m",
                "--reason",
                "rule gmail-421-4.7.28: 421-4.7.28 unusual rate of unsolicited mail",
            ).strip()
        )
        seen = await send(engine, 600, 1600)
        show(seen)
        print(
            f"  -> out2 took {seen[('out2', 'gmail.com')]} gmail.com messages and "
            f"{seen[('out2', 'yahoo.com')]} yahoo.com messages"
        )

        heading("5. transactional mail: its own pool, sticky by sender domain")
        tx = Counter()
        for i in range(200):
            d = await engine.decide(
                Facts(
                    sender=f"noreply@shop{i % 3}.example",
                    recipients=("a@gmail.com",),
                    message_class="transactional",
                )
            )
            tx[(d.endpoint, f"shop{i % 3}")] += 1
        for (ep, shop), n in sorted(tx.items(), key=lambda kv: kv[0][1]):
            print(f"  {shop}.example -> {ep} ({n} messages)")

        heading("6. explain: why would a gmail.com message go where it goes? (dry run)")
        print(cli(config_path, "explain", "--sender", "news@shop1.example", "--rcpt", "bob@gmail.com"))

        heading("7. status")
        print(cli(config_path, "status"))

        heading("8. Redis dies: decisions continue, degraded, from the YAML weights")
        redis.stop()
        degraded = Counter()
        for i in range(200):
            d = await engine.decide(Facts(sender="a@b.example", recipients=(f"u{i}@yahoo.com",)))
            degraded[(d.endpoint, d.degraded)] += 1
        for (ep, deg), n in sorted(degraded.items()):
            print(f"  {ep}: {n} decisions{' (degraded)' if deg else ''}")
        print("  -> out3 is skipped while degraded: its warm-up quota cannot be counted without Redis")
        redis.start()
        await asyncio.sleep(0.6)
        d = await engine.decide(Facts(sender="a@b.example", recipients=("u@yahoo.com",)))
        print(f"  Redis back: next decision degraded={d.degraded} -> {d.endpoint}")
    finally:
        await engine.aclose()


def main() -> int:
    if shutil.which("redis-server") is None:
        print("redis-server is missing: run `make demo` (it installs it) or apt-get install redis-server")
        return 1
    with tempfile.TemporaryDirectory(prefix="smtp-balancer-demo-") as tmp:
        redis = RedisServer(Path(tmp) / "redis")
        redis.start()
        try:
            config_path = Path(tmp) / "config.yaml"
            config_path.write_text(yaml.safe_dump(config_yaml(redis.url), sort_keys=False))
            asyncio.run(walk(config_path, redis))
        finally:
            redis.stop()
    print("\nDemo finished: private Redis stopped and removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
