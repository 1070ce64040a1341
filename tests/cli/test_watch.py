"""`status --watch` in a real terminal: tmux runs it 100 columns wide while the state
changes and outcomes are counted; the screen follows, fits, and q and Ctrl-C end it
cleanly (the terminal restored, no traceback)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from integration.waits import wait_until
from smtp_balancer.clock import utc_now

CLI = str(Path(sys.executable).with_name("smtp-balancer"))


@pytest.fixture
def tmux() -> Iterator[tuple[str, list[str]]]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux must be installed (make test installs it)")
    socket = f"sb-watch-{uuid.uuid4().hex[:8]}"  # a server of our own, ended at the end
    yield socket, ["tmux", "-L", socket]
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


def screen(tmux_cmd: list[str], session: str) -> str:
    """The pane's text, wrapped lines joined (-J): what the program printed, per line."""
    out = subprocess.run(
        [*tmux_cmd, "capture-pane", "-p", "-J", "-t", session], capture_output=True, text=True
    )
    return out.stdout


def showing(tmux_cmd: list[str], *texts: str) -> str:
    """The screen once it shows every one of ``texts``, else ""."""
    text = screen(tmux_cmd, "w")
    return text if all(t in text for t in texts) else ""


def start(tmux_cmd: list[str], session: str, config: Path) -> None:
    command = f"{CLI} -c {config} status --watch 1s; echo EXITED $?; sleep 60"
    subprocess.run(
        [*tmux_cmd, "new-session", "-d", "-s", session, "-x", "100", "-y", "60", command], check=True
    )


@pytest.mark.parametrize("key", ["q", "C-c"])
def test_watch_follows_changes_fits_100_columns_and_quits_cleanly(
    make_config, tmp_path, rdb: redis.Redis, tmux, key
):
    make_config()
    _, tmux_cmd = tmux
    start(tmux_cmd, "w", tmp_path / "config.yaml")
    wait_until(lambda: "smtp-balancer status at" in screen(tmux_cmd, "w"), 20, "the first screen")
    assert "no outcomes counted" in screen(tmux_cmd, "w")
    # a drain and this minute's outcomes, as the CLI and the feedback daemon write them
    rdb.hset("{sb}:endpoint:out1:state", mapping={"state": "drained", "reason": "swap", "by": "cli"})
    now = utc_now()  # the CLI's clock: the suite's pinned one, which it inherits
    for m in {f"{now:%Y%m%d%H%M}", f"{now + timedelta(seconds=3):%Y%m%d%H%M}"}:  # a minute turning
        rdb.hset(f"{{sb}}:outcomes:out2:google:{m}", mapping={"sent": 41, "deferred": 3})
    try:
        text = wait_until(lambda: showing(tmux_cmd, "drained", "41"), 20, "the redrawn screen")
    except AssertionError as exc:
        raise AssertionError(screen(tmux_cmd, "w")) from exc  # what the screen shows instead
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert "out2      google    41    3" in text and "q quits" in text
    subprocess.run([*tmux_cmd, "send-keys", "-t", "w", key], check=True)
    ended = wait_until(lambda: showing(tmux_cmd, "EXITED"), 20, "the watch to end")
    assert "EXITED 0" in ended and "Traceback" not in ended, ended
