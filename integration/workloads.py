"""Decision workloads run in separate processes by tests and benchmarks."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

import redis

from smtp_balancer.clock import FixedClock, utc_now
from smtp_balancer.config import load_config
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine


def decide_many(
    config_path: str, messages: int, tasks: int, seed: int, now_iso: str, max_rcpts: int = 1
) -> dict[str, int]:
    """Decide `messages` messages with `tasks` concurrent tasks; quota used per endpoint."""
    config = load_config(config_path)
    now = datetime.fromisoformat(now_iso)
    rng = random.Random(seed)
    counts = [rng.randint(1, max_rcpts) for _ in range(messages)]

    async def run() -> Counter[str]:
        engine = Engine(config, FixedClock(now))
        used: Counter[str] = Counter()
        queue = list(enumerate(counts))

        async def worker() -> None:
            while queue:
                i, n = queue.pop()
                rcpts = tuple(f"user{j}@example.{i % 7}.test" for j in range(n))
                decision = await engine.decide(Facts(sender=f"s{i}@x.test", recipients=rcpts), now=now)
                assert not decision.degraded, decision.reason
                used[decision.endpoint or decision.outcome] += n

        try:
            await asyncio.gather(*(worker() for _ in range(tasks)))
        finally:
            await engine.aclose()
        return used

    return dict(asyncio.run(run()))


RELAYS = {
    "google": "gmail-smtp-in.l.google.com[142.250.1.27]:25",
    "microsoft": "example-com.mail.protection.outlook.com[52.101.1.1]:25",
    "yahoo": "mta5.am0.yahoodns.net[67.195.1.1]:25",
    "other": "mx.example.test[192.0.2.25]:25",
}


def synthetic_log(count: int, seed: int = 1) -> tuple[list[str], Counter[str]]:
    """``count`` Postfix log lines shaped like a busy MTA's, and the deliveries per endpoint
    ("" for Postfix's default transport).

    About 60% delivery results (sent, some deferred, a few bounced) through
    out1-3 and the default transport, 35% other Postfix lines, 5% garbage.
    """
    rng = random.Random(seed)
    lines: list[str] = []
    deliveries: Counter[str] = Counter()
    for i in range(count):
        qid = f"{i:011X}"
        roll = rng.random()
        if roll < 0.60:
            provider = rng.choice(list(RELAYS))
            ep = rng.choice(["out1/", "out2/", "out3/", ""])
            deliveries[ep.rstrip("/")] += 1
            status, dsn, text = rng.choices(
                [
                    ("sent", "2.0.0", "250 2.0.0 OK"),
                    ("deferred", "4.7.0", "host x said: 421 4.7.0 try again later"),
                    ("bounced", "5.1.1", "host x said: 550 5.1.1 no such user"),
                ],
                weights=[90, 8, 2],
            )[0]
            lines.append(
                f"Nov 24 02:48:11 mta postfix/{ep}smtp[9536]: {qid}: to=<u{i}@{provider}.test>, "
                f"relay={RELAYS[provider]}, delay=0.42, delays=0.01/0/0.2/0.21, dsn={dsn}, "
                f"status={status} ({text})"
            )
        elif roll < 0.95:
            lines.append(
                f"Nov 24 02:48:11 mta postfix/qmgr[9000]: {qid}: from=<s@shop.test>, size=900, nrcpt=1"
            )
        else:
            lines.append(
                rng.choice(
                    [
                        "",
                        "\x00\x01garbage",
                        "Nov 24 02:48:11 mta postfix/smtp[1]: X1: to=<broken>, status=sent",
                    ]
                )
            )
    return lines, deliveries


def synthetic_exim_log(count: int, seed: int = 1) -> tuple[list[str], Counter[str]]:
    """The same mix as ``synthetic_log``, as Exim 4.96 writes its main log: deliveries
    (``=>``), deferrals (``==``) and bounces (``**``) through the rendered transports
    sb_out1-3 and the operator's own, other Exim lines, and garbage."""
    rng = random.Random(seed)
    lines: list[str] = []
    deliveries: Counter[str] = Counter()
    hosts = {p: r.partition("[")[0] for p, r in RELAYS.items()}
    addrs = {p: r.partition("[")[2].partition("]")[0] for p, r in RELAYS.items()}
    for i in range(count):
        mid = f"1xYgXf-{i:06d}-2X"
        roll = rng.random()
        if roll < 0.60:
            provider = rng.choice(list(RELAYS))
            ep = rng.choice(["out1", "out2", "out3", ""])
            deliveries[ep] += 1
            transport = f"sb_{ep}" if ep else "plain_smtp"
            where = f"R=sb_direct T={transport} H={hosts[provider]} [{addrs[provider]}]"
            rcpt = f"u{i}@{provider}.test"
            error = f"SMTP error from remote mail server after RCPT TO:<{rcpt}>:"
            lines.append(
                rng.choices(
                    [
                        f'2026-11-24 02:48:11 {mid} => {rcpt} {where} C="250 2.0.0 OK"',
                        f"2026-11-24 02:48:11 {mid} == {rcpt} {where.replace(' H=', ' defer (-44) H=')}: "
                        f"{error} 421 4.7.0 try again later",
                        f"2026-11-24 02:48:11 {mid} ** {rcpt} {where}: {error} 550 5.1.1 no such user",
                    ],
                    weights=[90, 8, 2],
                )[0]
            )
        elif roll < 0.95:
            lines.append(
                f"2026-11-24 02:48:11 {mid} <= s@shop.test H=([127.0.0.1]) [127.0.0.1] P=esmtp S=900"
            )
        else:
            lines.append(rng.choice(["", "\x00\x01garbage", f"2026-11-24 02:48:11 {mid} => broken R=x"]))
    return lines, deliveries


OUTCOME_STATUSES = ("sent", "deferred", "bounced", "expired")


def stored_outcomes(client: redis.Redis, pattern: str = "{sb}:outcomes:*") -> int:
    """Every delivery outcome the feedback daemon has counted in Redis (all endpoints, providers,
    minutes; or the keys of ``pattern``, such as the per-tenant hours). Only the status fields:
    the minute hashes also sum latency and block-type refusals for adaptive factors."""
    return sum(
        int(v)
        for key in client.scan_iter(match=pattern, count=1000)
        for name, v in client.hgetall(key).items()
        if (name.decode() if isinstance(name, bytes) else name) in OUTCOME_STATUSES
    )


class Stoppable(Protocol):
    def stop(self) -> None: ...


def counted_today(client: redis.Redis, endpoints: Iterable[str]) -> int:
    """Warm-up units counted today (the process clock's UTC day) over these endpoints."""
    day = utc_now().strftime("%Y%m%d")
    return sum(int(client.hget(f"{{sb}}:count:{ep}:day:{day}", "total") or 0) for ep in endpoints)


def assert_counted_exactly(
    client: redis.Redis, endpoints: Iterable[str], expected: int, deciders: Iterable[Stoppable]
) -> None:
    """Exactly ``expected`` units counted, once ``deciders`` (the policy daemons and milters
    that decided the mail) have stopped: a decider writes its counts in batches and gives
    its leased units back at exit, so after the stop Redis holds all it will ever count."""
    for decider in deciders:
        decider.stop()
    counted = counted_today(client, list(endpoints))
    assert counted == expected, f"{counted} warm-up units counted, {expected} expected"
