"""Fixtures shared by the unit tests and the end-to-end tests: a real redis-server per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from integration.dns_responder import DnsResponder
from integration.redis_server import RedisServer
from smtp_balancer.clock import SYSTEM
from smtp_balancer.state.experiments import ExperimentStore
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.values import text_of


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rdb(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def dns() -> Iterator[DnsResponder]:
    """A local authoritative DNS responder on a loopback UDP port."""
    responder = DnsResponder()
    responder.start()
    yield responder
    responder.stop()


def arm_record_of(client: redis.Redis, queue_id: str, wall: float | None = None) -> str | None:
    """A message's arm record as the feedback daemon reads it (the day books first, then
    an earlier release's key), at ``wall`` (this process's clock by default)."""
    at = SYSTEM.wall() if wall is None else wall
    (raw,) = ExperimentStore(client, KeySchema()).arm_records([queue_id], at)
    return text_of(raw)
