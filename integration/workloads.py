"""Decision workloads run in separate processes by tests and benchmarks."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import datetime

from smtp_balancer.config import load_config
from smtp_balancer.engine import Engine
from smtp_balancer.facts import Facts


def decide_many(
    config_path: str, messages: int, tasks: int, seed: int, now_iso: str, max_rcpts: int = 1
) -> dict[str, int]:
    """Decide `messages` messages with `tasks` concurrent tasks; quota used per endpoint."""
    config = load_config(config_path)
    now = datetime.fromisoformat(now_iso)
    rng = random.Random(seed)
    counts = [rng.randint(1, max_rcpts) for _ in range(messages)]

    async def run() -> Counter[str]:
        engine = Engine(config)
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
