"""The training run of the profile-guided build (.ci/pgo_train.py, setup.py's SB_PGO):
it must keep deciding real requests, caps included, or the install falls back to the
plain build and says so only in a warning."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_training_run_decides_every_message_and_fills_its_caps(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "pgo_train.py")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "pgo training: 4000 messages through policyd's request path" in out.stdout
    decisions = [line for line in out.stderr.splitlines() if " msg=decision " in line]
    assert len(decisions) == 4000
    assert all("outcome=route" in line and "degraded=false" in line for line in decisions)
    # the second half ran with out3 warming (200 a day, 20 of them Google's) and out2's
    # Google mail capped at 100 a minute: every cap fills, so its own branches ran. (The
    # Google cap fills before the total unless fewer than 20 of out3's 200 are Gmail,
    # each a quarter likely: under 1 in a million; out2 is drawn for about 300 Gmail.)
    capped = Counter(
        (m.group(2), m.group(1) == "gmail.com")
        for line in decisions[2000:]
        if (m := re.search(r"rcpt_domains=(\S+) .* endpoint=(out\d) ", line))
    )
    assert capped["out3", True] + capped["out3", False] == 200, capped
    assert capped["out3", True] == 20, capped
    assert capped["out2", True] == 100, capped
