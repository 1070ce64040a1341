"""Fixtures shared by the requeue tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from smtp_balancer.clock import FixedClock
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.engine import Engine
from smtp_balancer.requeue.daemon import remote_decisions
from tests.ready import started

NOW = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
ARMS = [{"name": "a", "pool": "main", "split": 50}, {"name": "b", "pool": "main", "split": 50}]


@pytest.fixture
async def experiment_engine(make_config, rdb) -> AsyncIterator[tuple[BalancerConfig, Engine]]:
    """Requeue's config and engine (script mode) with experiment ``ab`` running over rule
    ``all``: arms ``a`` and ``b``, both routing by pool ``main``."""
    config = make_config(
        {"requeue": {"enabled": True}, "experiments": [{"name": "ab", "rule": "all", "arms": ARMS}]}
    )
    rdb.hset("{sb}:experiment:ab", mapping={"state": "running", "started": "1"})
    engine = Engine(remote_decisions(config), FixedClock(NOW))
    await started(engine)
    yield config, engine
    await engine.aclose()
