"""Exim's queue listing read (``exim -bp``, as Exim 4.96 and 4.97+ print it), and an
Exim that cannot be run named. Freezing and thawing on a real Exim:
``integration/test_tenant_hold_exim.py``."""

from __future__ import annotations

import pytest

from smtp_balancer.requeue.exim_queue import EximQueue, EximQueueError, listed

LISTING = """\
25m  2.9K 1xZxxB-00058z-19 <app0@shop.test> *** frozen ***
          bob@gmail.com

 4h  1.1K 1xZxxB-00058z-1A <> *** frozen ***
          app0@shop.test

 2s   812 1xZxxC-000591-1B <letters@news.test>
          carol@yahoo.com

 1d   17K 1tWjqX-0000000004a-0BcD <app1@mail.shop.test> *** frozen ***
    D bob@gmail.com
          dave@outlook.com

not a queue line at all *** frozen ***
"""


def test_the_frozen_messages_with_their_senders():
    assert listed(LISTING) == [
        ("1xZxxB-00058z-19", "app0@shop.test"),
        ("1xZxxB-00058z-1A", ""),  # a bounce: the null sender, nobody's tenant
        ("1tWjqX-0000000004a-0BcD", "app1@mail.shop.test"),  # 4.97's longer ids
    ]
    assert ("1xZxxC-000591-1B", "letters@news.test") in listed(LISTING, frozen_only=False)


def test_an_exim_that_cannot_run_is_an_error_naming_it(tmp_path):
    missing = str(tmp_path / "no-exim")
    with pytest.raises(EximQueueError, match="no-exim -bp"):
        EximQueue(missing).frozen()
    assert EximQueue(missing).thaw(["not an id", "../../etc"]) == set()  # nothing to ask
