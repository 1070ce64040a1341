"""Run test cases inside a network namespace of their own, with IPv6 addresses on its loopback.

The machine's own loopback has ::1 alone, and Exim takes ::1 for itself; a host's IPv6
egress needs addresses of its own. ``unshare -n`` gives the cases a fresh namespace
(created here, gone when they end) whose loopback holds 127.0.0.1/8, ::1 and the
addresses asked for: every process the cases start (Redis, Postfix, Exim, the daemons,
the sinks) lives in it, and nothing reaches any other network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IN_NETNS = "SB_TEST_NETNS"  # set inside: the cases refuse to run anywhere else


def run_in_netns(addresses: list[str], cases: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """pytest on ``cases`` (a file not collected by the normal run) in a new network
    namespace whose loopback also holds ``addresses`` (each a /128)."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is needed for the network-namespace tests (.ci/install installs it)")
    setup = ["ip link set lo up", *(f"ip -6 addr add {a}/128 dev lo nodad" for a in addresses)]
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cases]
    script = " && ".join([*setup, "exec " + " ".join(pytest)])
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        cwd=ROOT,
        env={**os.environ, IN_NETNS: "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
