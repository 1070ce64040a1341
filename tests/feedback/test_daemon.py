"""The feedback daemon's loop: complaint rules, arm outcomes, lost batches and the rest of its rounds."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from integration.acl_lines import ACL, password_of
from integration.configs import even_experiment
from integration.fixtures import arm_record_of
from integration.waits import wait_until
from smtp_balancer.clock import utc_now
from smtp_balancer.feedback import metrics
from smtp_balancer.feedback.daemon import FeedbackDaemon, InstanceTaken
from smtp_balancer.feedback.instance import fields_of
from smtp_balancer.state.feedback_store import OwnerChanged


def test_complaint_rules_run_at_most_once_a_minute_over_every_pair_seen(make_config, rdb, tmp_path):
    rule = {
        "name": "complaints",
        "measure": "complained",
        "above_percent": 1,
        "recover_below_percent": 0.5,
        "window": "1d",
    }
    daemon = FeedbackDaemon(
        make_config({"feedback": {"rate_rules": [rule], "log_file": str(tmp_path / "mail.log")}})
    )
    try:
        assert daemon.per_batch_rules == [] and [r.name for r in daemon.complaint_rules] == ["complaints"]
        first = daemon.complaint_rates({("out1", "yahoo")})
        assert [(r.endpoint, r.provider, r.outcome) for r in first] == [("out1", "yahoo", "quiet")]
        # within the minute: nothing runs, the pairs wait
        assert daemon.complaint_rates({("out2", "yahoo")}) == []
        assert daemon.complaint_rates({("out3", "microsoft")}) == []
        daemon._complaints_due = 0.0  # the minute is over
        later = daemon.complaint_rates(set())
        assert sorted((r.endpoint, r.provider) for r in later) == [("out2", "yahoo"), ("out3", "microsoft")]
    finally:
        daemon.r.close()


def delivery(
    qid: str,
    ep: str,
    dsn: str = "2.0.0",
    status: str = "sent",
    reply: str = "250 ok",
    rcpt: str = "u@gmail.com",
    at: str = "10:30:01",
) -> str:
    """A Postfix delivery line through endpoint ``ep`` (connection and transmission 0.41 s)."""
    return (
        f"Nov 24 {at} mta postfix/{ep}/smtp[9536]: {qid}: to=<{rcpt}>, "
        "relay=gmail-smtp-in.l.google.com[142.250.1.27]:25, delay=0.42, delays=0.01/0/0.2/0.21, "
        f"dsn={dsn}, status={status} ({reply})\n"
    )


def test_the_loop_runs_adaptive_factors_and_managed_warmup_days(make_config, rdb, tmp_path):
    log_file = tmp_path / "mail.log"
    busy = {"dsn": "4.3.2", "status": "deferred", "reply": "host said: 451 4.3.2 busy"}
    log_file.write_text(
        "".join(delivery(f"Q{i:04X}", "out2", rcpt=f"u{i}@gmail.com", **busy) for i in range(30))
    )
    today = utc_now().date().isoformat()
    config = make_config(
        {
            "pools": {"main": {"adaptive": True}},
            "adaptive": {"min_attempts": 10},
            # starts today by the daemon's own clock (the conftest's SMTP_BALANCER_TEST_TIME)
            "endpoints": {"out3": {"warmup": {"start": today, "schedule": [50], "advance": "sending_days"}}},
            "feedback": {"log_file": str(log_file), "start_at": "beginning"},
        }
    )
    daemon = FeedbackDaemon(config)
    try:
        daemon.follower = daemon.open_log()
        assert daemon.step() == 30  # the batch is noted for the next round
        daemon.step()  # idle: the round runs anyway
        assert rdb.get("{sb}:adaptive:out2:google") == "0.1 deferred 100% of 30 in 5m"
        assert rdb.hget("{sb}:warmup:out3", "step") == "1"
    finally:
        daemon.follower.close()
        daemon.r.close()


def junk_records() -> float:
    return REGISTRY.get_sample_value("smtp_balancer_state_junk_total", {"kind": "arm_record"}) or 0


def one_step(config) -> int:
    """One step of a feedback daemon over its log: the lines it read."""
    daemon = FeedbackDaemon(config)
    try:
        daemon.follower = daemon.open_log()
        return daemon.step()
    finally:
        daemon.follower.close()
        daemon.r.close()


def test_outcomes_are_attributed_to_the_arm_recorded_for_their_queue_id(make_config, rdb, tmp_path):
    log_file = tmp_path / "mail.log"
    deferred = {"dsn": "4.7.28", "status": "deferred", "reply": "host said: 421 4.7.28 rate limited"}
    log_file.write_text(
        delivery("AAA1", "out1")
        + delivery("AAA2", "out1", **deferred)
        + delivery("AAA2", "out2")  # its retry, delivered
        + delivery("BBB1", "out3")
        + delivery("CCC1", "out3")  # its record names no configured arm: junk
        + delivery("DDD1", "out3")  # its record is unreadable: junk
    )
    experiment = even_experiment("ab", "all", {"a": "main", "b": "main"})
    config = make_config(
        {"experiments": [experiment], "feedback": {"log_file": str(log_file), "start_at": "beginning"}}
    )
    rdb.set("{sb}:arm:AAA1", "ab a")
    rdb.set("{sb}:arm:AAA2", "ab a")
    rdb.set("{sb}:arm:BBB1", "ab b")
    rdb.set("{sb}:arm:CCC1", "zz top")  # hand-edited: no such experiment, so no key or label for it
    rdb.set("{sb}:arm:DDD1", "ab b yesterday")  # hand-edited: unreadable
    junk = junk_records()
    assert one_step(config) == 6
    assert rdb.hgetall("{sb}:expstats:ab:a") == {
        "sent": "2",
        "deferred": "1",
        "class:rate_limited": "1",
        "lat:0.5": "2",  # connection and transmission took 0.41 s
    }
    assert rdb.hgetall("{sb}:expstats:ab:b") == {"sent": "1", "lat:0.5": "1"}
    assert rdb.keys("{sb}:expstats:zz:*") == []
    assert junk_records() == junk + 2


def test_outcomes_of_messages_decided_before_a_reset_are_not_counted(make_config, rdb, tmp_path):
    log_file = tmp_path / "mail.log"
    log_file.write_text(delivery("OLD1", "out1") + delivery("NEW1", "out1") + delivery("TWO1", "out2"))
    experiment = even_experiment("ab", "all", {"a": "main", "b": "main"})
    config = make_config(
        {"experiments": [experiment], "feedback": {"log_file": str(log_file), "start_at": "beginning"}}
    )
    rdb.hset("{sb}:experiment:ab", mapping={"state": "running", "since": "1764000000"})
    rdb.set("{sb}:arm:OLD1", "ab a 1763999999")  # the earlier run's message, delivered late
    rdb.set("{sb}:arm:NEW1", "ab a 1764000000")
    rdb.set("{sb}:arm:TWO1", "ab b")  # an earlier version's record: no time, it counts
    assert one_step(config) == 3
    assert rdb.hget("{sb}:expstats:ab:a", "sent") == "1"
    assert rdb.hget("{sb}:expstats:ab:b", "sent") == "1"


def test_a_hand_edited_run_start_is_ignored_and_counted(make_config, rdb, tmp_path):
    log_file = tmp_path / "mail.log"
    log_file.write_text(delivery("OLD1", "out1"))
    experiment = even_experiment("ab", "all", {"a": "main", "b": "main"})
    config = make_config(
        {"experiments": [experiment], "feedback": {"log_file": str(log_file), "start_at": "beginning"}}
    )
    rdb.hset("{sb}:experiment:ab", mapping={"state": "running", "since": "tomorrow"})
    rdb.set("{sb}:arm:OLD1", "ab a 1")
    before = REGISTRY.get_sample_value("smtp_balancer_state_junk_total", {"kind": "experiment_since"}) or 0
    assert one_step(config) == 1
    assert rdb.hget("{sb}:expstats:ab:a", "sent") == "1"  # as before any reset
    after = REGISTRY.get_sample_value("smtp_balancer_state_junk_total", {"kind": "experiment_since"})
    assert after == before + 1


def test_a_requeued_message_keeps_its_arm_under_its_new_queue_id(make_config, rdb, tmp_path):
    log_file = tmp_path / "mail.log"
    slow = {"dsn": "4.7.28", "status": "deferred", "reply": "host said: 421 slow down"}
    log_file.write_text(
        delivery("AAA1", "out1", **slow)
        # the requeue daemon moved it: postsuper -r, then pickup gives it a new queue id
        + "Nov 24 10:31:00 mta postfix/pickup[771]: DDD9: uid=0 from=<news@shop.test> orig_id=AAA1\n"
        + delivery("DDD9", "out2", reply="host said: 250 ok", at="10:31:01")
        + "Nov 24 10:31:00 mta postfix/pickup[771]: EEE9: uid=0 from=<news@shop.test> orig_id=NOREC1\n"
        # moved again within the same batch: DDD9's record is only being written
        + "Nov 24 10:32:00 mta postfix/pickup[771]: FFF9: uid=0 from=<news@shop.test> orig_id=DDD9\n"
    )
    config = make_config(
        {
            "experiments": [even_experiment("ab", "all", {"a": "main", "b": "main"})],
            "feedback": {"log_file": str(log_file), "start_at": "beginning"},
        }
    )
    rdb.set("{sb}:arm:AAA1", "ab a 1764000000")
    assert one_step(config) == 5
    # the same record, its decision time too
    assert arm_record_of(rdb, "DDD9") == "ab a 1764000000"
    assert arm_record_of(rdb, "EEE9") is None  # its old id was in no experiment
    assert arm_record_of(rdb, "FFF9") == "ab a 1764000000"
    stats = rdb.hgetall("{sb}:expstats:ab:a")
    assert (stats["deferred"], stats["sent"]) == ("1", "1")


def test_a_message_moved_before_its_record_was_written_inherits_it_while_the_log_is_quiet(
    make_config, rdb, tmp_path
):
    """The requeue daemon moved a message 0.3 s after its decision, before the decider's
    batch wrote the old id's record; no more mail came after: the quiet daemon asks
    again and writes the new id's record, and its delivery counts in the arm."""
    from datetime import UTC, datetime

    from smtp_balancer.clock import FixedClock
    from smtp_balancer.feedback.arms import RETRY_S

    log_file = tmp_path / "mail.log"
    log_file.write_text(
        "Nov 24 10:31:00 mta postfix/pickup[771]: DDD9: uid=0 from=<news@shop.test> orig_id=AAA1\n"
        + delivery("DDD9", "out2", reply="host said: 250 ok", at="10:31:01")
    )
    config = make_config(
        {
            "experiments": [even_experiment("ab", "all", {"a": "main", "b": "main"})],
            "feedback": {"log_file": str(log_file), "start_at": "beginning"},
        }
    )
    daemon = FeedbackDaemon(config)
    assert daemon.arms is not None
    clock = daemon.arms.clock = daemon.store.clock = FixedClock(datetime(2026, 11, 24, 10, 31, tzinfo=UTC))
    daemon.follower = daemon.open_log()
    try:
        assert daemon.step() == 2  # AAA1 has no record yet
        assert arm_record_of(rdb, "DDD9", clock.wall()) is None
        rdb.set("{sb}:arm:AAA1", "ab a 1764000000")  # the decider's batch, late (an earlier release's form)
        assert daemon.step() == 0  # idle, and not a second yet: not asked again
        assert arm_record_of(rdb, "DDD9", clock.wall()) is None
        clock.advance(RETRY_S)
        assert daemon.step() == 0
        assert arm_record_of(rdb, "DDD9", clock.wall()) == "ab a 1764000000"
        assert rdb.hget("{sb}:expstats:ab:a", "sent") == "1"  # its delivery, pending, counts now
    finally:
        daemon.follower.close()
        daemon.r.close()


