"""The delivery-time table against a real Redis: Postfix lookups (``route``) and
Exim's retry question (``reroute``), pins, counts and bad input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from integration.fixtures import arm_record_of
from smtp_balancer.clock import FixedClock
from smtp_balancer.engine import Engine
from smtp_balancer.requeue.daemon import remote_decisions
from smtp_balancer.requeue.socketmap import TableRequest
from smtp_balancer.requeue.table import RouteTable
from tests.ready import started

NOW = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
DAY = "{sb}:count:%s:day:20261202"
GOOGLE = "rule google-rate-limited: out2 deferred by google: 421"


@pytest.fixture
async def table(make_config):
    engine = Engine(remote_decisions(make_config({"requeue": {"enabled": True}})), FixedClock(NOW))
    await started(engine)
    yield RouteTable(engine, 2.0)
    await engine.aclose()


async def ask(table: RouteTable, name: str, key: str) -> str:
    return await table.answer(TableRequest(name, key))


async def test_postfix_route_answers_pins_and_notfound(table: RouteTable, rdb) -> None:
    assert await ask(table, "route", "nobody@gmail.com") == "NOTFOUND "
    assert await ask(table, "route", "not-an-address") == "NOTFOUND "
    rdb.hset("{sb}:pin:a@gmail.com", mapping={"endpoint": "out3", "provider": "google", "units": "1"})
    assert await ask(table, "route", "A@Gmail.com") == "OK out3:"
    assert (await ask(table, "other", "a@gmail.com")).startswith("PERM no table 'other'")


async def test_a_pinned_route_that_must_move_again_is_decided_once(table: RouteTable, rdb) -> None:
    rdb.hset("{sb}:pin:a@gmail.com", mapping={"endpoint": "out3", "provider": "google", "units": "2"})
    rdb.set("{sb}:suspend:out3:google", GOOGLE, ex=600)
    answer = await ask(table, "route", "a@gmail.com")
    assert answer in ("OK out1:", "OK out2:")
    moved_to = answer[3:-1]
    assert rdb.hget("{sb}:pin:a@gmail.com", "endpoint") == moved_to
    assert rdb.hget(DAY % moved_to, "total") == "2"  # the pin's units, counted once
    assert await ask(table, "route", "a@gmail.com") == answer  # followed, not counted again
    assert rdb.hget(DAY % moved_to, "total") == "2"
    assert rdb.ttl("{sb}:pin:a@gmail.com") > 0


async def test_junk_pin_is_decided_anew(table: RouteTable, rdb) -> None:
    rdb.hset("{sb}:pin:a@gmail.com", mapping={"endpoint": "no-such-endpoint"})
    assert (await ask(table, "route", "a@gmail.com")).startswith("OK out")


async def test_exim_reroute_stays_moves_follows_and_gives_back(table: RouteTable, rdb) -> None:
    key = "out2 60 1tAbCd-000123-AB a@gmail.com"
    assert await ask(table, "reroute", key) == "OK out2:"  # eligible: stays, nothing counted
    rdb.hset(DAY % "out2", mapping={"total": 5, "google": 5})
    rdb.set("{sb}:suspend:out2:google", "suspended by operator", ex=600)
    assert await ask(table, "reroute", key) == "OK out2:"  # suspended, but no move asked for
    rdb.set("{sb}:requeue:out2:google", "suspended by cli", ex=600)
    answer = await ask(table, "reroute", key)
    assert answer in ("OK out1:", "OK out3:")
    new = answer[3:-1]
    assert rdb.hget(DAY % new, "total") == "1"
    assert rdb.hgetall(DAY % "out2") == {"total": "4", "google": "4"}  # given back: counted today
    assert await ask(table, "reroute", key) == answer  # the next retry follows the pin
    assert rdb.hget(DAY % new, "total") == "1"
    # yahoo mail on out2 stays
    assert await ask(table, "reroute", "out2 60 1tAbCd-000124-AB b@yahoo.com") == "OK out2:"


@pytest.mark.parametrize(
    "key",
    [
        "out2 sixty id a@gmail.com",
        "out2 60 id",
        "garbage",
        "out2 \u00b2 id a@gmail.com",
        "out2 \u0661 id a@x.test",
    ],
)
async def test_exim_reroute_refuses_malformed_keys(table: RouteTable, key: str) -> None:
    assert (await ask(table, "reroute", key)).startswith("PERM expected")


async def test_unknown_route_is_left_to_the_router(table: RouteTable) -> None:
    assert await ask(table, "reroute", "plain 60 id a@gmail.com") == "NOTFOUND "


async def test_redis_down_is_temp(make_config) -> None:
    config = make_config({"requeue": {"enabled": True}})
    nowhere = config.redis.model_copy(update={"url": "redis://127.0.0.1:1"})
    engine = Engine(config.model_copy(update={"redis": nowhere}), FixedClock(NOW))
    try:
        answer = await RouteTable(engine, 0.5).answer(TableRequest("route", "a@gmail.com"))
    finally:
        await engine.aclose()
    assert answer.startswith("TEMP ")


async def test_a_pin_key_of_another_type_is_replaced(table: RouteTable, rdb) -> None:
    rdb.set("{sb}:pin:a@gmail.com", "out1")  # by hand, as a string
    answer = await ask(table, "route", "a@gmail.com")
    assert answer.startswith("OK out")
    assert rdb.type("{sb}:pin:a@gmail.com") == "hash"


async def test_the_table_serves_on_a_socket_systemd_passed(table: RouteTable, monkeypatch) -> None:
    """smtp-balancer-table.socket: the passed socket is served, requeue.table_listen is not
    bound (systemd's side, LISTEN_FDS, is tested with a real daemon in tests/policyd)."""
    import asyncio
    import socket

    from smtp_balancer.requeue import table as table_module
    from smtp_balancer.requeue.socketmap import netstring
    from smtp_balancer.requeue.table import TableServer

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(16)
    held.setblocking(False)
    monkeypatch.setattr(table_module, "inherited_sockets", lambda: [held])
    server = TableServer(table, "127.0.0.1:1")  # a port nothing could bind here
    await server.start()
    try:
        reader, writer = await asyncio.open_connection(*held.getsockname())
        writer.write(netstring("route u1@example.test"))
        await writer.drain()
        assert await reader.readuntil(b",") == netstring("NOTFOUND ")  # no pin: Postfix decides
        writer.close()
    finally:
        await server.close()


async def test_a_rerouted_message_keeps_the_arm_its_first_decision_recorded(experiment_engine, rdb) -> None:
    _, engine = experiment_engine
    rdb.set("{sb}:arm:1tAbCd-000123-AB", "ab b 1700000000")  # Exim's message id keeps its record
    rdb.set("{sb}:suspend:out2:google", "suspended by operator", ex=600)
    rdb.set("{sb}:requeue:out2:google", "suspended by cli", ex=600)
    table = RouteTable(engine, 2.0)
    assert (await ask(table, "reroute", "out2 60 1tAbCd-000123-AB a@gmail.com")) in ("OK out1:", "OK out3:")
    await engine.leases.round()
    assert arm_record_of(rdb, "1tAbCd-000123-AB") == "ab b 1700000000"
    assert not rdb.keys("{sb}:expstats:*")  # not decided again in its arm
