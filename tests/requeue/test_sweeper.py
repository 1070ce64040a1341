"""One sweep against a real Redis, with the Postfix side played in process (the real
Postfix runs in integration/test_requeue_postfix.py): what moves, what it costs."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from integration.fixtures import arm_record_of
from smtp_balancer.clock import FixedClock
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.requeue.daemon import remote_decisions
from smtp_balancer.requeue.sweeper import Sweeper
from tests.ready import started
from tests.requeue.test_queuefile import record

NOW = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
DAY = "{sb}:count:%s:day:20261202"
GOOGLE = "rule google-rate-limited: out2 deferred by google: 421"


def queued(sender: str, route: str, *rcpts: str, age_s: float = 60) -> bytes:
    """A queue file as Postfix writes it: arrival stamped by the system clock (the
    sweeper maps it onto its own clock), ``age_s`` seconds ago."""
    parts = [record("T", f"{int(time.time() - age_s)} 0"), record("S", sender)]
    parts += [record("R", r) for r in rcpts]
    parts += [record("M", ""), record("N", "Subject: x"), record("N", ""), record("X", "")]
    return b"".join([*parts, record("L", route), record("E", "")])


class FakeQueue:
    """The deferred queue as files in tmp_path; ``active`` ids are refused as postsuper would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.active: set[str] = set()
        self.requeued: list[str] = []
        self.kicks = 0
        self.services = {"out1", "out2", "out3", "smtp"}
        self.problems: list[str] = []  # what wiring() reports: Postfix wired as needed
        self.tables: list[str] = []

    def add(self, queue_id: str, data: bytes) -> None:
        (self.root / queue_id).write_bytes(data)

    def deferred(self) -> Iterator[tuple[str, Path, tuple[int, int, int]]]:
        for path in sorted(self.root.iterdir()):
            st = path.stat()
            yield path.name, path, (st.st_ino, st.st_mtime_ns, st.st_size)

    def transports(self) -> set[str]:
        return self.services

    def wiring(self, table: str) -> list[str]:
        self.tables.append(table)
        return self.problems

    def requeue(self, queue_ids: Iterable[str]) -> set[str]:
        done = {q for q in queue_ids if q not in self.active}
        for q in done:
            (self.root / q).unlink()
        self.requeued += sorted(done)
        return done

    def kick_pickup(self) -> None:
        self.kicks += 1


@pytest.fixture
async def sweep_env(make_config, rdb, tmp_path: Path):
    config = make_config({"requeue": {"enabled": True}})
    engine = Engine(remote_decisions(config), FixedClock(NOW))
    await started(engine)
    queue = FakeQueue(tmp_path / "deferred")
    queue.root.mkdir()
    sweeper = Sweeper(config, engine, rdb, queue, "t1", FixedClock(NOW))  # type: ignore[arg-type]
    yield sweeper, queue
    await engine.aclose()


async def test_throttled_google_mail_moves_and_counts_once(sweep_env, rdb) -> None:
    sweeper, queue = sweep_env
    rdb.set("{sb}:suspend:out2:google", GOOGLE, ex=600)
    rdb.hset(DAY % "out2", mapping={"total": 10, "google": 6, "yahoo": 4})
    queue.add("Q1", queued("a@shop.test", "out2:", "g1@gmail.com", "y1@yahoo.com"))
    queue.add("Q2", queued("a@shop.test", "out2:", "y2@yahoo.com"))  # stays: yahoo may use out2
    queue.add("Q3", queued("a@shop.test", "out1:", "g3@gmail.com"))  # out1 is fine
    queue.add("Q4", queued("a@shop.test", "smtp-amavis:[127.0.0.1]:10024", "g4@gmail.com"))  # not ours
    result = await sweeper.sweep(limit=100)
    assert queue.requeued == ["Q1"] and queue.kicks == 1
    assert result.bound == {"out1": 1, "out2": 2}
    new = rdb.hget("{sb}:pin:g1@gmail.com", "endpoint")
    assert new in ("out1", "out3")
    assert rdb.hget("{sb}:pin:y1@yahoo.com", "endpoint") == "out2"  # its provider stays on out2
    assert rdb.hget(DAY % new, "total") == "1"
    assert rdb.hgetall(DAY % "out2") == {"total": "9", "google": "5", "yahoo": "4"}  # given back
    assert rdb.hgetall("{sb}:queued:t1") == {"out1": "1", "out2": "2", "out3": "0"}


async def test_nothing_moves_while_qmgr_would_not_ask_the_table(sweep_env, rdb, caplog) -> None:
    sweeper, queue = sweep_env
    rdb.set("{sb}:suspend:out2:google", GOOGLE, ex=600)
    rdb.hset(DAY % "out2", mapping={"total": 1, "google": 1})
    queue.add("Q1", queued("a@shop.test", "out2:", "g1@gmail.com"))
    queue.problems = ["qmgr resolves through the 'rewrite-nomap' service, whose transport_maps ..."]
    with caplog.at_level("ERROR", logger="smtp_balancer.requeue"):
        result = await sweeper.sweep(limit=100)
        sweeper.notes.flush()
    assert queue.requeued == [] and result.skipped == 1 and queue.kicks == 0
    assert queue.tables == [f"socketmap:inet:{sweeper.config.requeue.table_listen}:route"]
    assert not rdb.exists("{sb}:pin:g1@gmail.com")  # nothing decided, nothing counted
    assert rdb.hget(DAY % "out2", "total") == "1"
    assert any("refusing to move mail: qmgr resolves through" in r.getMessage() for r in caplog.records)
    assert REGISTRY.get_sample_value("smtp_balancer_requeue_postfix_wired") == 0
    queue.problems = []  # the operator ran the postconf -P step
    await sweeper.sweep(limit=100)
    assert queue.requeued == ["Q1"]
    assert REGISTRY.get_sample_value("smtp_balancer_requeue_postfix_wired") == 1