@pytest.mark.parametrize("ran", [True, False], ids=["reply-lost", "not-run"])
@pytest.mark.parametrize(
    "error",
    # how redis-py reports a connection lost during a watched EXEC: as WatchError
    [redis.ConnectionError("Connection closed by server."), OwnerChanged()],
    ids=["connection", "while-watched"],
)
def test_a_batch_retried_after_an_error_counts_once(
    make_config, rdb, tmp_path, caplog, ran: bool, error: Exception
):
    # a failover can lose the reply of a transaction the old master ran and passed on to
    # its replica: the retry must not apply it again; one that never ran is applied
    log_file = tmp_path / "mail.log"
    log_file.write_text(delivery("AAA1", "out1") + delivery("AAA2", "out1"))
    config = make_config({"feedback": {"log_file": str(log_file), "start_at": "beginning"}})
    daemon = FeedbackDaemon(config)
    real_apply = daemon.store.apply
    calls: list[int] = []

    def failing_once(batch, position, watched):
        calls.append(1)
        if len(calls) == 1:
            if ran:
                real_apply(batch, position, watched)
            raise error
        return real_apply(batch, position, watched)

    daemon.store.apply = failing_once  # type: ignore[method-assign]
    try:
        daemon.follower = daemon.open_log()
        assert daemon.step() == 2
    finally:
        daemon.follower.close()
        daemon.r.close()
    sent = sum(int(rdb.hget(k, "sent") or 0) for k in rdb.scan_iter("{sb}:outcomes:*"))
    assert sent == 2
    assert len(calls) == (1 if ran else 2)
    skipped = [r.getMessage() for r in caplog.records if "not applied again" in r.getMessage()]
    assert len(skipped) == (1 if ran else 0), skipped


