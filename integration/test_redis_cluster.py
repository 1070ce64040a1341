"""A real Redis Cluster (3 masters, 3 replicas, on loopback) behind real Postfix, the
policy daemon, the feedback daemon and the CLI (issue #36).

The master of the `{sb}` slot is killed while 1,000 messages go through: none is lost
or refused, decisions come back within 5 s of the replica taking over, and the
warming endpoint's cap, reached before the kill, holds on the new master. Then the
slot is moved to another master by hand (CLUSTER SETSLOT and MIGRATE, as a
resharding does): the daemons get MOVED and ASK replies, find the new owner, and
count there.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import datetime

from integration.configs import ENDPOINT_IP
from integration.conftest import base_config, write_config
from integration.daemons import CLI, decision_lines
from integration.redis_cluster import RedisCluster
from integration.sink import free_port
from integration.waits import MAIL_S, wait_until
from smtp_balancer.clock import utc_now
from smtp_balancer.state.cluster import prefix_slot

TOTAL = 1000
CAP = 50  # reached before the kill: the new master must go on refusing past it
KILL_AT = 300
BACK_S = 5.0
MOVE_S = 30.0  # mail keeps coming after a slot move until a decision shows it was followed


def ts(line: dict[str, str]) -> float:
    return datetime.fromisoformat(line["ts"]).timestamp()


def first_good_after(log_path, since: float) -> float | None:
    """Seconds from ``since`` to the first decision after it that Redis answered."""
    lines = [d for d in decision_lines(log_path) if ts(d) > since]
    first = next((ts(d) for d in lines if d["degraded"] == "false"), None)
    return None if first is None else first - since


def move_slot(cluster: RedisCluster, slot: int, source: int, target: int) -> None:
    """Move ``slot`` from the master at ``source`` to the one at ``target``, keys and all."""
    src, dst = cluster.client(source), cluster.client(target)
    src_id, dst_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    for client in (dst, src):  # the owner first, as redis-cli --cluster reshard does
        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)


def cli(config_path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "-c", str(config_path), *args], capture_output=True, text=True, timeout=60)


def test_a_cluster_master_killed_and_the_slot_moved_while_mail_flows(mail_system, tmp_path):
    cluster = RedisCluster(tmp_path / "cluster")
    try:
        cluster.start()
        day = utc_now().date()
        ms = mail_system(
            {
                "redis": {"cluster": {"nodes": cluster.hosts}},
                "endpoints": {"out3": {"warmup": {"start": day.isoformat(), "schedule": [CAP]}}},
            },
            feedback=True,
        )
        status = cli(ms.config_path, "status")
        assert status.returncode == 0, status.stderr
        assert cli(ms.config_path, "weight", "main", "out2", "3").returncode == 0
        old_port = cluster.master_port("sb")
        assert old_port is not None
        old = cluster.client(old_port)
        assert old.hget("{sb}:pool:main:weights", "out2") == "3"  # the CLI wrote to the slot's master

        errors: list[str] = []
        sender = threading.Thread(target=lambda: errors.extend(ms.send_many(TOTAL, threads=2)))
        sender.start()
        try:
            wait_until(lambda: len(ms.sink.messages) >= KILL_AT, 180, f"{KILL_AT} deliveries")
            counted_before_kill = int(old.hget(f"{{sb}}:count:out3:day:{day:%Y%m%d}", "total") or 0)
            killed_at = time.time()
            cluster.kill(old_port)
            new_port = cluster.wait_failover(old_port)
            failed_over_s = time.time() - killed_at
        finally:
            sender.join(timeout=300)
        assert errors == []  # none refused

        # decisions back within BACK_S of the replica taking over (top up if the run ended)
        took_over = killed_at + failed_over_s
        seq = TOTAL
        while first_good_after(ms.policyd.log_path, took_over) is None and time.time() < took_over + BACK_S:
            assert ms.send_many(10, start=seq) == []
            seq += 10
        back_s = first_good_after(ms.policyd.log_path, took_over)
        assert back_s is not None and back_s <= BACK_S, back_s
        late = [
            d
            for d in decision_lines(ms.policyd.log_path)
            if ts(d) > took_over + BACK_S and d["degraded"] == "true"
        ]
        assert late == []

        # the slot moves to another master: MOVED and ASK replies, followed
        target = next(p for p in cluster.ports if p not in (old_port, new_port) and cluster.is_master(p))
        move_slot(cluster, prefix_slot("sb"), new_port, target)
        moved_at = time.time()
        assert cluster.master_port("sb", asking=target) == target
        owner = cluster.client(target)
        # mail goes on until a decision Redis answered shows: the engine may decide
        # without Redis while it finds the slot's new owner, and 100 messages once were
        # all decided within that (a CI run, 4 of 9 local runs); a fixed batch could end
        # before the owner was found, with nothing left to show it was
        moved_by = moved_at + MOVE_S
        while first_good_after(ms.policyd.log_path, moved_at) is None and time.time() < moved_by:
            assert ms.send_many(10, start=seq) == []
            seq += 10
        wait_until(
            lambda: first_good_after(ms.policyd.log_path, moved_at) is not None,
            5,  # decision lines are written within a second
            "a decision Redis answered after the move",
        )
        assert cli(ms.config_path, "weight", "main", "out2", "2").returncode == 0
        assert owner.hget("{sb}:pool:main:weights", "out2") == "2"

        # 0 lost: every message delivered once, the queue empty
        ms.sink.wait_for(seq, timeout=MAIL_S)
        wait_until(ms.postfix.queue_is_empty, MAIL_S, "an empty queue")
        assert len(ms.sink.messages) == seq
        # the feedback daemon counts on the slot's owner, to the end of the log
        log_size = ms.postfix.log_file.stat().st_size

        def read_offset() -> int:
            return int((owner.get("{sb}:feedback:it:position") or "0 0").split(" ")[1])

        wait_until(
            lambda: read_offset() >= log_size, 60, "the feedback daemon at the end of the log on the owner"
        )
        out3_delivered = sum(m.peer_ip == ENDPOINT_IP["out3"] for m in ms.sink.messages)
        counted = int(owner.hget(f"{{sb}}:count:out3:day:{day:%Y%m%d}", "total") or 0)
        figures = {
            "delivered": len(ms.sink.messages),
            "cap": CAP,
            "out3_delivered": out3_delivered,
            "counted_on_old_master_at_kill": counted_before_kill,
            "counted_on_owner_at_end": counted,
            "failover_s": round(failed_over_s, 1),
            "first_good_decision_after_takeover_s": round(back_s, 2),
        }
        print("redis cluster:", json.dumps(figures))
        assert out3_delivered >= CAP  # the cap was reached, and held:
        assert counted <= CAP  # no master ever granted past it
        # past it only by what the replica had not received at the kill (none so far on loopback)
        assert out3_delivered <= CAP + 10, figures
        status = cli(ms.config_path, "status", "--json")
        assert status.returncode == 0, status.stderr
    finally:
        cluster.stop()


def test_the_cli_names_the_cluster_when_no_node_answers(tmp_path):
    raw = base_config("redis://127.0.0.1:1/0", free_port(), free_port())
    path = write_config(tmp_path, raw, {"redis": {"cluster": {"nodes": ["127.0.0.1:1"]}}})
    done = cli(path, "status")
    assert done.returncode == 3, done
    assert "cluster 127.0.0.1:1" in done.stderr and "Traceback" not in done.stderr, done.stderr
