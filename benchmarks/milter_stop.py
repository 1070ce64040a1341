"""How long a milter takes to stop: SIGTERM to exit, ours against a no-op pymilter.

The baseline is benchmarks/noop_milter.py, plain pymilter: libmilter's own signal
thread takes the SIGTERM and its listener notices between 5-second waits for a
connection, so its stop takes anything up to 5 s. Ours takes the signal in its main
thread and wakes the listener (milter/main.py), then gives its quota leases back
and writes its last counts. While a milter is stopping or restarting, Postfix sends
mail on by its default_action, unrouted. Both are started and stopped in turn,
``--rounds`` times each, on unix sockets; Redis is absent (ours decides degraded),
which costs its stop nothing.

Run: make bench-milter-stop   (bounded: about --rounds x 8 s)
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from integration.configs import lone_milter_config  # noqa: E402
from integration.waits import START_S, wait_until  # noqa: E402

CLI = str(Path(sys.executable).with_name("smtp-balancer"))


def stop_time(argv: list[str], sock: Path) -> float:
    """Seconds from SIGTERM to the exit of a milter started with ``argv``."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(sock.exists, START_S, f"{argv[-1]}'s socket")
        time.sleep(0.2)  # serving: past its start, as a running milter is
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        return time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sb-bench-milter-stop-"))
    ours_sock, noop_sock = base / "ours.sock", base / "noop.sock"
    config = lone_milter_config(base, {"listen": f"unix:{ours_sock}"})
    ours_argv = [CLI, "-c", str(config), "milter"]
    noop_argv = [sys.executable, str(ROOT / "benchmarks" / "noop_milter.py"), f"unix:{noop_sock}"]
    ours: list[float] = []
    noop: list[float] = []
    for _ in range(args.rounds):  # interleaved: the machine's drift hits both alike
        ours.append(stop_time(ours_argv, ours_sock))
        noop.append(stop_time(noop_argv, noop_sock))
    for name, times in (("no-op pymilter (baseline)", noop), ("smtp-balancer milter", ours)):
        print(
            f"{name:26} stop: median {statistics.median(times):.3f} s,"
            f" max {max(times):.3f} s over {len(times)} stops"
        )
    print(f"ours / baseline (medians): {statistics.median(ours) / statistics.median(noop):.3f}")


if __name__ == "__main__":
    main()