def test_a_retried_batch_of_a_rotated_file_counts_once(make_config, rdb, tmp_path):
    # a rotated file's batches do not move the saved position: the batch's own mark,
    # written in its transaction, still tells that a lost reply's transaction ran
    log_file = tmp_path / "mail.log"
    log_file.write_text(delivery("AAA1", "out1"))
    config = make_config({"feedback": {"log_file": str(log_file), "start_at": "beginning", "batch_lines": 1}})
    first = FeedbackDaemon(config)
    first.follower = first.open_log()
    try:
        assert first.step() == 1
    finally:
        first.follower.close()
        first.r.close()
    # rotated while the daemon was down, with lines it had not read yet
    with log_file.open("a") as f:
        f.write(delivery("AAA2", "out1") + delivery("AAA3", "out1"))
    log_file.rename(tmp_path / "mail.log.1")
    log_file.write_text(delivery("BBB1", "out1"))

    daemon = FeedbackDaemon(config)
    real_apply = daemon.store.apply
    calls: list[bool] = []

    def reply_lost_once(batch, position, watched):
        calls.append(daemon.follower.reading_rotated)
        results = real_apply(batch, position, watched)
        if len(calls) == 1:
            raise redis.ConnectionError("Connection closed by server.")
        return results

    daemon.store.apply = reply_lost_once  # type: ignore[method-assign]
    daemon.follower = daemon.open_log()
    try:
        while daemon.step():
            pass
    finally:
        daemon.follower.close()
        daemon.r.close()
    assert calls[0] is True  # the lost reply was a rotated file's batch
    sent = sum(int(rdb.hget(k, "sent") or 0) for k in rdb.scan_iter("{sb}:outcomes:*"))
    assert sent == 4
    assert len(calls) == 3  # AAA2 once (its retry skipped), AAA3, BBB1


