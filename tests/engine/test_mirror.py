"""The mirror under mass changes: O(changed keys), bounded logs, exact metrics, no stall."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from smtp_balancer.clock import FixedClock
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.observe import metrics
from tests.ready import mirrored

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
MASS = 100_000


def _junk_total(kind: str) -> float:
    return metrics.STATE_JUNK.labels(kind)._value.get()


async def test_100k_changed_keys_are_reread_in_batches_and_logged_once(make_config, rdb, caplog):
    engine = Engine(make_config(), FixedClock(NOW))
    caplog.set_level(logging.WARNING, logger="smtp_balancer")
    try:
        await mirrored(engine)
        weight_junk_before = _junk_total("weight")
        probes: list[str] = []
        done = asyncio.Event()

        async def probe() -> None:
            # a client deciding all along: every decision is made, none degraded
            i = 0
            while not done.is_set():
                d = await engine.decide(Facts(recipients=(f"u{i}@yahoo.com",)))
                probes.append("degraded" if d.degraded else (d.endpoint or d.outcome))
                i += 1
                await asyncio.sleep(0.002)

        prober = asyncio.create_task(probe())
        pipe = rdb.pipeline(transaction=False)
        for i in range(MASS):
            pipe.set(f"{{sb}}:suspend:out1:p{i}", "mass", ex=600)
        # one HSET of 100,000 junk fields, three of them the pool's members
        junk_fields = {f"junk{i}": "banana" for i in range(MASS)} | {f"out{i}": "banana" for i in (1, 2, 3)}
        pipe.hset("{sb}:pool:main:weights", mapping=junk_fields)
        pipe.set("{sb}:suspend:out2:yahoo", "real", ex=600)
        pipe.execute()
        await engine.settle()
        done.set()
        await prober
        live = engine.live
        assert engine.mirror.fresh and live is not None
        assert len(live.suspended_until) == MASS + 1
        assert live.weights["main"] == {}  # every field was junk: the YAML weights apply
        # the members' three junk values are counted at every read (the mirror's, and
        # select.lua's while the mirror was catching up); other fields are never read
        counted = _junk_total("weight") - weight_junk_before
        assert counted >= 3 and counted % 3 == 0, counted
        junk_lines = [r for r in caplog.records if "unusable weight" in r.getMessage()]
        assert len(junk_lines) == 1 and "ignoring 3 unusable weight" in junk_lines[0].getMessage()
        assert probes and "degraded" not in probes
        # the real change among the mass: out2 takes no more yahoo mail
        after = [(await engine.decide(Facts(recipients=(f"v{i}@yahoo.com",)))).endpoint for i in range(200)]
        assert "out2" not in after and set(after) <= {"out1", "out3"}
    finally:
        await engine.aclose()
