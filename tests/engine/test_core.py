"""The engine against a real redis-server: weights, caps, stickiness, suspensions, outages."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime
from multiprocessing import get_context
from pathlib import Path

import pytest
import redis

from integration.redis_server import RedisServer
from integration.statistics import assert_shares
from integration.workloads import decide_many
from smtp_balancer.clock import FixedClock
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.decision.rates import window_count
from smtp_balancer.engine import Engine, ThreadedEngine
from smtp_balancer.engine.core import Pending
from smtp_balancer.observe import metrics
from smtp_balancer.state import scripts
from tests.ready import READY_S, mirrored, started, started_threaded, until

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)


def gmail(i: int = 0) -> Facts:
    return Facts(sender=f"s{i}@shop.test", recipients=(f"u{i}@gmail.com",))


async def decide_n(engine: Engine, n: int, facts_for=gmail) -> Counter[str]:
    # a write reaches local decisions when its invalidation has: wait for the ones before now
    await engine.settle()
    seen: Counter[str] = Counter()
    for i in range(n):
        d = await engine.decide(facts_for(i), now=NOW)
        seen[d.endpoint or d.outcome] += 1
    return seen


async def test_weights_split_1_2_1_and_live_weight_change(make_config, rdb):
    engine = Engine(make_config())
    try:
        seen = await decide_n(engine, 20_000)
        assert_shares(seen, {"out1": 1, "out2": 2, "out3": 1})
        rdb.hset("{sb}:pool:main:weights", "out2", 0)
        after = await decide_n(engine, 500)
        assert after["out2"] == 0 and after["out1"] + after["out3"] == 500
    finally:
        await engine.aclose()


def _monitored(redis_server: RedisServer):
    """Record every command Redis runs until the returned stop() is called."""
    monitor_client = redis.Redis(unix_socket_path=str(redis_server.socket))
    marker = redis.Redis(unix_socket_path=str(redis_server.socket))
    marker.ping()  # connect (and handshake) before monitoring starts
    commands: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        with monitor_client.monitor() as m:
            ready.set()
            for cmd in m.listen():
                if cmd["command"].startswith("ECHO end-of-test"):
                    return
                commands.append(cmd)

    t = threading.Thread(target=listen)
    t.start()
    assert ready.wait(READY_S)  # set once Redis acknowledged MONITOR: every later command is seen

    def stop() -> list[str]:
        marker.echo("end-of-test")
        t.join(10)
        monitor_client.close()
        return [c["command"] for c in commands if c.get("client_type") != "lua"]

    return stop


async def test_one_round_trip_per_decision_without_local_decisions(make_config, redis_server: RedisServer):
    # the live-state refresh is periodic, not per decision: let the first one finish
    engine = Engine(make_config({"decision": {"state_refresh_s": 3600, "local": False}}))
    await engine.decide(gmail(), now=NOW)  # loads the script once
    await engine.mirror._refresh_task
    stop = _monitored(redis_server)
    try:
        for i in range(25):
            await engine.decide(gmail(i), now=NOW)
    finally:
        await engine.aclose()
        commands = stop()
    assert [c.split()[0].upper() for c in commands] == ["EVALSHA"] * 25


async def test_local_decisions_make_no_round_trip_each(make_config, redis_server: RedisServer, rdb):
    engine = Engine(make_config())
    await mirrored(engine)
    stop = _monitored(redis_server)
    try:
        for i in range(300):
            assert (await engine.decide(gmail(i), now=NOW)).outcome == "route"
            if i % 100 == 0:
                await asyncio.sleep(0.06)  # let a counter batch go out mid-run
    finally:
        await engine.aclose()  # writes the last batch
        commands = stop()
    select_sha = scripts.SELECT.sha
    assert not [c for c in commands if select_sha in c], "a decision went to select.lua"
    assert 1 <= len(commands) <= 10, commands  # a few batched counter writes, not 300
    totals = sum(
        int(rdb.hget(f"{{sb}}:count:{ep}:day:20261124", "total") or 0) for ep in ("out1", "out2", "out3")
    )
    assert totals == 300
    google = sum(
        int(rdb.hget(f"{{sb}}:count:{ep}:hour:2026112410", "google") or 0) for ep in ("out1", "out2", "out3")
    )
    assert google == 300


@pytest.mark.parametrize("cap", [500, 1000])
def test_cap_exact_under_4_processes_x_16_tasks(make_config, tmp_path: Path, rdb, cap):
    today = NOW.date().isoformat()
    make_config(
        {
            # exactness is the point here, not the budget: 64 deciders share 2 cores
            "decision": {"budget_ms": 5000},
            "redis": {"connect_timeout_ms": 5000},
            "endpoints": {"out1": {"warmup": {"start": today, "schedule": [{"daily": cap}]}}},
            "pools": {
                "main": {"endpoints": [{"endpoint": "out1", "weight": 50}, {"endpoint": "out2", "weight": 1}]}
            },
        }
    )
    ctx = get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=ctx) as pool:
        futures = [
            pool.submit(decide_many, str(tmp_path / "config.yaml"), 1250, 16, seed, NOW.isoformat(), 3)
            for seed in range(4)
        ]
        results = [f.result(timeout=240) for f in futures]
    used: Counter[str] = Counter()
    for r in results:
        used.update(r)
    assert used["out1"] == cap, used
    assert rdb.hget("{sb}:count:out1:day:20261124", "total") == str(cap)
    # every message was routed: the rest spilled to out2
    assert used["out2"] == int(rdb.hget("{sb}:count:out2:day:20261124", "total"))
    assert used["out1"] + used["out2"] == sum(used.values())
    assert "default" not in used and "defer" not in used


async def test_sticky_sender_domain_and_drain_moves_only_its_keys(make_config, rdb):
    engine = Engine(make_config({"pools": {"main": {"stickiness": "sender_domain"}}}))
    domains = [f"d{i}.test" for i in range(200)]

    async def placement() -> dict[str, str]:
        await engine.settle()
        out = {}
        for dom in domains:
            decisions = [
                await engine.decide(Facts(sender=f"{u}@{dom}", recipients=("x@y.test",)), now=NOW)
                for u in ("a", "b", "c")
            ]
            assert not any(d.degraded for d in decisions), [d.reason for d in decisions]
            picks = {d.endpoint for d in decisions}
            assert len(picks) == 1, (dom, picks)
            out[dom] = picks.pop()
        return out

    try:
        before = await placement()
        assert set(before.values()) == {"out1", "out2", "out3"}
        rdb.hset("{sb}:endpoint:out2:state", mapping={"state": "drained", "reason": "test"})
        after = await placement()
        for dom in domains:
            if before[dom] != "out2":
                assert after[dom] == before[dom], dom
            else:
                assert after[dom] in ("out1", "out3")
    finally:
        await engine.aclose()


async def test_sticky_spread_uses_at_most_n_endpoints(make_config):
    engine = Engine(make_config({"pools": {"main": {"stickiness": "sender", "spread": 2}}}))
    try:
        used_by_sender = {}
        for s in range(30):
            used_by_sender[s] = {
                (
                    await engine.decide(Facts(sender=f"s{s}@a.test", recipients=("x@y.test",)), now=NOW)
                ).endpoint
                for _ in range(40)
            }
        assert all(len(u) <= 2 for u in used_by_sender.values())
        assert sum(len(u) == 2 for u in used_by_sender.values()) > 20  # the spread is real
    finally:
        await engine.aclose()


async def test_provider_suspension_scoped_and_expires(make_config, rdb):
    engine = Engine(make_config())
    key = "{sb}:suspend:out2:google"
    try:
        # a TTL no machine outruns: the 600 decisions below must all see the suspension
        rdb.set(key, "rule gmail-421: 421-4.7.28", ex=600)
        google = await decide_n(engine, 300)
        yahoo = await decide_n(engine, 300, lambda i: Facts(recipients=(f"u{i}@yahoo.com",)))
        assert google["out2"] == 0 and google["out1"] + google["out3"] == 300
        assert yahoo["out2"] > 100
        # then it runs out in Redis (not a delete): the engine honours the TTL it read
        rdb.pexpire(key, 50)
        await until(lambda: not rdb.exists(key), "the suspension's TTL to run out")
        assert (await decide_n(engine, 300))["out2"] > 100
    finally:
        await engine.aclose()


async def test_suspension_for_all_providers(make_config, rdb):
    engine = Engine(make_config())
    try:
        rdb.set("{sb}:suspend:out1:all", "manual")
        seen = await decide_n(engine, 200, lambda i: Facts(recipients=(f"u{i}@yahoo.com", "v@other.test")))
        assert seen["out1"] == 0
    finally:
        await engine.aclose()


async def test_overflow_chain_and_terminal_policies(make_config, rdb):
    today = NOW.date().isoformat()
    cap = {"warmup": {"start": today, "schedule": [{"daily": 5}]}}
    engine = Engine(
        make_config(
            {
                "endpoints": {"out1": cap, "out2": cap},
                "pools": {
                    "main": {"endpoints": [{"endpoint": "out1", "weight": 1}], "overflow": "pool:spill"},
                    "spill": {"endpoints": [{"endpoint": "out2", "weight": 1}], "overflow": "defer"},
                },
            }
        )
    )
    try:
        seen = await decide_n(engine, 12)
        assert seen == Counter({"out1": 5, "out2": 5, "defer": 2})
    finally:
        await engine.aclose()


async def test_ignore_caps_overflow(make_config):
    today = NOW.date().isoformat()
    engine = Engine(
        make_config(
            {
                "endpoints": {"out1": {"warmup": {"start": today, "schedule": [{"daily": 3}]}}},
                "pools": {
                    "main": {"endpoints": [{"endpoint": "out1", "weight": 1}], "overflow": "ignore_caps"}
                },
            }
        )
    )
    try:
        decisions = [await engine.decide(gmail(i), now=NOW) for i in range(6)]
        assert [d.endpoint for d in decisions] == ["out1"] * 6
        assert "caps ignored" in decisions[-1].reason and "caps ignored" not in decisions[0].reason
    finally:
        await engine.aclose()


async def test_multi_recipient_counts_by_provider(make_config, rdb):
    engine = Engine(make_config({"pools": {"main": {"endpoints": [{"endpoint": "out1", "weight": 1}]}}}))
    try:
        await engine.decide(Facts(recipients=("a@gmail.com", "b@yahoo.com", "c@example.test")), now=NOW)
    finally:
        await engine.aclose()
    day = rdb.hgetall("{sb}:count:out1:day:20261124")
    assert day == {"total": "3", "google": "1", "yahoo": "1", "other": "1"}
    assert rdb.hget("{sb}:count:out1:hour:2026112410", "total") == "3"
    assert 0 < rdb.ttl("{sb}:count:out1:day:20261124") <= 3 * 86400


async def test_redis_down_degrades_within_budget_then_recovers(make_config, redis_server: RedisServer):
    # every decision by Redis (local: false), so that Redis going away is seen at once
    config = make_config({"decision": {"budget_ms": 50, "local": False}})
    engine = Engine(config)
    try:
        # connected and loaded first: a first decision that must also connect and load
        # the script within 50 ms timed out on a loaded CI machine
        await started(engine)
        await _until_redis_decides(engine)
        redis_server.stop()
        before = metrics.DEGRADED.labels("redis_error")._value.get()
        for i in range(50):
            d = await engine.decide(gmail(i), now=NOW)
            # the refused connection is the answer: no decision waits out a timer (the
            # budget's or the 2 s admin timeout), which would say "timeout"
            assert d.degraded and d.outcome == "route" and d.endpoint in ("out1", "out2", "out3")
            assert d.reason.startswith(("degraded (redis_error)", "degraded (circuit_open)")), d.reason
        assert metrics.DEGRADED.labels("redis_error")._value.get() > before
        redis_server.start()
        deadline = time.monotonic() + 5
        while (await engine.decide(gmail(), now=NOW)).degraded:
            assert time.monotonic() < deadline, "decisions did not recover after Redis restarted"
            await asyncio.sleep(0.05)
    finally:
        await engine.aclose()


async def test_slow_redis_times_out_to_degraded(make_config, redis_server: RedisServer):
    config = make_config({"decision": {"budget_ms": 50, "local": False}})
    engine = Engine(config)
    try:
        await started(engine)  # see test_redis_down_degrades_within_budget_then_recovers
        await _until_redis_decides(engine)
        # a stopped Redis takes the request and answers nothing until it is continued: a
        # decision that waited for its answer would never come back (the bound ends a hang)
        with redis_server.stopped():
            async with asyncio.timeout(READY_S):
                d = await engine.decide(gmail(), now=NOW)
        assert d.degraded and d.reason.startswith("degraded (timeout)"), d.reason
        assert d.outcome == "route" and d.endpoint in ("out1", "out2", "out3")
    finally:
        await engine.aclose()


async def test_degraded_skips_warming_endpoints(make_config, redis_server: RedisServer):
    today = NOW.date().isoformat()
    engine = Engine(
        make_config({"endpoints": {"out2": {"warmup": {"start": today, "schedule": "standard"}}}})
    )
    redis_server.stop()
    try:
        seen = await decide_n(engine, 200)
        assert seen["out2"] == 0 and seen["out1"] + seen["out3"] == 200
    finally:
        await engine.aclose()


async def test_fallback_default_answers_dunno(make_config, redis_server: RedisServer):
    engine = Engine(make_config({"decision": {"fallback": "default"}}))
    redis_server.stop()
    try:
        d = await engine.decide(gmail(), now=NOW)
        assert d.outcome == "default" and d.degraded and d.route is None
    finally:
        await engine.aclose()


@pytest.mark.parametrize(
    "junk",
    [
        lambda r: r.hset("{sb}:pool:main:weights", "out1", "banana"),
        lambda r: r.set("{sb}:pool:main:weights", "not-a-hash"),
        lambda r: r.hset("{sb}:endpoint:out1:state", "state", "sideways"),
        lambda r: r.set("{sb}:endpoint:out1:state", "drained"),
        lambda r: r.hset("{sb}:count:out1:day:20261124", "total", "lots"),
        lambda r: r.lpush("{sb}:count:out1:hour:2026112410", "x"),
        lambda r: r.hset("{sb}:pool:main:weights", "out1", "-5"),
        lambda r: r.hset("{sb}:pool:main:weights", "out1", "1e99"),
    ],
)
async def test_junk_state_is_survived_and_counted(make_config, rdb, junk):
    engine = Engine(make_config())
    junk(rdb)
    before = sum(
        s.value for m in metrics.STATE_JUNK.collect() for s in m.samples if s.name.endswith("_total")
    )
    try:
        seen = await decide_n(engine, 400)
    finally:
        await engine.aclose()
    after = sum(s.value for m in metrics.STATE_JUNK.collect() for s in m.samples if s.name.endswith("_total"))
    assert sum(seen.values()) == 400 and set(seen) <= {"out1", "out2", "out3"}
    assert after > before
    assert seen["out1"] > 40  # the YAML weight (1 of 4) still applies to out1


async def test_junk_counter_blocks_only_a_capped_endpoint(make_config, rdb):
    today = NOW.date().isoformat()
    engine = Engine(make_config({"endpoints": {"out1": {"warmup": {"start": today, "schedule": [100]}}}}))
    rdb.hset("{sb}:count:out1:day:20261124", "total", "lots")
    try:
        d = await engine.decide(gmail(), now=NOW, commit=False, explain=True)
        out1 = next(v for v in d.verdicts if v.endpoint == "out1")
        assert not out1.eligible and "unreadable" in out1.detail
    finally:
        await engine.aclose()


async def test_a_junk_counter_stops_local_picks_at_once_and_fixing_it_restores_them(make_config, rdb):
    """Local mode holds quota leases; junk written into a counter (a hand edit) is seen
    by the next counter write, as select.lua sees it, and no more leased units are spent
    on that endpoint; once the counter is fixed, the endpoint is picked again at once,
    not after a 30 s hold."""
    day = f"{NOW:%Y%m%d}"
    config = make_config(
        {"endpoints": {"out3": {"warmup": {"start": NOW.date().isoformat(), "schedule": [5000]}}}}
    )
    engine = Engine(config, FixedClock(NOW))
    junk_seen = metrics.STATE_JUNK.labels("counter")
    try:
        await started(engine)
        lease = None
        for i in range(2000):  # until out3 holds a lease, decided locally
            await engine.decide(gmail(i), now=NOW)
            lease = engine.book._leases.get(("out3", "total"))
            if lease is not None and lease.remaining > 10:
                break
            await asyncio.sleep(0.005)
        assert lease is not None and lease.remaining > 10
        before = junk_seen._value.get()
        rdb.hset(f"{{sb}}:count:out3:day:{day}", "total", "lots")
        i = 10_000
        while junk_seen._value.get() == before:  # out3's next counts are written
            i += 1
            await engine.decide(gmail(i), now=NOW)
            await asyncio.sleep(0.005)
            assert i < 12_000, "the junk counter was never seen"
        after = Counter([(await engine.decide(gmail(20_000 + k), now=NOW)).endpoint for k in range(200)])
        assert after["out3"] == 0 and after["out1"] + after["out2"] == 200, after
        rdb.hset(f"{{sb}}:count:out3:day:{day}", "total", "100")  # fixed
        fixed = Counter([(await engine.decide(gmail(30_000 + k), now=NOW)).endpoint for k in range(400)])
        # weight 1 of 1:2:1: 100 expected; fewer than 50 has p < 1e-8
        assert fixed["out3"] >= 50, fixed
    finally:
        await engine.aclose()


async def test_select_lua_starts_a_capped_counter_below_zero_again_from_0(make_config, rdb):
    """A capped counter below zero (reset by hand while leases were out, their
    give-backs landing after) reads as 0 and counts again from 0: its deficit would
    otherwise let that much more mail through the cap. An uncapped one keeps the
    signed sum (a give-back from another process may land before its count)."""
    day = f"{NOW:%Y%m%d}"
    config = make_config(
        {
            "decision": {"local": False},
            "endpoints": {"out3": {"warmup": {"start": NOW.date().isoformat(), "schedule": [5000]}}},
        }
    )
    rdb.hset("{sb}:pool:main:weights", mapping={"out1": 0, "out2": 0})  # out3 only
    rdb.hset(f"{{sb}}:count:out3:day:{day}", mapping={"total": -40, "google": -3})
    engine = Engine(config, FixedClock(NOW))
    try:
        await started(engine)
        d = await engine.decide(gmail(), now=NOW)
        assert d.endpoint == "out3" and not d.degraded, d
    finally:
        await engine.aclose()
    # the total is capped: from 0; google has no cap of its own: the signed sum
    assert rdb.hgetall(f"{{sb}}:count:out3:day:{day}") == {"total": "1", "google": "-2"}


async def test_explain_consumes_no_quota(make_config, rdb):
    engine = Engine(make_config())
    try:
        for _ in range(5):
            d = await engine.decide(gmail(), now=NOW, commit=False, explain=True)
            assert d.outcome == "route" and len(d.verdicts) == 3
    finally:
        await engine.aclose()
    assert rdb.keys("{sb}:count:*") == []


def test_threaded_engine_start(make_config, rdb, redis_server: RedisServer):
    rdb.hset("{sb}:endpoint:out2:state", "state", "drained")
    engine = ThreadedEngine(make_config())
    try:
        started_threaded(engine)
        assert engine.engine.live is not None and set(engine.engine.live.out_of_service) == {"out2"}
        assert rdb.script_exists(scripts.SELECT.sha) == [True]
    finally:
        engine.close()
    redis_server.stop()
    cold = ThreadedEngine(make_config())
    try:
        assert cold.start() is False  # Redis down at start: not fatal, decisions degrade
    finally:
        cold.close()


def test_threaded_engine_from_many_threads(make_config):
    engine = ThreadedEngine(make_config())
    results: list[str] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(50):
            d = engine.decide(gmail(t * 100 + i), now=NOW)
            with lock:
                results.append(d.endpoint or "")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.close()
    assert len(results) == 400 and set(results) == {"out1", "out2", "out3"}


def test_a_threaded_caller_that_gave_up_leaves_nothing_counted(make_config, rdb, redis_server: RedisServer):
    """The milter's wait (decision_timeout_ms) runs out while select.lua is still queued
    behind a busy Redis: the mail leaves by the default route, and the route the engine
    then decides is given back, not counted."""
    engine = ThreadedEngine(make_config({"decision": {"local": False, "budget_ms": 2000}}), FixedClock(NOW))
    try:
        started_threaded(engine)
        with redis_server.stopped():  # busy: it takes select.lua and answers later
            gave_up = engine.decide(gmail(1), timeout_s=0.05)
        assert gave_up.outcome == "default" and gave_up.reason == "degraded (engine did not answer)"
        waited = engine.decide(gmail(2), timeout_s=2.0)  # after the first, on the same connection
        assert waited.outcome == "route" and waited.endpoint is not None

        def counted() -> int:
            day = f"{NOW:%Y%m%d}"
            return sum(
                int(rdb.hget(f"{{sb}}:count:{ep}:day:{day}", "total") or 0) for ep in ("out1", "out2", "out3")
            )

        # the give-back goes out with a lease round (the service's own, or this one)
        deadline = time.monotonic() + 10
        while counted() != 1 and time.monotonic() < deadline:
            engine.run(engine.engine.leases.round(), 2.0)
            time.sleep(0.02)
        assert counted() == 1
    finally:
        engine.close()


async def test_no_rule_matches(make_config):
    engine = Engine(make_config(replace={"rules": [{"name": "tx", "message_class": ["tx"], "pool": "main"}]}))
    try:
        d = await engine.decide(gmail(), now=NOW)
        assert d.outcome == "no_rule" and d.route is None
    finally:
        await engine.aclose()


def test_not_started_warmup_takes_nothing(make_config):
    later = date(2026, 12, 1).isoformat()
    config = make_config({"endpoints": {"out1": {"warmup": {"start": later, "schedule": "standard"}}}})

    async def run() -> Counter[str]:
        engine = Engine(config)
        try:
            return await decide_n(engine, 100)
        finally:
            await engine.aclose()

    assert asyncio.run(run())["out1"] == 0


async def test_degraded_decisions_keep_the_last_known_live_state(make_config, redis_server: RedisServer, rdb):
    clock = FixedClock(NOW)  # out3's suspension lifts when the test moves the clock, not before
    engine = Engine(make_config(), clock)
    try:
        rdb.hset("{sb}:endpoint:out2:state", mapping={"state": "drained", "reason": "maintenance"})
        rdb.set("{sb}:suspend:out1:google", "rule gmail-421", ex=6000)
        rdb.set("{sb}:suspend:out3:yahoo", "short", ex=600)
        rdb.hset("{sb}:pool:main:weights", "out3", 5)
        live = await engine.mirror.load()
        assert set(live.out_of_service) == {"out2"} and live.weights == {"main": {"out3": 5}}
        redis_server.stop()
        google = await decide_n(engine, 200)
        assert google == Counter({"out3": 200}), google  # out2 drained, out1 suspended for google
        yahoo = await decide_n(engine, 300, lambda i: Facts(recipients=(f"u{i}@yahoo.com",)))
        assert yahoo["out2"] == 0 and yahoo["out3"] == 0 and yahoo["out1"] == 300  # out3 suspended for yahoo
        clock.advance(601)  # the snapshot kept out3's expiry: its suspension lifts on time
        later = await decide_n(engine, 300, lambda i: Facts(recipients=(f"u{i}@yahoo.com",)))
        assert later["out2"] == 0 and later["out3"] > 150  # live weight 5 vs 1
        d = await engine.decide(gmail(), now=NOW)
        assert d.degraded and "last-known state" in d.reason
    finally:
        await engine.aclose()


async def test_live_state_refresh_survives_junk(make_config, rdb):
    engine = Engine(make_config())
    try:
        rdb.set("{sb}:pool:main:weights", "not-a-hash")
        rdb.set("{sb}:endpoint:out1:state", "not-a-hash")
        rdb.hset("{sb}:suspend:out2:all", "x", "wrong type, still a suspension")
        live = await engine.mirror.load()
        assert live.weights == {} and live.out_of_service == {}
        assert live.suspended("out2", ["google"], time.monotonic())
    finally:
        await engine.aclose()


async def test_a_live_change_reaches_local_decisions_without_waiting_for_it(make_config, rdb):
    engine = Engine(make_config())
    try:
        await mirrored(engine)
        rdb.hset("{sb}:pool:main:weights", "out2", 0)
        # no settle(): the invalidation alone must stop local decisions, then the re-read resumes them
        deadline = time.monotonic() + READY_S  # a bound on a hang, not a guess
        while time.monotonic() < deadline and engine.live.weight("main", "out2", 2) != 0:
            await asyncio.sleep(0.005)
        assert engine.live.weight("main", "out2", 2) == 0 and engine.mirror.fresh
        seen = Counter([(await engine.decide(gmail(i), now=NOW)).endpoint for i in range(300)])
        assert seen["out2"] == 0
        rdb.set("{sb}:throttle:out1:google", "0.1 rule gmail-421", ex=60)
        await engine.settle()
        seen = Counter([(await engine.decide(gmail(i), now=NOW)).endpoint for i in range(2000)])
        assert seen["out1"] < 0.2 * seen["out3"], seen  # out1 keeps about a tenth of its share
    finally:
        await engine.aclose()


async def test_tracking_refused_by_an_acl_still_decides_through_redis(make_config, rdb, caplog):
    # an ACL user without +client: no tracking, every decision a select.lua round trip
    rdb.execute_command("ACL", "SETUSER", "mta", "on", ">secret", "~*", "&*", "+@all", "-client")
    engine = Engine(make_config({"redis": {"username": "mta", "password": "secret"}}))
    try:
        await started(engine)
        assert not engine.mirror.fresh
        rdb.hset("{sb}:pool:main:weights", "out2", 0)
        seen = await decide_n(engine, 200)
        assert seen["out2"] == 0 and seen["out1"] + seen["out3"] == 200
        assert any("refused key tracking" in r.getMessage() for r in caplog.records)
        # more than one log line: a gauge that lasts, for the SmtpBalancerKeyTrackingRefused alert
        assert metrics.KEY_TRACKING_REFUSED._value.get() == 1
    finally:
        await engine.aclose()
    tracked = Engine(make_config())
    try:
        await mirrored(tracked)  # an ACL with +client: tracking, and the mirror in use
        assert metrics.KEY_TRACKING_REFUSED._value.get() == 0
    finally:
        await tracked.aclose()


async def test_leases_are_given_back_at_close(make_config, rdb):
    today = NOW.date().isoformat()
    engine = Engine(make_config({"endpoints": {"out2": {"warmup": {"start": today, "schedule": [5000]}}}}))
    try:
        await started(engine)
        seen = Counter()
        for i in range(400):
            seen[(await engine.decide(gmail(i), now=NOW)).endpoint] += 1
            if i % 50 == 0:
                await asyncio.sleep(0.06)  # let refills land, so most decisions are local
        assert engine.book.leased() > 0
    finally:
        await engine.aclose()
    # what was leased and not spent went back: the counter holds exactly what out2 took
    assert int(rdb.hget("{sb}:count:out2:day:20261124", "total")) == seen["out2"]
    assert int(rdb.hget("{sb}:count:out2:day:20261124", "google")) == seen["out2"]


async def test_a_script_run_after_its_deadline_counts_nothing(make_config, rdb, redis_server: RedisServer):
    """A stalled Redis runs the queued select.lua calls after the decisions have given up
    and degraded: those calls must not count quota for routes the mail did not take.
    (A late reply's counts would also be given back by a later round: the lease service
    is stopped, so that only the deadline can keep the counts out.)"""
    config = make_config({"decision": {"local": False, "budget_ms": 100, "retry_after_ms": 10}})
    engine = Engine(config, FixedClock(NOW))
    day = f"{NOW:%Y%m%d}"

    def counted() -> int:
        return sum(int(rdb.hget(k, "total") or 0) for k in rdb.keys(f"{{sb}}:count:*:day:{day}"))

    try:
        await started(engine)
        assert engine.channel.redis_offset_s is not None  # the deadline is in Redis's time
        await engine.leases.stop()  # no round of its own from here (aclose stops it no more)
        with redis_server.stopped():
            decisions = await asyncio.gather(*(engine.decide(gmail(i), now=NOW) for i in range(20)))
        assert all(d.degraded for d in decisions)
        # continued, Redis runs the 20 queued calls, each past its deadline
        await until(lambda: not engine.channel._pending, "Redis to answer the queued calls", seconds=10.0)
        assert counted() == 0
        # the degraded decisions' own counts are written by the next count round
        await engine.leases.round(last=True)
        assert counted() == 20
    finally:
        await engine.aclose()


async def _stall_the_loop_once_sent(engine: Engine, count: int, seconds: float) -> None:
    """Block this event loop once ``count`` requests are written to Redis: Redis answers
    them meanwhile, and the decisions' budgets run out before the replies are read."""
    channel = engine.channel
    while len(channel._pending) < count or channel._outbox:
        await asyncio.sleep(0)
    time.sleep(seconds)  # blocking on purpose: the host was busy