def failed_over(make_config, rdb, log_file: Path) -> FeedbackDaemon:
    """A daemon whose Redis failed over after it applied two batches (AAA1, AAA2) to the old
    master, which died before its replica had the second: the new master has the first
    batch's position and counts. The daemon's follower is open; the caller closes it."""
    log_file.write_text(delivery("AAA1", "out1") + delivery("AAA2", "out1"))
    config = make_config({"feedback": {"log_file": str(log_file), "start_at": "beginning", "batch_lines": 1}})
    daemon = FeedbackDaemon(config)
    daemon.follower = daemon.open_log()
    assert daemon.step() == 1
    replica = {k: rdb.dump(k) for k in rdb.scan_iter("{sb}:*")}  # what the replica had
    assert daemon.step() == 1 and sent_count(rdb) == 2
    rdb.flushall()  # the failover: the new master is the replica as it was
    for key, value in replica.items():
        rdb.restore(key, 0, value)
    assert sent_count(rdb) == 1
    return daemon


def sent_count(rdb) -> int:
    return sum(int(rdb.hget(k, "sent") or 0) for k in rdb.scan_iter("{sb}:outcomes:*"))


def reread_line(caplog) -> str:
    (line,) = [r.getMessage() for r in caplog.records if "applied log batches" in r.getMessage()]
    return line


