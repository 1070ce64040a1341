"""Quota leases and batched counters, sans I/O."""

from __future__ import annotations

import pytest

from smtp_balancer.clock import Clock as BaseClock
from smtp_balancer.decision.choice import NeedRedis
from smtp_balancer.decision.quota import EXHAUSTED_RECHECK_S, Giveback, QuotaBook, lease_size
from smtp_balancer.state.keys import KeySchema

DAY, HOUR = "20261124", "2026112410"


class Clock(BaseClock):
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now


def test_lease_size_is_a_small_share_of_the_smaller_cap():
    assert lease_size(100, None, 1) == 2
    assert lease_size(100_000, 500, 1) == 10
    assert lease_size(10**7, None, 1) == 100  # never more than LEASE_MAX at once
    assert lease_size(10, None, 3) == 3  # at least the message


def test_no_lease_asks_redis_then_spends_the_grant():
    book = QuotaBook(KeySchema())
    with pytest.raises(NeedRedis):
        book.check("out1", 1, DAY, HOUR, 1000, None)
    refills, givebacks, counts = book.take_work()
    assert [(r.endpoint, r.want) for r in refills] == [("out1", 20)] and not givebacks and not counts
    with pytest.raises(NeedRedis):  # asked once: no second refill while one is in flight
        book.check("out1", 1, DAY, HOUR, 1000, None)
    assert book.take_work()[0] == []
    book.granted(refills[0], 20)
    assert book.check("out1", 3, DAY, HOUR, 1000, None) is None
    assert book.take("out1", 3, (("google", 2), ("yahoo", 1)), DAY, HOUR, leased=True)
    assert book.leased() == 17
    _, _, counts = book.take_work()
    # the total was counted when the lease was granted; only the providers are added now
    assert counts == {
        "{sb}:count:out1:day:20261124": {"google": 2, "yahoo": 1},
        "{sb}:count:out1:hour:2026112410": {"google": 2, "yahoo": 1},
    }


def test_refill_is_asked_before_the_lease_runs_out():
    book = QuotaBook(KeySchema())
    with pytest.raises(NeedRedis):
        book.check("out1", 1, DAY, HOUR, 500, None)
    (refill,), _, _ = book.take_work()
    book.granted(refill, 10)
    for _ in range(4):
        assert book.take("out1", 1, (), DAY, HOUR, leased=True)
    assert book.take_work()[0] == []
    assert book.take("out1", 1, (), DAY, HOUR, leased=True)  # 5 left: under half of 10
    assert len(book.take_work()[0]) == 1


def test_a_refused_grant_marks_the_cap_reached_for_a_while():
    clock = Clock()
    book = QuotaBook(KeySchema(), clock)
    with pytest.raises(NeedRedis):
        book.check("out1", 1, DAY, HOUR, 100, None)
    (refill,), _, _ = book.take_work()
    book.granted(refill, 0)
    assert book.check("out1", 1, DAY, HOUR, 100, None) == "cap reached (quota lease)"
    clock.now += EXHAUSTED_RECHECK_S + 1
    with pytest.raises(NeedRedis):  # another daemon may have given units back: ask again
        book.check("out1", 1, DAY, HOUR, 100, None)


def test_a_refill_asked_under_the_old_cap_leaves_the_new_caps_lease_alone():
    """A CI run: a managed warm-up moved out3 from a cap of 10 to 20 while a refill asked
    under 10 was on its way. Redis refused it (10 reached), and that answer marked the
    new cap's lease exhausted: out3 took 3 of its 10 new units."""
    book = QuotaBook(KeySchema(), Clock())
    with pytest.raises(NeedRedis):
        book.check("out3", 1, DAY, HOUR, 10, None)
    (old,), _, _ = book.take_work()
    with pytest.raises(NeedRedis):  # the next step's cap: a new lease, asking for itself
        book.check("out3", 1, DAY, HOUR, 20, None)
    (new,), _, _ = book.take_work()
    book.granted(old, 0)
    with pytest.raises(NeedRedis):  # not "cap reached": the new lease still waits for its own
        book.check("out3", 1, DAY, HOUR, 20, None)
    assert book.take_work()[0] == []  # and still asking: no second refill
    book.granted(old, 2)  # units reserved under the old cap go back
    assert [(g.endpoint, g.units) for g in book.take_work()[1]] == [("out3", 2)]
    book.refill_failed([old])
    book.granted(new, 4)
    assert book.check("out3", 1, DAY, HOUR, 20, None) is None


