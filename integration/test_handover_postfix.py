"""A restart by SIGUSR2 on real Postfix (policyd/handover.py): smtpd's policy
connections are handed to the new process mid-stream, every message is decided and
routed, none leaves by the default transport, and Redis counts each once."""

from __future__ import annotations

import re
import threading
from collections import Counter

from integration.configs import ENDPOINT_IP
from integration.daemons import HandingOverPolicyd, wait_for_decision_lines
from integration.waits import MAIL_S
from integration.workloads import assert_counted_exactly

COUNT = 600
HANDED = re.compile(r"handover: pid \d+ serves now \((\d+) connection\(s\) handed over, (\d+) closed busy\)")


def test_sigusr2_moves_smtpd_connections_to_the_new_process_and_routes_every_message(mail_system):
    ms = mail_system()
    policyd = ms.policyd
    assert isinstance(policyd, HandingOverPolicyd)
    handed = [threading.Event(), threading.Event()]
    errors: list[str] = []

    def tag(i: int) -> str:
        # the senders' sessions stay open, idle between messages, while each handover runs
        for n, at in enumerate((COUNT // 3, 2 * COUNT // 3)):
            if i >= at:
                assert handed[n].wait(120), "the handover never happened"
        return ""

    sender = threading.Thread(target=lambda: errors.extend(ms.send_many(COUNT, tag=tag)))
    sender.start()
    try:
        for n, at in enumerate((COUNT // 3, 2 * COUNT // 3)):
            ms.sink.wait_for(at - 8, timeout=MAIL_S)  # at most 8 senders are ahead of the gate
            policyd.hand_over()
            handed[n].set()
    finally:
        for event in handed:
            event.set()
        sender.join(timeout=300)
    assert errors == []
    got = ms.sink.wait_for(COUNT, timeout=MAIL_S)
    assert Counter(m.peer_ip for m in got).keys() <= set(ENDPOINT_IP.values())  # none by default
    text = policyd.log_path.read_text()
    moved = [(int(given), int(busy)) for given, busy in HANDED.findall(text)]
    assert len(moved) == 2 and all(given >= 1 and busy == 0 for given, busy in moved), moved
    assert len(wait_for_decision_lines(policyd.log_path, COUNT)) == COUNT
    assert "problem talking to server" not in ms.postfix.log_text()
    assert_counted_exactly(ms.rdb, ENDPOINT_IP, COUNT, [policyd])