@pytest.mark.parametrize("batch_fails", [True, False], ids=["the batch fails", "another command met it"])
def test_batches_a_failed_over_redis_lost_are_read_again_and_counted_once(
    make_config, rdb, tmp_path, caplog, batch_fails
):
    # the next batch fails (the connection to the old master), or meets no error because
    # the warm-up, adaptive or arm rounds reconnected the client first: either way the
    # daemon finds the position behind its own, goes back, and counts the lost batch's
    # outcomes on the new master, exactly once
    log_file = tmp_path / "mail.log"
    daemon = failed_over(make_config, rdb, log_file)
    try:
        with log_file.open("a") as f:
            f.write(delivery("AAA3", "out1"))
        real_apply, calls = daemon.store.apply, []

        def fails_once(batch, position, watched):  # the old master's connection, closed by its death
            calls.append(1)
            if len(calls) == 1 and batch_fails:
                raise redis.ConnectionError("Connection closed by server.")
            return real_apply(batch, position, watched)

        daemon.store.apply = fails_once  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING):
            assert daemon.step() == 0  # gone back to the lost batch's start
            while daemon.step():
                pass
    finally:
        daemon.follower.close()
        daemon.r.close()
    assert sent_count(rdb) == 3
    size = len(delivery("AAA2", "out1").encode())
    line = reread_line(caplog)
    assert f"lost {size} bytes" in line and "reading them again from offset" in line


def test_lost_batches_are_found_while_the_log_is_quiet(make_config, rdb, tmp_path, caplog):
    # no line comes after the lost batch: the quiet-log check finds the position behind
    log_file = tmp_path / "mail.log"
    daemon = failed_over(make_config, rdb, log_file)
    try:
        daemon._position_due = float("inf")  # not yet due: nothing is compared
        assert daemon.step() == 0 and sent_count(rdb) == 1
        daemon._position_due = 0.0  # due
        with caplog.at_level(logging.WARNING):
            assert daemon.step() == 0  # the check, at the end of a quiet step
            assert daemon.step() == 1  # AAA2 again
            assert daemon.step() == 0
    finally:
        daemon.follower.close()
        daemon.r.close()
    assert sent_count(rdb) == 2
    assert "reading them again" in reread_line(caplog)
    position = rdb.get("{sb}:feedback:" + daemon.instance + ":position")
    assert position.split()[1] == str(log_file.stat().st_size)  # saved at the log's end again


def waiting_gauge() -> float | None:
    return REGISTRY.get_sample_value("smtp_balancer_feedback_instance_waiting")


@pytest.fixture
def not_waiting():
    """The gauge is the process's: each test starts it at 0."""
    metrics.INSTANCE_WAITING.set(0)


def test_a_second_daemon_with_the_same_instance_waits_until_the_first_lets_go(
    make_config, rdb, tmp_path, caplog, not_waiting
):
    config = make_config({"feedback": {"log_file": str(tmp_path / "mail.log"), "instance": "mta1"}})
    first, second = FeedbackDaemon(config), FeedbackDaemon(config)
    taken: list[bool] = []
    try:
        assert first.take_instance()
        with caplog.at_level(logging.ERROR):
            waiter = threading.Thread(target=lambda: taken.append(second.take_instance()))
            waiter.start()
            wait_until(lambda: waiting_gauge() == 1, 10, "the second daemon to find the instance held")
        # the gauge is set after the line is logged
        held = [r.getMessage() for r in caplog.records if "is held by another" in r.getMessage()]
        assert held and first.holder in held[0] and "its own feedback.instance" in held[0]
        assert waiter.is_alive() and taken == []
        first.release_instance()
        waiter.join(timeout=10)
        assert taken == [True] and waiting_gauge() == 0
        assert rdb.get("{sb}:feedback:mta1:owner") == second.holder
    finally:
        second.stop.set()
        first.r.close()
        second.r.close()


