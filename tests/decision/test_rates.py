"""Rate-cap slot leases, sans I/O, on the injected clock (moved by advance)."""

from __future__ import annotations

import pytest

from smtp_balancer.clock import FixedClock
from smtp_balancer.decision.choice import NeedRedis
from smtp_balancer.decision.rates import (
    EXHAUSTED_RECHECK_S,
    SLOT_S,
    RateBook,
    RateGiveback,
    RateRefill,
    lease_second,
    rate_lease_size,
    rate_second,
    window_count,
)


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
    book.granted(refill, 10, 1001)
    assert book.check("out2", "google", 600) is None
    assert book.take("out2", ("google",))
    assert not book.take("out2", ("google", "all"))  # no "all" slot: nothing spent
    clock.advance(SLOT_S)  # expired: the 9 unspent go back, at the second they count at
    _, (back,) = book.take_work()
    assert back == RateGiveback("out2", "google", 1001, 9)
    assert not book.take("out2", ("google",))


def test_a_lease_counts_at_the_second_its_validity_ends_and_a_message_at_its_own():
    assert lease_second(1000.2) == 1001
    assert lease_second(1000.0) == 1001
    assert rate_second(1000.9) == 1000


def test_a_stopped_book_gives_back_every_unspent_slot_and_a_message_at_its_second():
    clock = FixedClock(1000.0)
    book = RateBook(clock)
    book.granted(_asked(book, "google", 600), 5, 1001)
    book.granted(_asked(book, "all", 600), 3, 1001)
    assert book.take("out2", ("google", "all"))
    book.give_back("out2", ("google",), 999)
    book.give_back_all()
    _, back = book.take_work()
    assert sorted(back, key=lambda g: (g.scope, g.second)) == [
        RateGiveback("out2", "all", 1001, 2),
        RateGiveback("out2", "google", 999, 1),
        RateGiveback("out2", "google", 1001, 4),
    ]


def test_a_window_counts_the_last_minute_of_seconds_and_skips_junk():
    fields = {b"sum": b"99", b"low": b"940", b"939": b"5", b"940": b"2", b"1000": b"3", b"1001": b"4"}
    assert window_count(fields, 1000.5) == 9  # 940..1001; 939 is out, sum is not trusted
    assert window_count({b"990": b"x", b"x": b"1", b"995": b"-3", b"996": b"1"}, 1000.0) == 1
    assert window_count({}, 1000.0) == 0


def test_a_full_window_is_rechecked_after_a_while():
    clock = FixedClock(1000.0)
    book = RateBook(clock)
    refill = _asked(book, "google", 60)
    book.granted(refill, 0, 1001)
    assert book.check("out2", "google", 60) == "google rate cap reached (rate lease)"
    clock.advance(EXHAUSTED_RECHECK_S)
    with pytest.raises(NeedRedis):
        book.check("out2", "google", 60)


def test_a_grant_that_arrives_after_its_validity_goes_straight_back():
    clock = FixedClock(1000.0)
    book = RateBook(clock)
    refill = _asked(book, "all", 6000)
    clock.advance(SLOT_S + 0.1)
    book.granted(refill, 100, 1001)
    _, (back,) = book.take_work()
    assert back == RateGiveback("out2", "all", 1001, 100)
    assert not book.take("out2", ("all",))


def test_a_refusal_that_arrives_late_holds_the_endpoint_out_only_from_when_it_was_asked():
    # a refill asked before the window moved on (the clock advanced a minute while it was
    # in flight) is refused for the old window: that refusal must not close the new one
    clock = FixedClock(1000.0)
    book = RateBook(clock)
    refill = _asked(book, "google", 60)
    clock.advance(61)
    book.granted(refill, 0, 1001)
    with pytest.raises(NeedRedis):
        book.check("out2", "google", 60)