async def _until_redis_decides(engine: Engine) -> None:
    """Until a decision is Redis's, not degraded: a 50 ms budget can run out on a loaded
    host however healthy Redis is, so one degraded decision here proves nothing."""
    deadline = time.monotonic() + READY_S
    while (await engine.decide(gmail(), now=NOW)).degraded:
        assert time.monotonic() < deadline, f"no decision by Redis within {READY_S:.0f}s"
        await asyncio.sleep(0.01)


async def test_a_late_reply_fails_only_its_own_request_and_gives_back_what_it_counted(make_config, rdb):
    """Replies that reach a busy daemon after the budget: those decisions degrade, the
    connection and the breaker stay as they were, and what select.lua counted for them
    is given back, so Redis counts exactly where the mail went."""
    engine = Engine(
        make_config(
            {
                "decision": {"local": False, "budget_ms": 200},
                "endpoints": {"out2": {"rate_caps": {"google": 1000}}},
            }
        ),
        FixedClock(NOW),
    )
    n = 30
    try:
        await started(engine)
        engine.channel.redis_offset_s = None  # no script deadline: every call counts
        writer = engine.channel._writer
        late_before = metrics.LATE_REPLIES._value.get()
        stall = asyncio.create_task(_stall_the_loop_once_sent(engine, n, 0.5))
        decisions = await asyncio.gather(*(engine.decide(gmail(i), now=NOW) for i in range(n)))
        await stall
        assert all(d.degraded and d.reason.startswith("degraded (timeout)") for d in decisions), decisions[0]
        await until(
            lambda: metrics.LATE_REPLIES._value.get() - late_before == n, "the late replies", seconds=10.0
        )
        # the same connection, and Redis still asked: the next decision is not degraded
        after = await engine.decide(gmail(n), now=NOW)
        assert not after.degraded and engine.channel._writer is writer
        routed = Counter(d.endpoint for d in [*decisions, after])

        def counted() -> dict[str, int]:
            day = f"{NOW:%Y%m%d}"
            return {ep: int(rdb.hget(f"{{sb}}:count:{ep}:day:{day}", "total") or 0) for ep in routed}

        await until(
            lambda: counted() == dict(routed), f"day counters {dict(routed)}, not {counted()}", seconds=10.0
        )
        assert window_count(rdb.hgetall("{sb}:ratesec:out2:google"), NOW.timestamp()) == routed["out2"]
    finally:
        await engine.aclose()


