"""The lease service against a real redis-server: a reply that comes after a round
stopped waiting is still settled."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from integration.fixtures import arm_record_of
from smtp_balancer.clock import Clock, FixedClock
from smtp_balancer.decision.choice import NeedRedis
from smtp_balancer.decision.quota import QuotaBook
from smtp_balancer.decision.rates import SLOT_S
from smtp_balancer.engine import leases
from smtp_balancer.engine.breaker import Breaker
from smtp_balancer.engine.junk import JunkReporter
from smtp_balancer.engine.leases import (
    COUNT_BATCH,
    COUNT_INTERVAL_S,
    COUNT_MAX_WAIT_S,
    IDLE_WAIT_S,
    LeaseService,
)
from smtp_balancer.state.channel import ScriptChannel
from smtp_balancer.state.keys import KeySchema
from tests.ready import until

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
DAY, HOUR = NOW.strftime("%Y%m%d"), NOW.strftime("%Y%m%d%H")  # the buckets at the clock's time


def _service(config, timeout_s: float, clock=None) -> tuple[Any, QuotaBook, ScriptChannel, LeaseService]:
    clock = FixedClock(NOW) if clock is None else clock
    book = QuotaBook(KeySchema(), clock)
    channel = ScriptChannel(config.redis)
    service = LeaseService(book, channel, Breaker(1.0, clock), JunkReporter(clock), timeout_s)
    return clock, book, channel, service


async def test_a_grant_that_arrives_after_the_round_gave_up_is_held_not_stranded(make_config, rdb):
    _, book, channel, service = _service(make_config(), timeout_s=0.1)
    try:
        with pytest.raises(NeedRedis):  # a first lease, for out1: the round loads the scripts
            book.check("out1", 1, DAY, HOUR, 100, None)
        await service.round()
        # a lease asked for (out3's day cap is 100), sent while Redis sleeps
        with pytest.raises(NeedRedis):
            book.check("out3", 1, DAY, HOUR, 100, None)
        lease = book._leases[("out3", "total")]
        slept = asyncio.ensure_future(channel.call("DEBUG", "SLEEP", "0.5"))
        try:
            async with asyncio.timeout(0.1):
                await service.round()
            raise AssertionError("the round should have timed out behind the sleep")
        except TimeoutError:
            pass
        await slept
        for _ in range(500):  # the grant's reply is settled on arrival
            if not lease.asking:
                break
            await asyncio.sleep(0.01)
        assert not lease.asking, "the refill's reply was never settled: the lease can never refill again"
        assert lease.remaining == lease.want == 2  # lease_size(100): 2 units
        assert rdb.hget(f"{{sb}}:count:out3:day:{DAY}", "total") == "2"
        book.give_back_all()
        await service.round()
        assert rdb.hget(f"{{sb}}:count:out3:day:{DAY}", "total") == "0"  # nothing stranded
    finally:
        await channel.close()


async def test_a_round_with_only_stale_rate_refills_sends_nothing_and_carries_on(make_config):
    clock, book, channel, service = _service(make_config(), timeout_s=1.0)
    try:
        with pytest.raises(NeedRedis):  # a rate refill asked, then left a slot's validity behind
            book.rates.check("out2", "google", 60)
        clock.advance(5)
        await service.round()  # nothing to send: no error
        lease = book.rates._leases[("out2", "google")]
        assert not lease.asking  # asked again at the next check
    finally:
        await channel.close()


async def test_leases_go_back_at_stop_though_the_breaker_is_open(make_config, rdb):
    """A timeout just before a stop opens the breaker; the stop's round is the last
    chance to give the leased units back, so it is sent all the same."""
    _, book, channel, service = _service(make_config(), timeout_s=1.0)
    try:
        service.start()
        with pytest.raises(NeedRedis):
            book.check("out3", 1, DAY, HOUR, 100, None)
        lease = book._leases[("out3", "total")]
        for _ in range(500):  # the service's rounds grant the lease
            if lease.remaining:
                break
            await asyncio.sleep(0.01)
        assert rdb.hget(f"{{sb}}:count:out3:day:{DAY}", "total") == "2"
        service.breaker.failed()  # open for the next second (the injected clock stands still)
        await service.stop()
        assert rdb.hget(f"{{sb}}:count:out3:day:{DAY}", "total") == "0"
    finally:
        await channel.close()


async def test_arm_records_a_round_could_not_send_go_with_the_next(make_config, rdb):
    """A CI run under load lost moved messages' arm attribution: a round skipped while
    the breaker was open dropped the arm records it had taken. They wait now."""
    clock, book, channel, service = _service(make_config(), timeout_s=1.0)
    try:
        book.note_arm("Q1", "ab", "a", clock.wall())
        service.breaker.failed()  # open for the next second (the injected clock stands still)
        await service.round()
        assert arm_record_of(rdb, "Q1", clock.wall()) is None  # not sent: the breaker is open
        clock.advance(2)
        await service.round()
        assert arm_record_of(rdb, "Q1", clock.wall()) == f"ab a {int(clock.wall()) - 2}"
        assert book.take_arms() == []
    finally:
        await channel.close()


def test_restored_arm_records_are_bounded_and_keep_their_order() -> None:
    from smtp_balancer.decision.quota import ARMS_MAX

    book = QuotaBook(KeySchema(), FixedClock(NOW))
    book.note_arm("new", "ab", "a", 0)
    book.restore_arms([(f"Q{i}", "ab a 0") for i in range(ARMS_MAX)])
    arms = book.take_arms()
    assert len(arms) == ARMS_MAX and arms[-1] == ("new", "ab a 0") and arms[0] == ("Q1", "ab a 0")


async def test_counter_deltas_go_in_batches_and_the_rest_at_stop(make_config, rdb):
    """Counts of uncapped fields wait (no cap reads them): the first go at once; later
    ones once COUNT_BATCH decisions gathered and COUNT_INTERVAL_S passed, or after
    COUNT_MAX_WAIT_S whatever gathered; the last at stop."""
    clock, book, _, service = _service(make_config(), timeout_s=2.0)
    day = KeySchema().day_counter("out1", DAY)

    def routed(n: int = 1) -> None:
        for _ in range(n):
            assert book.take("out1", 1, [("google", 1)], DAY, HOUR, leased=False)

    try:
        routed()
        await service.round()
        assert rdb.hget(day, "total") == "1"
        routed(COUNT_BATCH - 1)
        clock.advance(COUNT_INTERVAL_S / 2)
        await service.round()
        assert rdb.hget(day, "total") == "1"  # held: fewer than a batch
        routed()
        await service.round()
        assert rdb.hget(day, "total") == "1"  # a batch, but held: the interval is not up
        clock.advance(COUNT_INTERVAL_S / 2)
        await service.round()
        assert rdb.hget(day, "total") == str(1 + COUNT_BATCH)
        routed(3)
        clock.advance(COUNT_MAX_WAIT_S - 0.01)
        await service.round()
        assert rdb.hget(day, "total") == str(1 + COUNT_BATCH)
        clock.advance(0.01)
        await service.round()  # a few, but they waited long enough
        assert rdb.hget(day, "total") == str(4 + COUNT_BATCH)
        routed()
        await service.round(last=True)  # as the stop sends it
        assert rdb.hgetall(day) == {"total": str(5 + COUNT_BATCH), "google": str(5 + COUNT_BATCH)}
    finally:
        await service.stop()


class _FrozenClock(Clock):
    """Time that moves only by ``advance`` (FixedClock's monotonic runs on): waits
    computed from it are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def wall(self) -> float:
        return NOW.timestamp() + self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _counted_rounds(service: LeaseService) -> list[bool]:
    """The rounds the service's own loop runs (``last`` of each)."""
    rounds: list[bool] = []
    take = service._take_work

    def counted(last: bool):
        rounds.append(last)
        return take(last)

    service._take_work = counted  # type: ignore[method-assign]
    return rounds


async def test_an_idle_service_sleeps_until_work_is_signalled(make_config, rdb, monkeypatch):
    """The service used to wake 20 times a second, mostly to find nothing. Here an idle
    one would sleep an hour: a refill asked for on the loop, then one from another
    thread (the milter's), each wake it for one round, and the stop wakes it to end."""
    monkeypatch.setattr(leases, "IDLE_WAIT_S", 3600.0)
    _, book, channel, service = _service(make_config(), timeout_s=10.0)
    rounds = _counted_rounds(service)
    service.start()
    task = service._task
    assert task is not None
    try:
        await until(lambda: service._waiter is not None, "the service asleep")
        assert rounds == []  # it sleeps before its first round
        with pytest.raises(NeedRedis):
            book.check("out3", 1, DAY, HOUR, 100, None)
        out3 = book._leases[("out3", "total")]
        await until(lambda: not out3.asking, "out3's refill granted")
        assert out3.remaining == 2 and rounds == [False]

        def ask() -> None:  # as a milter thread decides
            with pytest.raises(NeedRedis):
                book.check("out1", 1, DAY, HOUR, 100, None)

        await asyncio.to_thread(ask)
        out1 = book._leases[("out1", "total")]
        await until(lambda: not out1.asking, "out1's refill granted")
        assert out1.remaining == 2 and rounds == [False, False]
        await until(lambda: service._waiter is not None, "the service asleep again")
    finally:
        await service.stop()
        await channel.close()
    assert task.done() and not task.cancelled()  # ended by the stop's wake, not cancelled
    assert rdb.hget(f"{{sb}}:count:out3:day:{DAY}", "total") == "0"  # the leases went back
    assert rdb.hget(f"{{sb}}:count:out1:day:{DAY}", "total") == "0"
    with pytest.raises(NeedRedis):  # stopped: the refill's signal calls no one
        book.check("out2", 1, DAY, HOUR, 100, None)


async def test_the_service_sleeps_until_counts_or_a_held_rate_slot_fall_due(make_config):
    clock, book, channel, service = _service(make_config(), 1.0, _FrozenClock())
    try:
        assert service._wait_s() == IDLE_WAIT_S  # nothing held or counted
        with pytest.raises(NeedRedis):
            book.rates.check("out2", "google", 600)
        (refill,), _ = book.rates.take_work()
        book.rates.granted(refill, 10, 1001)
        clock.advance(0.75)
        assert service._wait_s() == pytest.approx(SLOT_S - 0.75)  # its unspent slots go back then
        clock.advance(SLOT_S)
        book.rates.take_work()
        assert service._wait_s() == IDLE_WAIT_S
        assert book.take("out1", 1, [], DAY, HOUR, leased=False)
        assert service._wait_s() == 0.0  # the first counts go at once
        service._take_work(last=False)
        assert book.take("out1", 1, [], DAY, HOUR, leased=False)
        assert service._wait_s() == IDLE_WAIT_S  # a few: looked at again within COUNT_MAX_WAIT_S
        for _ in range(COUNT_BATCH):
            assert book.take("out1", 1, [], DAY, HOUR, leased=False)
        clock.advance(0.25)
        assert service._wait_s() == pytest.approx(COUNT_INTERVAL_S - 0.25)  # a batch: due then
        clock.advance(COUNT_INTERVAL_S)
        assert service._wait_s() == 0.0
    finally:
        await channel.close()
