"""Moving queued mail on real Exim 4.96 (issue #16): routers run again at every
delivery attempt, so at a retry the sb_route_now router asks the table daemon
whether the route the ACL stored still holds for the recipient's provider."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Callable

from integration.configs import ENDPOINT_IP
from integration.daemons import CLI
from integration.exim import EximSystem
from integration.test_feedback_postfix import GMAIL_421
from integration.waits import wait_until

EQUAL = {"pools": {"main": {"endpoints": [{"endpoint": ep, "weight": 1} for ep in ENDPOINT_IP]}}}


def cli(es: EximSystem, *args: str) -> str:
    return subprocess.run(
        [CLI, "-c", str(es.config_path), *args], capture_output=True, text=True, check=True
    ).stdout


def per_recipient(es: EximSystem) -> Counter[str]:
    return Counter(r for m in es.sink.messages for r in m.rcpt_tos)


def moved_lines(es: EximSystem) -> list[str]:
    path = es.base / "table.log"
    return [line for line in path.read_text().splitlines() if 'msg="moved ' in line] if path.exists() else []


def test_exim_retry_leaves_a_throttled_route_and_other_providers_stay(
    exim_system: Callable[..., EximSystem],
) -> None:
    es = exim_system(EQUAL, requeue=True)
    out2 = ENDPOINT_IP["out2"]
    es.sink.script(out2, "gmail.com", GMAIL_421)
    gmail = [f"g{i}@gmail.com" for i in range(50)]
    yahoo = [f"y{i}@yahoo.com" for i in range(50)]
    everyone = [a for pair in zip(gmail, yahoo, strict=True) for a in pair]
    assert es.send_many(100, threads=4, recipients=lambda i: [everyone[i]]) == []
    # the gmail mail routed to out2 is refused there and waits for its retry
    wait_until(lambda: es.sink.handler.refused[(out2, "gmail.com")] >= 5, 30, "gmail refused on out2")
    refused = [a for a in gmail if a not in per_recipient(es)]

    cli(es, "suspend", "out2", "google", "--for", "1h", "--requeue")
    wait_until(lambda: set(everyone) <= set(per_recipient(es)), 60, "all 100 messages")
    counts = per_recipient(es)
    assert all(counts[a] == 1 for a in everyone), {a: n for a, n in counts.items() if n != 1}
    assert not [m for m in es.sink.messages if m.peer_ip == out2 and m.rcpt_tos[0] in gmail]
    assert any(m.peer_ip == out2 for m in es.sink.messages if m.rcpt_tos[0] in yahoo)

    moved = wait_until(lambda: moved_lines(es) if len(moved_lines(es)) >= len(refused) else [], 10, "log")
    assert len(moved) == len(refused), (moved, refused)
    assert all("from out2" in line and "suspended for google" in line for line in moved), moved
    # each names its Exim message id (4.96: base-62, 6-6-2)
    exim_id = re.compile(r"of queue id [0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2} ")
    assert all(exim_id.search(line) for line in moved), moved
