"""Shadow mode on real Postfix (issue #37): the live route is the live config's, and
every decision line also carries what a candidate config would have done.

The candidate drops out3 and weights out1:out2 at 3:1. The mail itself goes
out at the live 1:2:1 (chi-square at the sink, false-failure rate below 1e-7);
each decision line names the candidate's endpoint, at 3:1 over the messages; the
agreement metric counts exactly the lines where the two are the same; and
``smtp-balancer shadow report`` on the daemon's log says the same.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import yaml

from integration.configs import ENDPOINT_IP, topology
from integration.daemons import CLI, wait_for_decision_lines
from integration.statistics import assert_shares
from integration.waits import MAIL_S

N = 800
IP_ENDPOINT = {ip: name for name, ip in ENDPOINT_IP.items()}


def test_live_routing_is_unchanged_and_each_decision_is_shadowed(mail_system, tmp_path):
    candidate = {"mx_lookup": {"enabled": False}, **topology()}
    candidate["pools"]["main"]["endpoints"] = [
        {"endpoint": "out1", "weight": 3},
        {"endpoint": "out2", "weight": 1},
    ]
    (tmp_path / "candidate.yaml").write_text(yaml.safe_dump(candidate))
    ms = mail_system({"shadow": {"config": str(tmp_path / "candidate.yaml")}})
    assert ms.send_many(N, threads=4) == []
    got = ms.sink.wait_for(N, timeout=MAIL_S)
    assert_shares(Counter(IP_ENDPOINT[m.peer_ip] for m in got), {"out1": 1, "out2": 2, "out3": 1})

    lines = wait_for_decision_lines(ms.policyd.log_path, N)
    assert len(lines) == N and all(line["via"] == "policyd" for line in lines)
    assert all(line["shadow_outcome"] == "route" and line["shadow_rule"] == "all" for line in lines)
    assert_shares(Counter(line["shadow_endpoint"] for line in lines), {"out1": 3, "out2": 1})
    same = sum(line["endpoint"] == line["shadow_endpoint"] for line in lines)
    # the same uniform value for both: r < 1/4 is out1 under both, and only that agrees
    assert same == sum(line["endpoint"] == "out1" for line in lines)
    series = 'smtp_balancer_shadow_decisions_total{agreement="%s",pool="main",rule="all"}'
    assert (ms.metric(series % "same"), ms.metric(series % "different")) == (same, N - same)

    out = subprocess.run(
        [CLI, "shadow", "report", str(ms.policyd.log_path), "--json"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["shadowed"], report["same"], report["different"]) == (N, same, N - same)
    moved = {(m["live"], m["candidate"]): m["messages"] for m in report["moves"]}
    assert moved.get(("out3", "out1"), 0) + moved.get(("out3", "out2"), 0) == sum(
        line["endpoint"] == "out3" for line in lines
    )