async def test_a_decision_made_after_its_client_left_is_given_back(make_config, rdb):
    """A decision that waited on Redis while its client gave up (Exim's readsocket
    timeout): the mail leaves by the MTA default, so the route is not answered and what
    it counted goes back, rate entries too. A client that still waits gets its route."""
    engine = Engine(
        make_config(
            {
                "decision": {"local": False},
                "endpoints": {"out2": {"rate_caps": {"google": 1000}}},
            }
        ),
        FixedClock(NOW),
    )
    n = 40
    try:
        await started(engine)
        asked: list[int] = []

        def waited(i: int):  # the odd messages' clients gave up
            def why() -> str:
                asked.append(i)
                return "it gave up" if i % 2 else ""

            return why

        decisions = [await engine.decide(gmail(i), now=NOW, waited=waited(i)) for i in range(n)]
        assert sorted(asked) == list(range(n))  # every one was routed, then asked
        gave_up = [d for i, d in enumerate(decisions) if i % 2]
        assert all(d.outcome == "default" and d.reason.endswith("it gave up") for d in gave_up)
        routed = Counter(d.endpoint for i, d in enumerate(decisions) if i % 2 == 0)
        assert sum(routed.values()) == n // 2 and None not in routed

        def counted() -> dict[str, int]:
            day = f"{NOW:%Y%m%d}"
            return {
                ep: int(rdb.hget(f"{{sb}}:count:{ep}:day:{day}", "total") or 0)
                for ep in ("out1", "out2", "out3")
            }

        want = {ep: routed[ep] for ep in ("out1", "out2", "out3")}
        await until(lambda: counted() == want, f"day counters {want}", seconds=10.0)
        assert window_count(rdb.hgetall("{sb}:ratesec:out2:google"), NOW.timestamp()) == routed["out2"]
    finally:
        await engine.aclose()


