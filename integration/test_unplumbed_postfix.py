"""An endpoint whose bind address is not on this host, on real Postfix (issue #18).

Postfix 3.7 does not defer such mail: it logs "smtp_connect_addr: bind <addr>:
Cannot assign requested address" and connects from the host's default address,
so the mail leaves from the wrong IP. The feedback daemon counts those warnings;
with the deciders' check on, the endpoint gets no mail from this host at all.
"""

from __future__ import annotations

import urllib.request

import yaml

from integration.waits import MAIL_S, wait_until

NOT_HERE = "192.0.2.55"  # TEST-NET-1: not an address of this host
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com"]
OWN = {"127.0.0.2", "127.0.0.3", "127.0.0.4"}  # the endpoints' addresses (out2's would be NOT_HERE)


def test_an_unplumbed_endpoint_gets_no_mail_once_the_deciders_check(mail_system) -> None:
    ms = mail_system(
        {"endpoints": {"out2": {"bind_address": NOT_HERE}}, "decision": {"bind_check_s": 0}},
        feedback=True,
        domains=DOMAINS,
    )
    # the check off: out2 gets its share, and Postfix sends it from 127.0.0.1, not out2's address
    assert ms.send_many(30, threads=2, recipients=lambda i: [f"a{i}@{DOMAINS[i % 3]}"]) == []
    first = ms.sink.wait_for(30, timeout=MAIL_S)
    strays = [m for m in first if m.peer_ip not in OWN]
    assert strays and {m.peer_ip for m in strays} == {"127.0.0.1"}  # none of 30 on out2: p = 2^-30
    warnings = [ln for ln in ms.postfix.log_text().splitlines() if "smtp_connect_addr: bind" in ln]
    assert warnings and all("postfix/out2/smtp" in ln and NOT_HERE in ln for ln in warnings)

    # the feedback daemon counts each of Postfix's warnings for the endpoint
    port = int(yaml.safe_load(ms.config_path.read_text())["feedback"]["metrics_listen"].rpartition(":")[2])

    def bind_errors() -> float:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        line = next(
            (x for x in page.splitlines() if x.startswith("smtp_balancer_feedback_bind_errors_total{")), ""
        )
        return float(line.split()[-1]) if 'endpoint="out2"' in line else 0.0

    wait_until(lambda: bind_errors() == len(warnings), 30, "the bind warnings counted")

    # the check on (the default): out2 is left out of every plan on this host
    raw = yaml.safe_load(ms.config_path.read_text())
    del raw["decision"]["bind_check_s"]
    ms.config_path.write_text(yaml.safe_dump(raw))
    ms.policyd.stop()
    ms.policyd.start()
    assert ms.send_many(60, threads=2, recipients=lambda i: [f"b{i}@{DOMAINS[i % 3]}"], start=100) == []
    second = ms.sink.wait_for(90, timeout=MAIL_S)[30:]
    assert len(second) == 60 and {m.peer_ip for m in second} <= OWN - {"127.0.0.3"}

    log = ms.policyd.log_path.read_text()
    notice = f"endpoint out2: bind address {NOT_HERE} is not on this host"
    assert notice in log and "endpoint=out2" not in log[log.index(notice) :]
