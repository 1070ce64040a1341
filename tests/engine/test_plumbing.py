"""Endpoints whose bind address is not on this host get no mail from it, on every path."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from prometheus_client import REGISTRY

from integration.redis_server import RedisServer
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.engine.plumbing import PlumbingWatch, bindable, unplumbed
from tests.ready import started, until

NOT_HERE = "192.0.2.55"  # TEST-NET-1: never an address of a test machine
NOT_HERE6 = "2001:db8::55"  # IPv6 documentation prefix: never on a test machine


def test_the_check_binds_without_sending() -> None:
    assert bindable("127.0.0.9") is True  # all of 127/8 is on the loopback
    assert bindable(NOT_HERE) is False
    assert bindable("::1") is True
    assert bindable(NOT_HERE6) is False
    assert unplumbed({"a": ("127.0.0.9",), "b": (NOT_HERE,)}) == {"b": NOT_HERE}
    # a dual-stack endpoint missing one family is unplumbed: half its mail could not leave
    assert unplumbed({"a": ("127.0.0.9", "::1"), "b": ("127.0.0.9", NOT_HERE6)}) == {"b": NOT_HERE6}
    # a check that fails for another reason (None) never takes an endpoint out
    assert unplumbed({"a": ("x",)}, check=lambda addr: None) == {}


def test_the_watch_applies_and_logs_only_changes(caplog) -> None:
    present = {"127.0.0.9": True, NOT_HERE: False}
    applied: list[dict[str, str]] = []
    watch = PlumbingWatch({"out1": ("127.0.0.9",), "out2": (NOT_HERE,)}, 5, applied.append, present.get)
    with caplog.at_level(logging.WARNING, logger="smtp_balancer.engine"):
        watch.run_once()
        watch.run_once()
        present[NOT_HERE] = True
        watch.run_once()
    assert applied == [{"out2": NOT_HERE}, {}]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"endpoint out2: bind address {NOT_HERE} is not on this host; no mail routed through it"
        " from here until it is",
        f"endpoint out2: bind address {NOT_HERE} is back on this host",
    ]
    assert REGISTRY.get_sample_value("smtp_balancer_endpoint_unplumbed", {"endpoint": "out2"}) == 0


def _facts(i: int) -> Facts:
    return Facts(sender=f"s{i}@shop.test", recipients=(f"u{i}@gmail.com",))


@pytest.mark.parametrize("local", [True, False])
async def test_no_path_picks_an_unplumbed_endpoint(make_config, rdb, local: bool) -> None:
    config = make_config({"decision": {"local": local}, "endpoints": {"out2": {"bind_address": NOT_HERE}}})
    engine = Engine(config)
    try:
        await started(engine)
        seen = Counter([(await engine.decide(_facts(i))).endpoint for i in range(300)])
    finally:
        await engine.aclose()
    assert set(seen) == {"out1", "out3"} and seen.total() == 300
    assert engine.plumbing.current == {"out2": NOT_HERE}


async def test_degraded_decisions_skip_it_too(make_config, redis_server: RedisServer) -> None:
    engine = Engine(make_config({"endpoints": {"out2": {"bind_address": NOT_HERE}}}))
    try:
        await started(engine)
        redis_server.stop()
        # the mirror sees the loss (its tracking connection closes): decisions degrade
        await until(lambda: not engine.mirror.fresh, "the mirror to see Redis go")
        decisions = [await engine.decide(_facts(i)) for i in range(300)]
    finally:
        await engine.aclose()
    degraded = Counter(d.endpoint for d in decisions if d.degraded)
    assert degraded.total() > 200 and "out2" not in degraded


@pytest.mark.parametrize("local", [True, False])
async def test_a_pool_with_every_endpoint_unplumbed_overflows(make_config, rdb, local: bool) -> None:
    away = {name: {"bind_address": f"192.0.2.{i}"} for i, name in enumerate(("out1", "out2", "out3"), 60)}
    engine = Engine(make_config({"decision": {"local": local}, "endpoints": away}))
    try:
        await started(engine)
        decision = await engine.decide(_facts(1))
    finally:
        await engine.aclose()
    assert decision.outcome == "default" and decision.endpoint is None


@pytest.mark.parametrize("local", [True, False])
async def test_no_path_picks_another_hosts_endpoint(make_config, rdb, local: bool) -> None:
    config = make_config({"decision": {"local": local}, "endpoints": {"out2": {"host": "mta2"}}})
    engine = Engine(config, host="mta1.example.com")
    try:
        await started(engine)
        assert engine.foreign == {"out2": "mta2"}
        assert "out2" not in engine.plumbing.addresses  # not this host's to check either
        seen = Counter([(await engine.decide(_facts(i))).endpoint for i in range(300)])
    finally:
        await engine.aclose()
    assert set(seen) == {"out1", "out3"} and seen.total() == 300
    # the host it belongs to uses it
    there = Engine(config, host="mta2")
    try:
        await started(there)
        assert there.foreign == {}
        assert "out2" in {(await there.decide(_facts(i))).endpoint for i in range(300)}
    finally:
        await there.aclose()


def test_this_host_is_the_environments_or_the_machines(monkeypatch) -> None:
    import socket

    from smtp_balancer.engine.plumbing import HOST_ENV, this_host

    monkeypatch.setenv(HOST_ENV, "mta7")
    assert this_host() == "mta7"
    monkeypatch.delenv(HOST_ENV)
    assert this_host() == socket.gethostname()
