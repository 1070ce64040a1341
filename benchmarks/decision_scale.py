"""How decision cost grows with rules, recipients and pool size; each figure beside
its baseline, measured in the same run (ratios: this machine is shared and noisy).

- rules: 1,000 recipient-domain (or sender-domain) rules with the matching rule
  last, against 5 rules: decisions/s ratio (target >= 0.5);
- recipients: an Exim END-OF-MESSAGE request with 1,000 recipients against one
  with 100, parsed, joined and decided: cost ratio (target <= 12);
- pool size: select.lua's Redis CPU per decision (INFO commandstats) with 256
  endpoints against 4, in Redis-script mode (decision.local: false).

Local decisions from the tracked mirror, one process, a private redis-server on a
unix socket. Bounded: a fixed number of decisions per row. Run: make bench-scale
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integration.redis_server import RedisServer
from policyd.protocol import RequestParser
from policyd.session import InstanceJoin, handle
from smtp_balancer.clock import FixedClock
from smtp_balancer.config import validate_config
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.engine import Engine

CLOCK = FixedClock(datetime(2026, 11, 24, 10, 30, tzinfo=UTC))


def config(url: str, rules: list[dict], endpoints: int = 4, local: bool = True) -> dict:
    names = [f"out{i}" for i in range(1, endpoints + 1)]
    return {
        "redis": {"url": url, "connect_timeout_ms": 2000},
        "decision": {"budget_ms": 2000, "local": local},
        "mx_lookup": {"enabled": False},
        "endpoints": {
            n: {"bind_address": f"127.0.{1 + i // 250}.{2 + i % 250}"} for i, n in enumerate(names)
        },
        "pools": {"bulk": {"endpoints": [{"endpoint": n, "weight": 1 + i % 3} for i, n in enumerate(names)]}},
        "rules": [*rules, {"name": "all", "pool": "bulk"}],
    }


def domain_rules(n: int, kind: str) -> list[dict]:
    """n rules on exact domains; the message matches only the last one."""
    return [{"name": f"r{i}", kind: [f"d{i}.test"], "pool": "bulk"} for i in range(n)]


async def rate(engine: Engine, facts: list[Facts], total: int) -> float:
    """Decisions per second, deciding ``total`` times in one loop."""
    await engine.settle()
    started = time.perf_counter()
    for i in range(total):
        result = engine.decide_now(facts[i % len(facts)])
        if not isinstance(result, Decision):
            result = await engine.settle_pending(result)
        if result.degraded:
            raise RuntimeError(f"degraded decision in the benchmark: {result.reason}")
    return total / (time.perf_counter() - started)


async def with_engine(raw: dict, work):  # type: ignore[no-untyped-def]
    engine = Engine(validate_config(raw), CLOCK)
    try:
        assert await engine.start()
        return await work(engine)
    finally:
        await engine.aclose()


async def rules_rows(url: str, total: int) -> None:
    print(f"rules (matching rule last), {total} decisions per row")
    five_rcpt = [Facts(sender="a@shop.test", recipients=(f"u{i}@d4.test",)) for i in range(100)]
    base = await with_engine(
        config(url, domain_rules(5, "recipient_domain")), lambda e: rate(e, five_rcpt, total)
    )
    print(f"  {'5 recipient-domain rules':<34} {base:>9.0f}/s  1.00")
    for kind, facts in (
        (
            "recipient_domain",
            [Facts(sender="a@shop.test", recipients=(f"u{i}@d999.test",)) for i in range(100)],
        ),
        ("sender_domain", [Facts(sender=f"a{i}@d999.test", recipients=("u@x.test",)) for i in range(100)]),
    ):
        got = await with_engine(config(url, domain_rules(1000, kind)), lambda e, f=facts: rate(e, f, total))
        print(f"  {'1000 ' + kind.replace('_', '-') + ' rules':<34} {got:>9.0f}/s  {got / base:.2f}")


async def recipients_rows(url: str, total: int) -> None:
    print(f"Exim recipients= lists: request parsed, joined and decided, {total} requests per row")

    def request(n: int) -> bytes:
        rcpts = ",".join(f"u{i}@d{i % 40}.test" for i in range(n))
        return (
            "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nsender=a@shop.test\n"
            f"recipients={rcpts}\n\n"
        ).encode()

    async def cost(engine: Engine, n: int) -> float:
        data = request(n)
        await engine.settle()
        started = time.perf_counter()
        for _ in range(total):
            (req,) = RequestParser().feed(data)
            facts = handle(req, InstanceJoin())
            assert isinstance(facts, Facts) and len(facts.recipients) == n
            result = engine.decide_now(facts)
            if not isinstance(result, Decision):
                await engine.settle_pending(result)
        return (time.perf_counter() - started) / total

    raw = config(url, [])
    per = {n: await with_engine(raw, lambda e, n=n: cost(e, n)) for n in (100, 1000)}
    print(f"  {'100 recipients':<34} {per[100] * 1e6:>9.0f} us  1.00")
    print(f"  {'1000 recipients':<34} {per[1000] * 1e6:>9.0f} us  {per[1000] / per[100]:.2f}")


async def pool_rows(server: RedisServer, total: int) -> None:
    print(f"pool size, Redis-script mode: Redis CPU per select.lua call, {total} decisions per row")
    client = server.client()
    facts = [Facts(sender=f"s{i}@shop.test", recipients=(f"u{i}@gmail.com",)) for i in range(100)]
    per: dict[int, float] = {}
    for endpoints in (4, 256):
        client.config_resetstat()
        await with_engine(config(server.url, [], endpoints, local=False), lambda e: rate(e, facts, total))
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
        per[endpoints] = float(stats.get("usec_per_call", 0.0))
    print(f"  {'4 endpoints':<34} {per[4]:>9.1f} us  1.00")
    print(f"  {'256 endpoints':<34} {per[256]:>9.1f} us  {per[256] / per[4]:.2f}")


async def main(total: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            await rules_rows(server.url, total)
            await recipients_rows(server.url, max(total // 20, 200))
            await pool_rows(server, max(total // 4, 1000))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--decisions", type=int, default=20_000, help="decisions per rules row (default 20000)"
    )
    sys.exit(asyncio.run(main(parser.parse_args().decisions)))
