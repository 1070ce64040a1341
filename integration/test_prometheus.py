"""A real Prometheus scrapes the real daemons while mail flows; every dashboard panel must show data."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
import yaml

from integration.arf import report_about
from integration.configs import even_experiment
from integration.daemons import CLI
from integration.dashboard import dashboard_builder
from integration.prometheus_server import PrometheusServer
from integration.sink import free_port
from integration.waits import MAIL_S, WaitTimeout, wait_until
from smtp_balancer.clock import utc_now

DOMAINS = ["gmail.com", "yahoo.com", "outlook.com"]
BULK = {"Precedence": "bulk", "List-Unsubscribe": "<mailto:u@shop.test>"}
GMAIL_421 = "421-4.7.28 unusual rate of unsolicited mail\r\n421 4.7.28 from your IP address - gsmtp"


def test_every_panel_expression_returns_series_from_a_real_prometheus(mail_system, dns, tmp_path) -> None:
    today = utc_now().date().isoformat()
    dns.set("4.0.0.127.bl.test", ["127.0.0.2"])
    relay_sink_port = free_port()
    ms = mail_system(
        {
            "endpoints": {
                "out1": {"warmup": {"start": today, "schedule": [100_000]}},
                "out3": {"public_ip": "127.0.0.4"},
                "relay1": {
                    "kind": "relay",
                    "nexthop": f"127.0.0.1:{relay_sink_port}",
                    "bind_address": "127.0.0.6",
                },
            },
            # an adaptive pool (the adaptive factor panel) and an experiment (the arm panels)
            "pools": {"main": {"adaptive": True}, "other": {"endpoints": [{"endpoint": "out1"}]}},
            "adaptive": {"interval": 1, "min_attempts": 5},
            "experiments": [even_experiment("ab", "all", {"a": "main", "b": "other"})],
            "tenants": ["shop.test"],  # the senders' domain: the tenant spam rate panel
            "feedback": {
                "state_interval": 1,
                "dnsbl": {"zones": [{"zone": "bl.test"}], "nameservers": [dns.address], "interval": 1},
                "probes": {"interval": 1},
            },
        },
        milter=True,
        feedback=True,
        requeue=True,  # the gmail mail deferred on out2 before the suspension moves
        domains=DOMAINS,
    )
    ms.sink.script("127.0.0.3", "gmail.com", GMAIL_421)  # a throttle: deferrals, a suspension
    ms.sink.script("127.0.0.2", "yahoo.com", "550 5.1.1 no such user")  # bounces
    config = yaml.safe_load(ms.config_path.read_text())
    targets = {
        "smtp-balancer-policyd": f"127.0.0.1:{ms.metrics_port}",
        "smtp-balancer-milter": config["milter"]["metrics_listen"],
        "smtp-balancer-feedback": config["feedback"]["metrics_listen"],
        "smtp-balancer-table": config["requeue"]["table_metrics_listen"],
        "smtp-balancer-requeue": config["requeue"]["metrics_listen"],
    }

    # each live exposition passes promtool's own lint
    for job, target in targets.items():
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as r:
            text = r.read()
        out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60)
        assert out.returncode == 0, f"{job}: {out.stdout.decode()}{out.stderr.decode()}"

    subprocess.run(
        [CLI, "-c", str(ms.config_path), "experiment", "start", "ab"], check=True, capture_output=True
    )
    prom = PrometheusServer(tmp_path / "prometheus", free_port(), targets)
    prom.start()
    try:
        errors = ms.send_many(
            240,
            threads=4,
            recipients=lambda i: [f"u{i}@{DOMAINS[i % 3]}"],
            headers=lambda i: BULK if i % 2 else {},
        )
        assert errors == []
        # the milter decides local submissions (the policy daemon has the SMTP mail)
        for i in range(12):
            ms.sendmail(
                "app@shop.test", [f"s{i}@{DOMAINS[i % 3]}"], 10_000 + i, headers=BULK if i % 2 else {}
            )
        wait_until(lambda: ms.rdb.exists("{sb}:suspend:out2:google"), 30, "the gmail suspension")
        wait_until(ms.postfix.queue_is_empty, MAIL_S, "the deferred gmail mail to move")
        wait_until(lambda: prom.query('up{job=~"smtp-balancer.*"} == 1'), 30, "the first scrapes")
        # a spam complaint about a message out2 delivered to yahoo (so in arm a), as a
        # pipe transport would hand it over
        yahoo = [m for m in ms.sink.messages if m.peer_ip == "127.0.0.3" and "@yahoo.com" in m.rcpt_tos[0]]
        fbl = subprocess.run(
            [CLI, "-c", str(ms.config_path), "fbl"],
            input=report_about(yahoo[0]),
            capture_output=True,
            timeout=60,
        )
        assert fbl.returncode == 0 and fbl.stdout.startswith(b"complaint out2/yahoo"), fbl
        assert b"; experiment ab arm a" in fbl.stdout, fbl
        complained = 'max(smtp_balancer_complaints_total{endpoint="out2", provider="yahoo"}) == 1'
        wait_until(lambda: prom.query(complained), 30, "the complaint scraped")
        # SNDS rates out1 GREEN today: the reputation panel's level
        snds = tmp_path / "snds-data.csv"
        day = utc_now().strftime("%m/%d/%Y")
        snds.write_text(f"127.0.0.2,{day} 12:00 AM,{day} 11:59 PM,10,10,10,GREEN,< 0.1%,,,0,,,\r\n")
        subprocess.run(
            [CLI, "-c", str(ms.config_path), "reputation", "import", str(snds)],
            check=True,
            capture_output=True,
        )
        level = 'min(smtp_balancer_reputation{endpoint="out1", provider="microsoft", source="snds"}) == 3'
        wait_until(lambda: prom.query(level), 30, "the reputation level scraped")
        # Postmaster Tools v2 reports shop.test's spam rate today: the tenant's reported rate panel
        now = utc_now()
        stat = {
            "name": "domains/shop.test/domainStats/1",
            "metric": "SPAM_RATE",
            "value": {"doubleValue": 0.0008},
            "date": {"year": now.year, "month": now.month, "day": now.day},
        }
        postmaster = tmp_path / "domainStats.json"
        postmaster.write_text(json.dumps({"domainStats": [stat]}))
        subprocess.run(
            [CLI, "-c", str(ms.config_path), "reputation", "import", str(postmaster)],
            check=True,
            capture_output=True,
        )
        reported = (
            'max(smtp_balancer_tenant_reported_spam_rate{tenant="shop.test", provider="google"}) == 0.0008'
        )
        wait_until(lambda: prom.query(reported), 30, "the tenant's reported spam rate scraped")

        def panels_without_data() -> list[str]:
            empty = []
            for title, expr in dashboard_builder().expressions():
                promql = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
                if not prom.query(promql):
                    empty.append(f"{title}: {promql}")
            return empty

        # a rate needs two scrapes after the traffic: wait for them, however slow the host
        try:
            wait_until(lambda: not panels_without_data(), 60, "data in every panel", step=1)
        except WaitTimeout:
            pytest.fail("panels without data:\n" + "\n".join(panels_without_data()))
        # and the data is what happened
        assert prom.query('smtp_balancer_endpoint_suspended{endpoint="out2", provider="google"} == 1')
        assert prom.query('smtp_balancer_dnsbl_listed{endpoint="out3", zone="bl.test"} == 1')
    finally:
        prom.stop()
