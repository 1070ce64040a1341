"""The feedback daemon reading a real Exim 4.96's main log (issue #17, first part):
a throttle Exim meets suspends the route fleet-wide, so Postfix's next gmail
message avoids it too."""

from __future__ import annotations

import subprocess
import urllib.request

from integration.configs import ENDPOINT_IP
from integration.daemons import CLI
from integration.exim import EXIM_SINK_HOST, EximInstance, exim_feedback
from integration.sink import Sink, free_port
from integration.submit import send_many
from integration.test_feedback_postfix import GMAIL_421
from integration.waits import wait_until

DOMAINS = ["gmail.com", "yahoo.com"]
SUSPENSION = "{sb}:suspend:out2:google"


def test_a_throttle_in_exims_log_suspends_the_route_for_postfix_too(mail_system) -> None:
    # Postfix, the policy daemon, Redis; the senders' domain is a tenant
    ms = mail_system({"tenants": ["shop.test"]}, domains=DOMAINS)
    out2 = ENDPOINT_IP["out2"]
    exim_sink = Sink(EXIM_SINK_HOST)
    exim_sink.start()
    exim_sink.script(out2, "gmail.com", GMAIL_421)
    rendered = ms.base / "exim-rendered"
    subprocess.run([CLI, "-c", str(ms.config_path), "render", "exim", "--write", str(rendered)], check=True)
    exim = EximInstance(ms.base / "exim", free_port(), rendered, EXIM_SINK_HOST, exim_sink.port)
    feedback, metrics_port = exim_feedback(ms.config_path, exim, ms.base, "exim1")
    try:
        exim.start()
        feedback.start()
        # gmail and yahoo mail through Exim; the gmail mail routed to out2 meets the throttle
        errors = send_many(exim.smtp_port, 40, threads=4, recipients=lambda i: [f"e{i}@{DOMAINS[i % 2]}"])
        assert errors == []
        wait_until(lambda: ms.rdb.exists(SUSPENSION), 30, "the (out2, google) suspension from Exim's log")
        reason = ms.rdb.get(SUSPENSION)
        assert reason.startswith("rule google-rate-limited: out2 deferred by google") and "4.7.28" in reason

        # Postfix, on the same Redis: its gmail mail avoids out2, its yahoo mail still uses it
        assert ms.send_many(60, threads=4, recipients=lambda i: [f"p{i}@{DOMAINS[i % 2]}"]) == []
        got = ms.sink.wait_for(60, timeout=60)
        assert not [m for m in got if m.peer_ip == out2 and m.rcpt_tos[0].endswith("@gmail.com")]
        assert any(m.peer_ip == out2 for m in got if m.rcpt_tos[0].endswith("@yahoo.com"))

        # Exim's deliveries are counted like Postfix's, by endpoint, provider, status and class,
        # and by tenant: each delivery joined to its message's arrival (<=) line
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        deferred = (
            'smtp_balancer_deliveries_total{class="rate_limited",endpoint="out2",provider="google",'
            'status="deferred",tenant="shop.test"}'
        )
        assert deferred in page
        sent = [
            ln
            for ln in page.splitlines()
            if ln.startswith("smtp_balancer_deliveries_total{") and "sent" in ln
        ]
        assert sent, page
        garbage = 'smtp_balancer_feedback_log_lines_total{kind="garbage"}'
        assert not [ln for ln in page.splitlines() if ln.startswith(garbage) and float(ln.split()[-1]) > 0]
        assert 'smtp_balancer_feedback_log_lines_total{kind="delivery"}' in page
    finally:
        feedback.stop()
        exim.stop()
        exim_sink.stop()