def test_a_daemon_whose_instance_another_took_applies_no_more_batches(make_config, rdb, tmp_path):
    log_file = tmp_path / "mail.log"
    log_file.write_text(delivery("AAA1", "out1"))
    config = make_config(
        {"feedback": {"log_file": str(log_file), "instance": "mta1", "start_at": "beginning"}}
    )
    daemon = FeedbackDaemon(config)
    try:
        assert daemon.take_instance()
        daemon.follower = daemon.open_log()
        assert daemon.step() == 1 and sent_count(rdb) == 1
        daemon._owner_due = 0.0
        daemon.keep_instance()  # renewed: still ours
        # its lease ran out while Redis was away, and another daemon claimed the instance
        rdb.set("{sb}:feedback:mta1:owner", "host=other pid=7 run=b", px=30_000)
        with log_file.open("a") as f:
            f.write(delivery("AAA2", "out1"))
        with pytest.raises(InstanceTaken) as taken:
            daemon.step()  # the batch's own round trip finds it, before the renewal is due
        assert taken.value.holder == "host=other pid=7 run=b" and sent_count(rdb) == 1
        daemon._owner_due = 0.0
        with pytest.raises(InstanceTaken):
            daemon.keep_instance()  # and so does the renewal
        daemon.release_instance()  # not ours: left alone
        assert rdb.get("{sb}:feedback:mta1:owner") == "host=other pid=7 run=b"
    finally:
        daemon.follower.close()
        daemon.r.close()


def test_a_claim_between_a_batchs_owner_check_and_its_exec_leaves_the_batch_to_the_claimant(
    make_config, rdb, tmp_path
):
    # the batch's owner check passed; then its lease ran out and another daemon claimed the
    # instance before the EXEC. That daemon starts from the position saved before this
    # batch and counts its lines: applied here too, they would count twice
    log_file = tmp_path / "mail.log"
    log_file.write_text(delivery("AAA1", "out1"))
    config = make_config(
        {"feedback": {"log_file": str(log_file), "instance": "mta1", "start_at": "beginning"}}
    )
    daemon = FeedbackDaemon(config)
    other = "host=other pid=7 run=b"
    real_load = daemon.store.load_position_and_owner

    def claimed_after_the_check(watched=None):
        found = real_load(watched)
        rdb.set("{sb}:feedback:mta1:owner", other, px=30_000)  # another connection: the claimant's
        return found

    try:
        assert daemon.take_instance()
        daemon.follower = daemon.open_log()
        daemon.store.load_position_and_owner = claimed_after_the_check  # type: ignore[method-assign]
        with pytest.raises(InstanceTaken) as taken:
            daemon.step()
        assert taken.value.holder == other
        assert sent_count(rdb) == 0 and rdb.get("{sb}:feedback:mta1:position") is None
    finally:
        daemon.follower.close()
        daemon.r.close()


def test_a_user_without_watch_still_applies_its_batches_and_is_told_once(make_config, rdb, tmp_path, caplog):
    # docs/security.md's sb-feedback line as an earlier release had it, without WATCH
    words = [w for w in ACL["sb-feedback"] if w not in ("+watch", "+unwatch")]
    assert len(words) == len(ACL["sb-feedback"]) - 2
    rdb.execute_command(*words)
    log_file = tmp_path / "mail.log"
    log_file.write_text(delivery("AAA1", "out1") + delivery("AAA2", "out1"))
    config = make_config(
        {
            "redis": {"username": "sb-feedback", "password": password_of(words)},
            "feedback": {
                "log_file": str(log_file),
                "instance": "mta1",
                "start_at": "beginning",
                "batch_lines": 1,
            },
        }
    )
    daemon = FeedbackDaemon(config)
    try:
        assert daemon.take_instance()
        daemon.follower = daemon.open_log()
        with caplog.at_level(logging.WARNING):
            assert daemon.step() == 1 and daemon.step() == 1
    finally:
        daemon.follower.close()
        daemon.r.close()
    assert sent_count(rdb) == 2
    told = [r.getMessage() for r in caplog.records if "refused WATCH" in r.getMessage()]
    assert len(told) == 1 and "+watch +unwatch" in told[0], told
    refused = {(e["username"], e["object"]) for e in rdb.execute_command("ACL", "LOG")}
    assert refused == {("sb-feedback", "watch")}, refused


