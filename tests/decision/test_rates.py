"""Rate-cap slot leases, sans I/O, on the injected clock (moved by advance)."""

from __future__ import annotations

import pytest

from smtp_balancer.clock import FixedClock
from smtp_balancer.decision.choice import NeedRedis
from smtp_balancer.decision.rates import EXHAUSTED_RECHECK_S, SLOT_S, RateBook, RateRefill, rate_lease_size


def _asked(book: RateBook, scope: str, cap: int) -> RateRefill:
    """The refill a check without a slot asks for."""
    with pytest.raises(NeedRedis):
        book.check("out2", scope, cap)
    (refill,), _ = book.take_work()
    return refill


def test_lease_size_is_about_half_a_second_of_the_cap():
    assert rate_lease_size(60) == 1
    assert rate_lease_size(6000) == 50
    assert rate_lease_size(10**9) == 2000


def test_slots_are_asked_for_spent_and_given_back_when_they_expire():
    clock = FixedClock(1000.0)
    book = RateBook(clock)
    with pytest.raises(NeedRedis):
        book.check("out2", "google", 600)
    (refill,), givebacks = book.take_work()
    assert (refill.endpoint, refill.scope, refill.want, refill.cap) == ("out2", "google", 5, 600)
    assert givebacks == []
    book.granted(refill, 10)
    assert book.check("out2", "google", 600) is None
    assert book.take("out2", ("google",))
    assert not book.take("out2", ("google", "all"))  # no "all" slot: nothing spent
    clock.advance(SLOT_S)  # expired: the 9 unspent go back, by name
    _, (back,) = book.take_work()
    assert back.slots == tuple(f"{refill.name}:{i}" for i in range(1, 10))
    assert not book.take("out2", ("google",))


def test_a_full_window_is_rechecked_after_a_while():
    clock = FixedClock(1000.0)
    book = RateBook(clock)
    refill = _asked(book, "google", 60)
    book.granted(refill, 0)
    assert book.check("out2", "google", 60) == "google rate cap reached (rate lease)"
    clock.advance(EXHAUSTED_RECHECK_S)
    with pytest.raises(NeedRedis):
        book.check("out2", "google", 60)


def test_a_grant_that_arrives_after_its_validity_goes_straight_back():
    clock = FixedClock(1000.0)
    book = RateBook(clock)
    refill = _asked(book, "all", 6000)
    clock.advance(SLOT_S + 0.1)
    book.granted(refill, 100)
    _, (back,) = book.take_work()
    assert len(back.slots) == 100
    assert not book.take("out2", ("all",))


def test_a_refusal_that_arrives_late_holds_the_endpoint_out_only_from_when_it_was_asked():
    # a refill asked before the window moved on (the clock advanced a minute while it was
    # in flight) is refused for the old window: that refusal must not close the new one
    clock = FixedClock(1000.0)
    book = RateBook(clock)
    refill = _asked(book, "google", 60)
    clock.advance(61)
    book.granted(refill, 0)
    with pytest.raises(NeedRedis):
        book.check("out2", "google", 60)
