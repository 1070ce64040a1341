"""Per-provider warm-up caps and rate caps through real Postfix, counted at the sink.

Per-domain destinations, as in production: gmail.com and googlemail.com are both
provider google, and a refusal of one destination leaves the other alone.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter

from integration.configs import ENDPOINT_IP
from integration.sink import Received
from integration.waits import MAIL_S, WaitTimeout, wait_until
from smtp_balancer.clock import TEST_TIME_ENV, utc_now
from smtp_balancer.decision.rates import window_count

OUT2, OUT3 = ENDPOINT_IP["out2"], ENDPOINT_IP["out3"]
DOMAINS = ["gmail.com", "googlemail.com", "yahoo.com", "outlook.com"]
RATE = 60
SLOW_421 = "421 4.7.0 Try again later, closing connection: slow down"


def domain_of(m: Received) -> str:
    return m.rcpt_tos[0].rpartition("@")[2]


def test_a_gmail_cap_of_30_beside_a_total_of_200_over_1000_messages(mail_system):
    today = utc_now().date().isoformat()
    ms = mail_system(
        {
            "endpoints": {
                "out3": {"warmup": {"start": today, "schedule": [200], "providers": {"google": [30]}}}
            },
            # out3 at half the weight: it reaches its total with the other providers' mail
            "pools": {
                "main": {
                    "endpoints": [
                        {"endpoint": "out1", "weight": 1},
                        {"endpoint": "out2", "weight": 1},
                        {"endpoint": "out3", "weight": 2},
                    ]
                }
            },
        },
        domains=DOMAINS,
    )
    cycle = ["gmail.com", "yahoo.com", "outlook.com"]
    assert ms.send_many(1000, threads=4, recipients=lambda i: [f"u{i}@{cycle[i % 3]}"]) == []
    got = ms.sink.wait_for(1000, timeout=240)
    via_out3 = Counter(domain_of(m) for m in got if m.peer_ip == OUT3)
    assert via_out3["gmail.com"] == 30, via_out3
    assert via_out3.total() == 200, via_out3
    gmail_elsewhere = [m for m in got if domain_of(m) == "gmail.com" and m.peer_ip != OUT3]
    assert len(gmail_elsewhere) == 334 - 30  # spilled to out1 and out2, none deferred
    day = utc_now().strftime("%Y%m%d")
    counter = ms.rdb.hgetall(f"{{sb}}:count:out3:day:{day}")
    assert counter["google"] == "30" and counter["total"] == "200", counter


def _wall_minute(m: Received, offset: float) -> int:
    return int((m.at + offset) // 60)


def _in_window(ms) -> int:
    """out2 x google messages routed in the last minute, by the rate cap's own count."""
    return window_count(ms.rdb.hgetall("{sb}:ratesec:out2:google"), time.time())


def _wait_for_second(second: float) -> None:
    """Sleep until ``second`` past the next wall-clock minute (or this one, if still ahead)."""
    now = time.time()
    target = now - now % 60 + second
    if target <= now:
        target += 60
    time.sleep(target - now)