def test_a_daemon_whose_instance_another_took_stands_down_and_waits(
    make_config, rdb, tmp_path, caplog, not_waiting
):
    log_file = tmp_path / "mail.log"
    log_file.write_text(delivery("AAA1", "out1"))
    config = make_config(
        {"feedback": {"log_file": str(log_file), "instance": "mta1", "start_at": "beginning"}}
    )
    daemon = FeedbackDaemon(config)
    runner = threading.Thread(target=daemon.run)
    with caplog.at_level(logging.ERROR):
        runner.start()
        try:
            wait_until(lambda: sent_count(rdb) == 1, 10, "the daemon to read the log")
            rdb.set("{sb}:feedback:mta1:owner", "host=other pid=7 run=b", px=30_000)
            with log_file.open("a") as f:
                f.write(delivery("AAA2", "out1"))
            stood_down = "held by another feedback daemon now (host=other pid=7 run=b)"
            wait_until(
                lambda: waiting_gauge() == 1 and stood_down in caplog.text, 10, "the daemon to stand down"
            )
            assert sent_count(rdb) == 1 and daemon.follower is None
            rdb.delete("{sb}:feedback:mta1:owner")  # the other one stopped
            wait_until(lambda: sent_count(rdb) == 2, 10, "the daemon to go on from the saved position")
        finally:
            daemon.stop.set()
            runner.join(timeout=10)
    assert not runner.is_alive() and waiting_gauge() == 0


def test_a_restarted_daemon_takes_over_from_its_dead_predecessor_at_once(make_config, rdb, tmp_path, caplog):
    config = make_config({"feedback": {"log_file": str(tmp_path / "mail.log"), "instance": "mta1"}})
    daemon = FeedbackDaemon(config)
    crashed = subprocess.Popen([sys.executable, "-c", "pass"])
    crashed.wait()
    ours = fields_of(daemon.holder)
    predecessor = f"host={ours['host']} pid={crashed.pid} boot={ours['boot']} pidns={ours['pidns']} run=old"
    rdb.set("{sb}:feedback:mta1:owner", predecessor, px=30_000)
    try:
        with caplog.at_level(logging.INFO):
            got = daemon.claim_instance()
        assert (got.outcome, got.found) == ("replaced", predecessor)
        assert "which no longer runs; taken over" in caplog.text
        assert rdb.get("{sb}:feedback:mta1:owner") == daemon.holder
    finally:
        daemon.r.close()


def test_the_loop_follows_the_log_only_while_it_holds_the_instance(make_config, rdb, tmp_path, not_waiting):
    log_file = tmp_path / "mail.log"
    log_file.write_text("".join(delivery(f"A{i:03X}", "out1") for i in range(5)))
    config = make_config(
        {"feedback": {"log_file": str(log_file), "instance": "mta1", "start_at": "beginning"}}
    )
    rdb.set("{sb}:feedback:mta1:owner", "host=elsewhere pid=1 run=x", px=30_000)
    daemon = FeedbackDaemon(config)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        wait_until(lambda: waiting_gauge() == 1, 10, "the daemon to wait for its instance")
        assert sent_count(rdb) == 0 and daemon.follower is None  # held elsewhere: no log read
        rdb.delete("{sb}:feedback:mta1:owner")  # the other daemon stopped
        wait_until(lambda: sent_count(rdb) == 5, 10, "the daemon to read the log")
        assert rdb.get("{sb}:feedback:mta1:owner") == daemon.holder
    finally:
        daemon.stop.set()
        runner.join(timeout=10)
    assert not runner.is_alive()
    assert rdb.get("{sb}:feedback:mta1:owner") is None  # released when it stopped
