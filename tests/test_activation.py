"""sd_listen_fds(3): which process takes the sockets systemd passed (sans sockets: the
daemon-level test with a real listening socket is tests/policyd/test_activation.py)."""

from __future__ import annotations

import os

from smtp_balancer.activation import inherited_sockets


def test_only_the_process_named_in_listen_pid_takes_the_sockets():
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1"}  # meant for another process
    assert inherited_sockets(env) == [] and env["LISTEN_FDS"] == "1"
    # ours, but a count that is no ASCII number (an Arabic-Indic 1): nothing is taken
    assert inherited_sockets({"LISTEN_FDS": "\u0661", "LISTEN_PID": str(os.getpid())}) == []