async def test_a_local_decision_whose_client_left_meanwhile_is_given_back(make_config, rdb):
    """The policy daemon checks a request's age before deciding. A daemon stopped (SIGSTOP,
    a starved host) between that check and the decision resumes to a client that left:
    a hog-loop run counted a warming endpoint's unit for an Exim message that had left
    by the default interface 13 s before. A local decision now asks once it is counted,
    and gives back what it counted, leased units and plain counts alike."""
    day = f"{NOW:%Y%m%d}"
    config = make_config(
        {"endpoints": {"out3": {"warmup": {"start": NOW.date().isoformat(), "schedule": [5000]}}}}
    )
    engine = Engine(config, FixedClock(NOW))
    try:
        await started(engine)
        await engine.settle()
        routed: Counter[str] = Counter()
        local_gone = 0
        for i in range(400):

            def waited(i: int = i) -> str:  # every third message's client gave up
                return "it gave up" if i % 3 == 0 else ""

            result = engine.decide_now(gmail(i), NOW, waited=waited)
            if isinstance(result, Pending):
                result = await engine.settle_pending(result, waited)
                await asyncio.sleep(0.001)  # let the lease rounds run
            elif i % 3 == 0:
                local_gone += 1
            if i % 3 == 0:
                assert result.outcome == "default" and result.reason.endswith("it gave up"), result
            else:
                assert result.outcome == "route" and result.endpoint is not None, result
                routed[result.endpoint] += 1
        assert local_gone > 50  # most were decided locally, out of leases and plain counts
    finally:
        await engine.aclose()  # the leases' unspent units go back
    counted = {
        ep: int(rdb.hget(f"{{sb}}:count:{ep}:day:{day}", "total") or 0) for ep in ("out1", "out2", "out3")
    }
    assert counted == {ep: routed[ep] for ep in ("out1", "out2", "out3")}, (counted, routed)
    assert routed["out3"] > 0


