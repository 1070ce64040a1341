"""The quota book's work signal, sans I/O: raised once for each kind of work the lease
service must send, and never for what only counts."""

from __future__ import annotations

import pytest

from smtp_balancer.clock import FixedClock
from smtp_balancer.decision.choice import NeedRedis
from smtp_balancer.decision.quota import Giveback, QuotaBook
from smtp_balancer.decision.rates import SLOT_S
from smtp_balancer.decision.wakeup import WorkSignal
from smtp_balancer.state.keys import KeySchema

DAY, HOUR = "20261124", "2026112410"


def _book() -> tuple[FixedClock, QuotaBook, list[int]]:
    """A book whose signal's calls are counted."""
    clock = FixedClock(1000.0)
    book = QuotaBook(KeySchema(), clock)
    calls: list[int] = []
    book.signal.callback = lambda: calls.append(1)
    return clock, book, calls


def test_a_signal_calls_back_once_until_it_is_cleared():
    signal = WorkSignal()
    signal.raise_()  # no callback yet: only raised
    assert signal.raised
    calls: list[int] = []
    signal.callback = lambda: calls.append(1)
    signal.raise_()
    assert calls == []  # already raised: the service has not looked yet
    signal.clear()
    signal.raise_()
    signal.raise_()
    assert calls == [1] and signal.raised


def test_the_first_count_since_a_write_raises_the_signal_and_the_rest_do_not():
    """The service then times the counts' write; a busy decider calls back once per
    round, not per message."""
    _, book, calls = _book()
    assert book.take("out1", 1, [("google", 1)], DAY, HOUR, leased=False)
    assert calls == [1] and book.counts_pending()
    book.signal.clear()
    assert book.take("out1", 1, [("google", 1)], DAY, HOUR, leased=False)
    book.note_arm("", "exp", "a", 1000.0)  # no queue id: counted, no record to send
    assert calls == [1]
    book.take_work(counts=True)  # written
    book.signal.clear()
    book.note_arm("", "exp", "a", 1000.0)  # the first count again
    assert calls == [1, 1]


def test_a_refill_raises_the_signal_and_a_spend_from_a_lease_does_not():
    _, book, calls = _book()
    with pytest.raises(NeedRedis):
        book.check("out1", 1, DAY, HOUR, 1000, None)
    assert calls == [1]
    (refill,), _, _ = book.take_work()
    book.granted(refill, refill.want)
    assert book.take("out1", 1, [], DAY, HOUR, leased=True)
    book.take_work()  # the service's round: the signal cleared, the count written
    book.signal.clear()
    calls.clear()
    assert book.take("out1", 1, [], DAY, HOUR, leased=True)  # the first count since the write
    assert book.take("out1", 1, [], DAY, HOUR, leased=True)  # spent from the lease: no refill yet
    assert calls == [1] and book.take_work(counts=False)[0] == []


@pytest.mark.parametrize(
    "queue",
    [
        pytest.param(lambda book: book.note_arm("Q1", "exp", "a", 1000.0), id="arm record"),
        pytest.param(lambda book: book.give_back("out1", 1, [("google", 1)], DAY, HOUR), id="give-back"),
        pytest.param(lambda book: book.restore_arms([("Q1", "exp a 1000")]), id="arms put back"),
        pytest.param(
            lambda book: book.restore([Giveback("out1", DAY, HOUR, 1)], {}),
            id="give-backs put back after a failed round",
        ),
        pytest.param(lambda book: book.rates.give_back("out1", ["all"], 1000), id="rate give-back"),
        pytest.param(lambda book: book.give_back_all(), id="stop"),
    ],
)
def test_each_kind_of_queued_work_raises_the_signal(queue):
    _, book, calls = _book()
    queue(book)
    assert calls == [1]


def test_a_lease_of_a_past_hour_goes_back_with_a_signal():
    _, book, calls = _book()
    with pytest.raises(NeedRedis):
        book.check("out1", 1, DAY, HOUR, 1000, None)
    (refill,), _, _ = book.take_work()
    book.granted(refill, refill.want)
    book.signal.clear()
    calls.clear()
    with pytest.raises(NeedRedis):  # the next hour: the old lease's units go back
        book.check("out1", 1, DAY, "2026112411", 1000, None)
    refills, givebacks, _ = book.take_work()
    assert [g.units for g in givebacks] == [refill.want] and len(refills) == 1
    assert calls == [1]  # once, for both


def test_a_rate_slot_asked_for_raises_the_signal_and_its_expiry_is_known():
    clock, book, calls = _book()
    rates = book.rates
    assert rates.next_expiry() is None
    with pytest.raises(NeedRedis):
        rates.check("out2", "google", 600)
    assert calls == [1]
    book.signal.clear()
    (refill,), _ = rates.take_work()
    rates.granted(refill, 10, 1001)
    assert rates.next_expiry() == refill.asked_at + SLOT_S  # when the service must give them back
    clock.advance(SLOT_S)
    _, (back,) = rates.take_work()  # expired: the unspent go back
    assert back.slots == 10 and rates.next_expiry() is None
    assert calls == [1, 1]  # the expiry queued a give-back