def test_a_rate_cap_of_60_a_minute_holds_at_the_sink_and_a_slow_halves_it_for_its_ttl(mail_system):
    slow_rule = {
        "name": "slow-down",
        "match": r"4\.7\.0 .*slow down",
        "providers": ["google"],
        "statuses": ["deferred"],
        "action": "slow",
        "factor": 0.5,
        "duration": 60,
    }
    ms = mail_system(
        {
            "endpoints": {"out2": {"rate_caps": {"google": RATE}}},
            # out2 draws three quarters of the mail: well over 60 gmail a minute
            "pools": {
                "main": {
                    "endpoints": [
                        {"endpoint": "out1", "weight": 1},
                        {"endpoint": "out2", "weight": 6},
                        {"endpoint": "out3", "weight": 1},
                    ]
                }
            },
            "feedback": {"response_rules": [slow_rule]},
        },
        domains=DOMAINS,
        feedback=True,
        # the real clock: the rate window and the sink's calendar minutes are then one time
        env={"policyd": {TEST_TIME_ENV: ""}},
    )
    offset = time.time() - time.monotonic()  # the sink stamps arrivals with the monotonic clock

    def burst(tag: str, start: int) -> None:
        def rcpt(i: int) -> list[str]:
            return [f"u{i}@{'yahoo.com' if i % 4 == 0 else 'gmail.com'}"]

        assert ms.send_many(200, threads=4, recipients=rcpt, tag=lambda i: tag, start=start) == []

    def tagged(tag: str) -> list[Received]:
        return [m for m in ms.sink.messages if m.header("X-Test-Tag") == tag]

    # 150 gmail messages at once: out2 takes exactly its 60, the rest spills
    _wait_for_second(2)
    burst("a", 0)
    wait_until(lambda: len(tagged("a")) >= 200, MAIL_S, "burst a at the sink")
    a = tagged("a")
    assert sum(1 for m in a if m.peer_ip == OUT2 and domain_of(m) == "gmail.com") == RATE
    assert sum(1 for m in a if m.peer_ip == OUT2 and domain_of(m) == "yahoo.com") > 15  # not capped

    # then googlemail.com (provider google too) answers out2 "slow down": the rule
    # halves out2's google rate for 60 s. The refused messages stay queued, not lost.
    wait_until(lambda: _in_window(ms) == 0, 90, "burst a to leave the rate window")
    ms.sink.script(OUT2, "googlemail.com", SLOW_421)
    sent_g = 0
    while not ms.rdb.exists("{sb}:slow:out2:google"):
        # one at a time, each given time to be refused and read: few enter the window
        assert sent_g < 20, ("the slow rule did not fire", ms.sink.handler.refused, ms.postfix.log_tail())
        ms.send("s@shop.test", [f"g{sent_g}@googlemail.com"], seq=10_000 + sent_g, tag="g")
        sent_g += 1
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: ms.rdb.exists("{sb}:slow:out2:google"), 3, "the slow action")
    slow = ms.rdb.get("{sb}:slow:out2:google")
    assert slow.startswith("0.5 rule slow-down: out2 deferred by google"), slow
    with ms.sink.handler.lock:
        ms.sink.handler.scripted.clear()  # no more refusals: the rule must not fire again
    burst("b", 1000)
    wait_until(lambda: len(tagged("b")) >= 200, MAIL_S, "burst b at the sink")
    b_out2 = sum(1 for m in tagged("b") if m.peer_ip == OUT2 and domain_of(m) == "gmail.com")
    assert _in_window(ms) == RATE // 2  # the googlemail messages on out2 and burst b's
    # the slow's TTL runs out and burst b leaves the window: the full rate is back
    wait_until(lambda: not ms.rdb.exists("{sb}:slow:out2:google"), 75, "the slow to expire")
    wait_until(lambda: _in_window(ms) == 0, 75, "burst b to leave the rate window")
    burst("c", 2000)
    wait_until(lambda: len(tagged("c")) >= 200, MAIL_S, "burst c at the sink")
    assert sum(1 for m in tagged("c") if m.peer_ip == OUT2 and domain_of(m) == "gmail.com") == RATE

    # at the sink: out2's google mail in every calendar minute stays within the cap
    per_minute = Counter(
        _wall_minute(m, offset)
        for m in ms.sink.messages
        if m.peer_ip == OUT2 and domain_of(m) in ("gmail.com", "googlemail.com")
    )
    assert max(per_minute.values()) <= RATE, per_minute
    # nothing lost: the refused googlemail messages were delivered once refusals stopped
    ms.postfix.flush()
    wait_until(ms.postfix.queue_is_empty, MAIL_S, "the queue to empty")
    got = Counter(m.header("X-Test-Tag") for m in ms.sink.messages)
    assert got == {"a": 200, "b": 200, "c": 200, "g": sent_g}, got
    # the slowed minute: out2's google messages (refused googlemail, then burst b's gmail)
    # are exactly half the cap
    g_out2 = sum(1 for m in tagged("g") if m.peer_ip == OUT2)
    assert g_out2 >= 1 and b_out2 + g_out2 == RATE // 2, (b_out2, g_out2)