def test_a_failing_still_waited_check_answers_the_route_it_counted(make_config, caplog):
    """The re-check runs after a local decision spent its units: if the check itself
    fails (a bug), the route stands and stays counted, rather than the message being
    decided a second time by select.lua."""
    from smtp_balancer.decision.draw import Draw
    from smtp_balancer.decision.planner import Planner
    from smtp_balancer.decision.quota import QuotaBook
    from smtp_balancer.engine.giveback import unless_gone

    def broken() -> str:
        raise OSError("TCP_INFO unavailable")

    planner = Planner(make_config(), clock=FixedClock(NOW))
    draw = planner.prepare(gmail(), NOW)
    assert isinstance(draw, Draw)
    decision = Decision(
        outcome="route", reason="weight 1 in pool main", endpoint="out1", pool="main", rule="all"
    )
    with caplog.at_level("ERROR", logger="smtp_balancer.engine"):
        assert unless_gone(QuotaBook(planner.keys, FixedClock(NOW)), draw, decision, broken) is decision
    assert any("still waits failed" in r.getMessage() for r in caplog.records)


async def test_shadow_mode_decides_under_the_candidate_too_and_changes_nothing(make_config, rdb, caplog):
    """Shadow mode: each live decision carries the candidate's for the same message; the
    live shares are the live weights', the shadow's the candidate's; the candidate counts
    nothing in Redis and a suspension in the live state holds for it too."""
    candidate = make_config({"pools": {"main": {"endpoints": [{"endpoint": "out1", "weight": 1}]}}})
    engine = Engine(make_config().with_shadow(candidate))
    agreed = {
        a: metrics.SHADOW_DECISIONS.labels("all", "main", a)._value.get() for a in ("same", "different")
    }
    try:
        await engine.settle()
        live: Counter[str] = Counter()
        shadow: Counter[str] = Counter()
        same = 0
        for i in range(4000):
            d = await engine.decide(gmail(i), now=NOW)
            assert d.shadow is not None and d.shadow.rule == "all"
            live[d.endpoint or d.outcome] += 1
            shadow[d.shadow.endpoint or d.shadow.outcome] += 1
            same += d.endpoint == d.shadow.endpoint
        assert_shares(live, {"out1": 1, "out2": 2, "out3": 1})
        assert shadow == {"out1": 4000}
        assert same == live["out1"]  # the same draw: out1 under both exactly when live drew it
        now = {a: metrics.SHADOW_DECISIONS.labels("all", "main", a)._value.get() for a in agreed}
        assert (now["same"] - agreed["same"], now["different"] - agreed["different"]) == (same, 4000 - same)
        # a suspension in the live state holds for the candidate: its one endpoint is out
        rdb.set("{sb}:suspend:out1:google", "test", ex=60)
        await engine.settle()
        d = await engine.decide(gmail(5000), now=NOW)
        assert d.endpoint != "out1" and d.shadow is not None and d.shadow.outcome == "default"
    finally:
        await engine.aclose()
    day = NOW.strftime("%Y%m%d")
    counted = sum(
        int(rdb.hget(f"{{sb}}:count:{ep}:day:{day}", "total") or 0) for ep in ("out1", "out2", "out3")
    )
    assert counted == 4001  # the live decisions, once each; nothing for the shadow's


async def test_a_broken_shadow_candidate_leaves_live_routing_alone(make_config, caplog):
    config = make_config({"shadow": {"config": "/etc/x.yaml"}})
    config.with_shadow(None, "shadow.config /etc/x.yaml: 1 error(s)\n  pools: bad")
    errors = metrics.SHADOW_CONFIG_ERRORS._value.get()
    with caplog.at_level("ERROR", logger="smtp_balancer.engine"):
        engine = Engine(config)
    try:
        d = await engine.decide(gmail(), now=NOW)
        assert d.outcome == "route" and d.shadow is None
    finally:
        await engine.aclose()
    assert metrics.SHADOW_CONFIG_ERRORS._value.get() == errors + 1
    assert "shadow mode is off, live routing goes on" in caplog.text and "pools: bad" in caplog.text
