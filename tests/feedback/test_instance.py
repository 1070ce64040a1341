"""The holder value, and which holders are dead processes on this host."""

from __future__ import annotations

import os
import subprocess
import sys

from smtp_balancer.feedback.instance import dead_here, fields_of, this_process


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_holder_value_names_this_process_with_a_new_run_each_time():
    first, second = fields_of(this_process()), fields_of(this_process())
    assert first["pid"] == str(os.getpid()) and first["host"]
    assert len(first["boot"]) == 36 and first["pidns"].isdigit()
    assert first["run"] != second["run"]


def test_only_a_gone_process_of_this_boot_and_pid_namespace_is_dead():
    here = this_process()
    ours = fields_of(here)
    gone = exited_pid()

    def holder(**changed: str) -> str:
        return " ".join(f"{k}={v}" for k, v in {**ours, "pid": str(gone), **changed}.items())

    assert dead_here(holder(), here)
    assert not dead_here(holder(pid=str(os.getpid())), here)  # running: this very process
    assert not dead_here(holder(pid="1"), here)  # running (init), maybe another user's
    assert not dead_here(holder(boot="0" * 36), here)  # another host, or before a reboot
    assert not dead_here(holder(pidns="4026531999"), here)  # another container
    for junk in ("", "stuck", "pid=abc", "pid=-1", f"pid={gone}", holder(pid="0")):
        assert not dead_here(junk, here)  # nothing to judge by: waited for, never taken


def test_without_its_own_identity_a_daemon_judges_no_holder_dead():
    gone = exited_pid()
    holder = f"host=h pid={gone} boot=- pidns=-"
    assert not dead_here(holder, holder)
