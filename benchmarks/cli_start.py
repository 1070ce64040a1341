"""What starting a command costs: CPU per start of ``smtp-balancer`` commands, beside
a Python interpreter that does nothing, measured in the same run.

Every command and daemon start pays its imports first: ``render`` runs in every
configuration management pass, ``weight`` or ``drain`` in an operator's loop, and a
daemon's imports are part of each restart. The baseline is ``python -c pass`` (the
interpreter's own start, which no command can go below). Commands are run in turn,
``--rounds`` times each; CPU is user plus system time of each child, from
getrusage, steadier than wall time on a shared machine. Redis is not needed: the
config names an unreachable one, which these commands never contact.

Run: make bench-cli-start   (bounded: about --rounds x 4 s)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import BASE  # noqa: E402

CLI = str(Path(sys.executable).with_name("smtp-balancer"))


def cpu_of(argv: list[str]) -> float:
    """User plus system seconds of one run of ``argv``."""
    before = os.times()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    after = os.times()
    return (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    config = Path(tempfile.mkdtemp(prefix="sb-bench-cli-")) / "config.yaml"
    config.write_text(yaml.safe_dump({**BASE, "redis": {"url": "redis://127.0.0.1:1"}}))
    commands = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "smtp-balancer --help": [CLI, "--help"],
        "render postfix --part master": [CLI, "-c", str(config), "render", "postfix", "--part", "master"],
        "import policyd.main (a daemon's imports)": [sys.executable, "-c", "import policyd.main"],
    }
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):  # interleaved: the machine's drift hits every command alike
        for name, argv in commands.items():
            cpu[name].append(cpu_of(argv))
    base = statistics.median(cpu["python -c pass (baseline)"])
    for name, times in cpu.items():
        median = statistics.median(times)
        print(f"{name:42} CPU per start: median {median * 1000:6.0f} ms, {median / base:5.1f}x the baseline")


if __name__ == "__main__":
    main()
