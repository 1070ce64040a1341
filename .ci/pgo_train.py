"""The training run of `make install`'s profile-guided build (setup.py, SB_PGO).

Postfix's RCPT and END-OF-MESSAGE requests go through the policy daemon's request
path, as `make bench-footprint` feeds them, deciding locally from a private
redis-server: once with weights alone, once with a warm-up cap and a rate cap.
The instrumented modules write their branch counts when this process exits.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from request_footprint import feed  # noqa: E402

from policyd.loop import PolicyLoop  # noqa: E402 (after the path)
from smtp_balancer.clock import SYSTEM  # noqa: E402

MESSAGES = 2000
DOMAINS = ("gmail.com", "yahoo.com", "example.test", "outlook.com")


# a decision that goes to Redis (a lease fell short) waits for it even on a loaded host
PATIENT = {"decision": {"budget_ms": 10_000}}


def capped() -> dict[str, Any]:
    """out3 warming (its caps fill within the run), out2's Google mail rate-capped."""
    today = datetime.fromtimestamp(SYSTEM.wall(), UTC).date().isoformat()  # the engine's day
    return {
        **PATIENT,
        "endpoints": {
            "out3": {"warmup": {"start": today, "schedule": [200], "providers": {"google": [20]}}},
            "out2": {"rate_caps": {"google": 100}},
        },
    }


async def train() -> int:
    replies = await feed("policyd", MESSAGES, 0, PATIENT, DOMAINS)
    return replies + await feed("policyd", MESSAGES, 0, capped(), DOMAINS, settle=True)


def main() -> int:
    with asyncio.Runner(loop_factory=PolicyLoop) as runner:  # as policyd/main.py runs
        replies = runner.run(train())
    import policyd.server

    if not policyd.server.__file__.endswith(".so"):
        print("pgo training: policyd runs as Python, not compiled: nothing to train", file=sys.stderr)
        return 1
    if replies != 4 * MESSAGES:
        print(f"pgo training: {replies} replies to {4 * MESSAGES} requests", file=sys.stderr)
        return 1
    print(f"pgo training: {2 * MESSAGES} messages through policyd's request path")
    return 0


if __name__ == "__main__":
    sys.exit(main())