async def test_a_message_that_went_active_is_left_alone(sweep_env, rdb) -> None:
    sweeper, queue = sweep_env
    rdb.set("{sb}:suspend:out2:google", GOOGLE, ex=600)
    rdb.hset(DAY % "out2", mapping={"total": 3, "google": 3})
    queue.add("Q1", queued("a@shop.test", "out2:", "g1@gmail.com"))
    queue.active.add("Q1")
    result = await sweeper.sweep(limit=100)
    assert queue.requeued == [] and queue.kicks == 0 and result.skipped == 1
    assert rdb.hget(DAY % "out2", "total") == "3"  # nothing given back for mail that did not move


async def test_plain_suspension_keeps_mail_and_requests_move_it(sweep_env, rdb) -> None:
    sweeper, queue = sweep_env
    rdb.set("{sb}:suspend:out2:google", "suspended by operator", ex=600)
    queue.add("Q1", queued("a@shop.test", "out2:", "g1@gmail.com"))
    await sweeper.sweep(limit=100)
    assert queue.requeued == []
    rdb.set("{sb}:requeue:out2:google", "suspended by cli", ex=600)
    await sweeper.sweep(limit=100)
    assert queue.requeued == ["Q1"]


async def test_an_unplumbed_route_that_redis_calls_eligible_costs_nothing(sweep_env, rdb) -> None:
    sweeper, queue = sweep_env
    queue.services = {"out1", "out3"}  # out2 missing from master.cf
    rdb.hset("{sb}:pool:main:weights", mapping={"out1": 0, "out3": 0})  # only out2 can be picked
    queue.add("Q1", queued("a@shop.test", "out2:", "g1@gmail.com"))
    result = await sweeper.sweep(limit=100)
    assert queue.requeued == [] and result.skipped == 1
    assert int(rdb.hget(DAY % "out2", "total") or 0) == 0  # counted, then given back


async def test_the_limit_moves_the_oldest_first(sweep_env, rdb) -> None:
    sweeper, queue = sweep_env
    rdb.hset("{sb}:endpoint:out2:state", mapping={"state": "drained", "requeue": 1})
    for i in range(5):
        queue.add(f"Q{i}", queued("a@shop.test", "out2:", f"u{i}@example.test", age_s=600 + i))
    await sweeper.sweep(limit=2)
    assert queue.requeued == ["Q3", "Q4"]


async def test_a_failing_sweep_is_logged_and_the_daemon_sweeps_on(make_config, monkeypatch, caplog) -> None:
    """A bug in a sweep (here: the sweep raises) is logged and counted; serve() goes on
    to the next sweep instead of ending the daemon."""
    import asyncio
    import logging

    from smtp_balancer.observe.ratelimit import LogLimiter
    from smtp_balancer.requeue import daemon, metrics

    calls = []

    class Boom:
        def __init__(self, *args, **kwargs) -> None:
            self.notes = LogLimiter(daemon.log)

        async def wired(self) -> bool:
            return True

        async def sweep(self, limit: int):
            calls.append(limit)
            if len(calls) == 2:
                raise asyncio.CancelledError  # ends serve() after the second sweep
            raise RuntimeError("a bug")

    config = make_config({"requeue": {"enabled": True, "interval": 1, "metrics_listen": ""}})
    monkeypatch.setattr(daemon, "PostfixQueue", lambda path: object())
    monkeypatch.setattr(daemon, "Sweeper", Boom)
    before = metrics.SWEEPS.labels("error")._value.get()
    caplog.set_level(logging.ERROR, logger="smtp_balancer.requeue")
    with pytest.raises(asyncio.CancelledError):
        await daemon.serve(config)
    assert len(calls) == 2
    assert metrics.SWEEPS.labels("error")._value.get() == before + 1
    assert any("sweep failed" in r.getMessage() for r in caplog.records)


async def test_a_moved_message_keeps_the_arm_its_first_decision_recorded(
    experiment_engine, rdb, tmp_path: Path
) -> None:
    """A CI run under load found a moved message's arm record rewritten after the feedback
    daemon had copied it to the new queue id: the sweep's decision recorded the arm again,
    with its own time, and counted the message twice in the arm's decisions."""
    config, engine = experiment_engine
    queue = FakeQueue(tmp_path / "deferred")
    queue.root.mkdir()
    sweeper = Sweeper(config, engine, rdb, queue, "t1", FixedClock(NOW))  # type: ignore[arg-type]
    rdb.set("{sb}:suspend:out2:google", GOOGLE, ex=600)
    rdb.set("{sb}:arm:Q1", "ab a 1700000000")  # its first decision's record
    queue.add("Q1", queued("a@shop.test", "out2:", "g1@gmail.com"))
    await sweeper.sweep(limit=100)
    decision = await engine.decide(Facts(recipients=("g2@gmail.com",), queue_id="Q2"))
    await engine.leases.round()  # the records and counts the decisions noted
    assert queue.requeued == ["Q1"] and rdb.hget("{sb}:pin:g1@gmail.com", "endpoint") in ("out1", "out3")
    assert arm_record_of(rdb, "Q1", NOW.timestamp()) == "ab a 1700000000"
    # a first decision records its arm (the experiment is in force): only that one counts
    assert (
        decision.arm is not None
        and arm_record_of(rdb, "Q2", NOW.timestamp()) == f"ab {decision.arm} {int(NOW.timestamp())}"
    )
    decided = {arm: rdb.hget(f"{{sb}}:expstats:ab:{arm}", "decided") for arm in ("a", "b")}
    assert decided == {"a": None, "b": None} | {decision.arm: "1"}, decided