def test_an_applied_give_back_lifts_the_hold_on_its_scope_only():
    """A CI run under load: a late select.lua reply's unit was given back, but the lease
    that saw the cap reached meanwhile kept the endpoint out for EXHAUSTED_RECHECK_S,
    so a provider cap ended one short. Once Redis applied the give-back, it asks again."""
    book = QuotaBook(KeySchema(), Clock())
    for field in ("total", "google"):
        with pytest.raises(NeedRedis):
            book.check("out3", 1, DAY, HOUR, 30, None, field=field)
    for refill in book.take_work()[0]:
        book.granted(refill, 0)
    assert book.check("out3", 1, DAY, HOUR, 30, None, field="google") == "google cap reached (quota lease)"
    book.give_back("out3", 1, (("google", 1),), DAY, HOUR)
    _, givebacks, _ = book.take_work()
    assert book.check("out3", 1, DAY, HOUR, 30, None, field="google") is not None  # not applied yet
    book.given_back([g for g in givebacks if g.field == "google"])
    with pytest.raises(NeedRedis):
        book.check("out3", 1, DAY, HOUR, 30, None, field="google")
    assert book.check("out3", 1, DAY, HOUR, 30, None) == "cap reached (quota lease)"  # total: not given back
    book.given_back([Giveback("out3", DAY, "2026112409", 1)])  # another hour's bucket: no effect
    assert book.check("out3", 1, DAY, HOUR, 30, None) == "cap reached (quota lease)"


def test_a_new_hour_gives_the_rest_back_to_its_own_bucket():
    book = QuotaBook(KeySchema())
    with pytest.raises(NeedRedis):
        book.check("out1", 1, DAY, HOUR, 1000, 100)
    (refill,), _, _ = book.take_work()
    book.granted(refill, 2)
    assert book.take("out1", 1, (), DAY, HOUR, leased=True)
    with pytest.raises(NeedRedis):
        book.check("out1", 1, DAY, "2026112411", 1000, 100)
    _, givebacks, _ = book.take_work()
    assert [(g.endpoint, g.hour, g.units) for g in givebacks] == [("out1", HOUR, 1)]
    # a grant for the old hour arriving late goes back too
    book.granted(refill, 5)
    assert [(g.hour, g.units) for g in book.take_work()[1]] == [(HOUR, 5)]


def test_a_spent_lease_fails_take_and_uncapped_counts_the_total():
    book = QuotaBook(KeySchema())
    assert not book.take("out1", 1, (), DAY, HOUR, leased=True)
    assert book.take("out2", 2, (("google", 2),), DAY, HOUR, leased=False)
    _, _, counts = book.take_work()
    assert counts["{sb}:count:out2:day:20261124"] == {"total": 2, "google": 2}


def test_restore_keeps_counts_for_the_next_round():
    book = QuotaBook(KeySchema())
    book.take("out2", 1, (("google", 1),), DAY, HOUR, leased=False)
    _, givebacks, counts = book.take_work()
    book.take("out2", 1, (("google", 1),), DAY, HOUR, leased=False)
    book.restore(givebacks, counts)
    _, _, merged = book.take_work()
    assert merged["{sb}:count:out2:day:20261124"] == {"total": 2, "google": 2}


def test_a_provider_cap_has_its_own_lease_and_its_field_is_not_counted_twice():
    book = QuotaBook(KeySchema())
    with pytest.raises(NeedRedis):
        book.check("out3", 2, DAY, HOUR, 30, None, "google")
    (refill,), _, _ = book.take_work()
    assert (refill.field, refill.day_cap, refill.want) == ("google", 30, 2)
    book.granted(refill, 2)
    assert book.check("out3", 2, DAY, HOUR, 30, None, "google") is None
    # the total is not leased here (an uncapped total): google's recipients come from its lease
    assert book.take("out3", 3, (("google", 2), ("yahoo", 1)), DAY, HOUR, False, frozenset({"google"}))
    _, _, counts = book.take_work()
    day_key = KeySchema().day_counter("out3", DAY)
    assert counts[day_key] == {"total": 3, "yahoo": 1}  # google was added when leased
    assert not book.take("out3", 2, (("google", 2),), DAY, HOUR, False, frozenset({"google"}))  # spent
    book.give_back_all()
    assert book.take_work()[1] == []  # nothing left to give back
