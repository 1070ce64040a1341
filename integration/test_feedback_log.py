"""The real feedback daemon following a log through rotations and a crash: each line counts once."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import yaml

from integration.configs import topology
from integration.daemons import DaemonProcess, tcp_ready
from integration.sink import free_port
from integration.waits import wait_until
from integration.workloads import stored_outcomes, synthetic_log


def caught_up(rdb, log: Path) -> bool:
    """The saved position is at the end of the file at ``log``, with no old file left."""
    saved = rdb.get("{sb}:feedback:t:position")
    if saved is None:
        return False
    parts = saved.split(" ")
    st = log.stat()
    return len(parts) == 3 and int(parts[0]) == st.st_ino and int(parts[1]) == st.st_size


def test_rename_rotation_copytruncate_and_a_crash_count_every_line_once(
    tmp_path: Path, redis_server, rdb
) -> None:
    log = tmp_path / "mail.log"
    log.touch()
    port = free_port()
    config = {
        "redis": {"url": redis_server.url},
        **topology(),
        "feedback": {
            "log_file": str(log),
            "start_at": "beginning",
            "instance": "t",
            "metrics_listen": f"127.0.0.1:{port}",
            "poll_interval_ms": 50,
            "batch_lines": 200,
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    daemon = DaemonProcess("feedback", path, tmp_path / "feedback.log", tcp_ready(port))
    daemon.start()
    lines, deliveries = synthetic_log(12_000, seed=7)
    expected = sum(n for ep, n in deliveries.items() if ep)  # the default transport is not ours
    chunks = [lines[i : i + 1000] for i in range(0, len(lines), 1000)]
    try:

        def write(chunk: list[str]) -> None:
            with log.open("a") as f:
                f.write("\n".join(chunk) + "\n")

        for i, chunk in enumerate(chunks):
            if i == 5:
                # the copytruncate below comes once the renamed file is finished and the
                # new one read to its end, so this test is of the bridge by tail; the
                # follower's unit tests cover a copytruncate of a new file not yet read
                # (and the README the case it cannot see: one before its next read)
                wait_until(lambda: caught_up(rdb, log), 60, "the daemon to finish the renamed file")
            write(chunk)
            if i == 2:  # logrotate's default: rename, new file; the writer reopens later
                log.rename(tmp_path / "mail.log.1")
                log.touch()
            elif i == 5:  # copytruncate, with lines written but not yet read
                shutil.copy(log, tmp_path / "mail.log.2")
                os.truncate(log, 0)
            elif i == 7:  # a crash mid-stream: the saved position must be exact
                daemon.kill()
                daemon.start()
            elif i == 9:  # a half-written last line, finished a moment later
                with log.open("a") as f:
                    f.write(chunks[10][0][:30])
                time.sleep(0.3)
                with log.open("a") as f:
                    f.write(chunks[10][0][30:] + "\n")
                chunks[10] = chunks[10][1:]
            time.sleep(0.05)
        # the position is saved with the counts it covers: at the log's end, every line
        # has counted, and nothing is left to count again later
        wait_until(lambda: caught_up(rdb, log), 60, "the daemon to reach the log's end")
        assert stored_outcomes(rdb) == expected, daemon.log_tail()
        notes = daemon.log_tail(200)
        assert "rotated" in notes and "truncated" in notes
    finally:
        daemon.stop()
