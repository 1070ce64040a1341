"""The holds a daemon keeps: read on its loop, a change logged, an error survived."""

from __future__ import annotations

import asyncio
import logging

from smtp_balancer.engine import Engine
from smtp_balancer.engine.holds import HoldReader
from smtp_balancer.state.keys import KeySchema
from tests.ready import started


class Failing:
    async def call(self, *args: object) -> object:
        raise RuntimeError("not a Redis error")


async def test_holds_are_read_logged_and_kept_through_errors(make_config, rdb, caplog):
    config = make_config({"tenants": ["shop.test"]})
    engine = Engine(config)
    await started(engine)
    reader = HoldReader(config.tenants, logging.getLogger("test.holds"), every_s=0.01)
    channel = [engine.channel]
    task = asyncio.get_running_loop().create_task(reader.keep_fresh(lambda: channel[0], KeySchema()))
    try:
        with caplog.at_level(logging.WARNING, logger="test.holds"):
            rdb.set("{sb}:tenanthold:shop.test", "complaints at 1%")
            while not reader.held:
                await asyncio.sleep(0.01)
            assert reader.of("a@news.shop.test") == "shop.test" and reader.of("a@other.test") is None
            channel[0] = Failing()  # type: ignore[assignment]
            while "tenant holds not read: not a Redis error" not in caplog.text:
                await asyncio.sleep(0.01)
            for _ in range(30):  # 30 failed reads: a few lines, not one each
                await asyncio.sleep(0.01)
            assert caplog.text.count("tenant holds not read") <= 5
            assert reader.of("a@shop.test") == "shop.test"  # the holds last read stay
            channel[0] = engine.channel
            rdb.delete("{sb}:tenanthold:shop.test")
            while reader.held:
                await asyncio.sleep(0.01)
        assert "tenant shop.test held: its new mail goes to the hold queue (complaints at 1%)" in caplog.text
        assert "tenant shop.test released: its new mail is routed again" in caplog.text
    finally:
        task.cancel()
        await engine.aclose()


async def test_moves_are_read_with_the_holds_and_handed_to_the_engine(make_config, rdb, caplog):
    config = make_config({"tenants": ["shop.test", "news.test"]})
    engine = Engine(config)
    await started(engine)
    reader = HoldReader(
        config.tenants, logging.getLogger("test.holds"), every_s=0.01, moves_to=engine.move_tenants
    )
    task = asyncio.get_running_loop().create_task(reader.keep_fresh(lambda: engine.channel, KeySchema()))
    try:
        with caplog.at_level(logging.WARNING, logger="test.holds"):
            rdb.hset("{sb}:tenant:shop.test:2026120510", "sent", 3)  # outcomes, matched by no guard
            rdb.set("{sb}:tenantpool:shop.test", "main spam rate 0.2%")
            rdb.set("{sb}:tenanthold:news.test", "complaints")
            while not reader.moved or not reader.held:
                await asyncio.sleep(0.01)
            assert engine.tenant_moves == {"shop.test": "main"} and reader.held == {"news.test": "complaints"}
            rdb.delete("{sb}:tenantpool:shop.test")
            while engine.tenant_moves:
                await asyncio.sleep(0.01)
        assert "tenant shop.test moved: its new mail goes to pool main (spam rate 0.2%)" in caplog.text
        assert "tenant shop.test moved back: its new mail is routed by its rules again" in caplog.text
    finally:
        task.cancel()
        await engine.aclose()
