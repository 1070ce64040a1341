"""Feedback daemons that share one ``feedback.instance`` (a second unit, a copied
config, two hosts with one name) on real Postfix and Redis: one reads the log at a
time, the others wait, and every delivery is counted once."""

from __future__ import annotations

from pathlib import Path

import yaml

from integration.daemons import DaemonProcess, metric_sum, metrics_port, tcp_ready
from integration.sink import free_port
from integration.waits import MAIL_S, wait_until
from integration.workloads import stored_outcomes


def another_feedback_daemon(config_path: Path, name: str) -> tuple[DaemonProcess, int]:
    """The same YAML (so the same instance and log) with its own /metrics port."""
    raw = yaml.safe_load(config_path.read_text())
    port = free_port()
    raw["feedback"]["metrics_listen"] = f"127.0.0.1:{port}"
    path = config_path.with_name(f"{name}.yaml")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return DaemonProcess("feedback", path, config_path.with_name(f"{name}.log"), tcp_ready(port)), port


def waiting(port: int) -> float:
    return metric_sum(port, "smtp_balancer_feedback_instance_waiting ")


def test_daemons_sharing_an_instance_take_turns_and_count_each_delivery_once(mail_system) -> None:
    ms = mail_system(feedback=True)  # its feedback daemon holds instance "it"
    log = ms.postfix.log_file
    counted = 0

    def deliver_and_count(count: int) -> None:
        """Send ``count`` messages; wait until their outcomes are counted and the saved
        position is the log's end (position and counts move in one transaction, so
        nothing is left to be counted twice)."""
        nonlocal counted
        assert ms.send_many(count) == []
        counted += count

        def settled() -> bool:
            saved = ms.rdb.get("{sb}:feedback:it:position")
            at_end = saved is not None and int(saved.split()[1]) == log.stat().st_size
            return stored_outcomes(ms.rdb) == counted and at_end

        wait_until(settled, MAIL_S, f"{counted} outcomes counted and the position at the log's end")

    deliver_and_count(10)
    second, second_port = another_feedback_daemon(ms.config_path, "feedback-2")
    third, third_port = another_feedback_daemon(ms.config_path, "feedback-3")
    try:
        second.start()
        held = "is held by another feedback daemon"

        def says(daemon: DaemonProcess, port: int, line: str, gauge: float) -> bool:
            """Its log has the line and its gauge the value (set just after the line)."""
            return line in daemon.log_tail(200) and waiting(port) == gauge

        wait_until(lambda: says(second, second_port, held, 1), 10, "the second to wait")
        assert waiting(metrics_port(ms.config_path, "feedback")) == 0
        deliver_and_count(10)  # the first alone reads them

        ms.feedback.kill()  # a crash: the lease is left behind, naming a dead process
        taken = "no longer runs; taken over"
        wait_until(lambda: says(second, second_port, taken, 0), 10, "the second to take over")
        deliver_and_count(10)

        third.start()
        wait_until(lambda: says(third, third_port, held, 1), 10, "the third to wait")
        second.stop()  # a clean stop releases the instance
        ours = "is this daemon's now"
        wait_until(lambda: says(third, third_port, ours, 0), 10, "the third to take the instance")
        assert "taken over" not in third.log_tail(200)
        deliver_and_count(10)
        assert stored_outcomes(ms.rdb) == 40
    finally:
        third.stop()
        second.stop()
