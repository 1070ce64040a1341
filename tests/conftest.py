"""Shared fixtures: a real redis-server per test, and configs pointing at it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.configs import deep_merge, topology
from integration.redis_server import RedisServer
from smtp_balancer.config import BalancerConfig, validate_config

BASE: dict[str, Any] = {
    # generous: a loaded CI machine must not turn these into degraded decisions;
    # the tests about the budget set their own
    "decision": {"budget_ms": 1000, "retry_after_ms": 100},
    # no DNS in tests unless a test brings its own responder
    "mx_lookup": {"enabled": False},
    **topology(),
}


@pytest.fixture
def make_config(redis_server: RedisServer, tmp_path: Path):
    """Build a validated config (and its YAML file) from BASE plus overrides."""

    def make(extra: dict[str, Any] | None = None, *, replace: dict[str, Any] | None = None) -> BalancerConfig:
        raw = deep_merge(BASE, extra or {})
        raw.update(copy.deepcopy(replace or {}))
        raw.setdefault("redis", {})["url"] = redis_server.url
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return validate_config(raw)

    return make
