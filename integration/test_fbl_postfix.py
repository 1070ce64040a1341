"""Spam complaints end to end: real Postfix pipes ARF reports sent to an FBL address into
``smtp-balancer fbl``; the complaint rate trips a rule, and Postfix's next mail avoids the IP."""

from __future__ import annotations

import smtplib
import urllib.request

import yaml

from integration.arf import NOT_MULTIPART, arf_report
from integration.postfix import make_shared_dir
from integration.unprivileged import unprivileged_cli
from integration.waits import MAIL_S, wait_until

OUT2 = "127.0.0.3"
COMPLAINT_RULE = {
    "name": "complaints",
    "measure": "complained",
    "above_percent": 1,
    "recover_below_percent": 0.5,
    "min_attempts": 5,
    "window": "1h",
    "action": "quarantine",
    "duration": "1h",
}


def sent_count(rdb, endpoint: str, provider: str) -> int:
    keys = rdb.keys(f"{{sb}}:outcomes:{endpoint}:{provider}:*")
    return sum(int(rdb.hget(k, "sent") or 0) for k in keys)


def test_reports_piped_by_postfix_are_counted_kept_and_act(mail_system) -> None:
    keep = make_shared_dir("sb-fbl-")
    keep.chmod(0o777)  # the pipe runs as nobody
    launcher_dir = make_shared_dir("sb-fbl-cli-")
    cli = unprivileged_cli(launcher_dir)
    extra = {
        "tenants": ["shop.test"],
        # only the tenants' mail is routed: the reports to fbl.test take Postfix's own transport
        "rules": [{"name": "shop", "sender_domain": ["shop.test"], "pool": "main"}],
        "feedback": {
            "state_interval": 1,
            "rate_rules": [COMPLAINT_RULE],
            "complaints": {"keep_dir": str(keep), "max_report_bytes": 20_000},
        },
    }
    ms = mail_system(extra, feedback=True, domains=["yahoo.com"])
    # the FBL address: a pipe transport, as the README shows it
    ms.postfix.master_cf_extra += (
        "\nfbl       unix  -       n       n       -       -       pipe\n"
        f"  flags=R user=nobody argv={' '.join(cli)} -c {ms.config_path} fbl\n"
    )
    ms.postfix.main_cf_extra += (
        "\ntransport_maps = inline:{fbl.test=fbl:}\nfbl_destination_recipient_limit = 1\n"
    )
    ms.postfix.write_config()
    ms.postfix.reload()
    ms.redis.socket.chmod(0o777)  # nobody reaches the test's Redis too
    try:
        assert (
            ms.send_many(
                40, threads=4, sender=lambda i: "news@shop.test", recipients=lambda i: [f"u{i}@yahoo.com"]
            )
            == []
        )
        ms.sink.wait_for(40, timeout=MAIL_S)
        wait_until(
            lambda: sum(sent_count(ms.rdb, ep, "yahoo") for ep in ("out1", "out2", "out3")) == 40,
            60,
            "40 sent",
        )
        out2_sent = sent_count(ms.rdb, "out2", "yahoo")
        assert out2_sent >= 5  # weight 2 of 4: fewer than 5 of 40 has probability < 1e-6

        reports = {
            "complaint": arf_report(OUT2, mail_from="bounce@bounces.shop.test"),
            "malformed": NOT_MULTIPART,
            "no_source_ip": arf_report(None),
            "non_utf8": arf_report(OUT2).replace(b"Source-IP: 127.0.0.3", b"Source-IP: \xff\xfe127"),
            "too_large": arf_report(OUT2) + b"X" * 60_000,
        }
        with smtplib.SMTP("127.0.0.1", ms.postfix.smtpd_port, timeout=30) as smtp:
            for raw in reports.values():
                smtp.sendmail("feedback@arf.mail.yahoo.com", ["fbl@fbl.test"], raw)

        def counted() -> dict[str, str] | None:
            totals = ms.rdb.hgetall("{sb}:fbl:totals")
            reports = sum(int(n) for k, n in totals.items() if k.startswith("report:"))
            return totals if reports == len(reports_sent) else None

        reports_sent = list(reports)
        totals = wait_until(counted, 60, "every report counted")
        assert totals == {
            "report:complaint": "1",
            "complaint:out2:yahoo:shop.test": "1",
            "report:malformed": "1",
            "report:no_source_ip": "2",
            "report:too_large": "1",
        }
        # nothing lost: every unusable report is kept whole, and Postfix delivered every one
        kept = sorted(p.name.rpartition(".")[2] for p in keep.iterdir())
        assert kept == ["malformed", "no_source_ip", "no_source_ip", "too_large"]
        (big,) = [p.read_bytes() for p in keep.iterdir() if p.name.endswith(".too_large")]
        assert b"Feedback-Type: abuse" in big and b"X" * 60_000 in b"".join(big.split())
        wait_until(ms.postfix.queue_is_empty, MAIL_S, "the reports to leave the queue")
        piped = [ln for ln in ms.postfix.log_text().splitlines() if "to=<fbl@fbl.test>" in ln]
        assert len(piped) == 5 and all("relay=fbl, " in ln and "status=sent" in ln for ln in piped), piped

        # 1 complaint of out2_sent delivered is above 1%: out2 is quarantined
        state = ms.rdb.hgetall("{sb}:endpoint:out2:state")
        assert state["state"] == "quarantined" and state["by"] == "feedback:complaints"
        assert f"of {out2_sent} delivered" in state["reason"]

        # the feedback daemon exports the fleet's complaints, and deliveries by tenant
        port = int(
            yaml.safe_load(ms.config_path.read_text())["feedback"]["metrics_listen"].rpartition(":")[2]
        )

        def page() -> str:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

        # one state round exports them all, from the totals as they were then: a round
        # that ran between two reports shows the complaint before the second no-Source-IP
        # report, so wait for a page that has every line
        lines = (
            'smtp_balancer_complaints_total{endpoint="out2",provider="yahoo",tenant="shop.test"} 1.0',
            'smtp_balancer_fbl_reports_total{result="no_source_ip"} 2.0',
        )
        text = wait_until(
            lambda: p if all(x in (p := page()) for x in lines) else None, 30, "the report metrics"
        )
        assert 'status="sent",tenant="shop.test"}' in text
        # the rule's action, as the state gauges show it
        quarantined = 'smtp_balancer_endpoint_state{endpoint="out2",state="quarantined"} 1.0'
        wait_until(lambda: quarantined in page(), 30, "the quarantine in the state gauges")

        # Postfix's next mail of the tenant avoids the quarantined IP
        before = len(ms.sink.messages)
        assert (
            ms.send_many(
                20, threads=2, sender=lambda i: "news@shop.test", recipients=lambda i: [f"v{i}@yahoo.com"]
            )
            == []
        )
        got = ms.sink.wait_for(before + 20, timeout=MAIL_S)[before:]
        assert len(got) == 20 and not [m for m in got if m.peer_ip == OUT2]
    finally:
        for d in (keep, launcher_dir):
            for p in d.iterdir():
                p.unlink()
            d.rmdir()
