"""Fixtures shared by the unit tests and the end-to-end tests: a real redis-server per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from integration.dns_responder import DnsResponder
from integration.redis_server import RedisServer


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
