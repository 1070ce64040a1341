"""Reputation exports on real Postfix (issue #38): a Postmaster Tools export that rates
out2 BAD suspends (out2, google) for the very next decision, so Gmail mail avoids out2
while Outlook mail still uses it; an SNDS IP-status row blocking out2 does the same
for Microsoft; importing the same files again leaves Redis as it was."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from integration.configs import ENDPOINT_IP
from integration.daemons import CLI, decision_lines
from integration.waits import MAIL_S, wait_until
from smtp_balancer.clock import SYSTEM

DOMAINS = ["gmail.com", "outlook.com", "yahoo.com"]
OUT2 = ENDPOINT_IP["out2"]
N = 120  # per round: 40 per domain; out2's weight share is a half (1:2:1 -> out2 2 of 4)


def imported(config: Path, *files: Path) -> dict:
    out = subprocess.run(
        [CLI, "-c", str(config), "reputation", "import", *map(str, files), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def via_out2(messages, domain: str) -> int:
    return sum(1 for m in messages if m.peer_ip == OUT2 and m.rcpt_tos[0].endswith("@" + domain))


def state(rdb) -> dict:
    """What an import writes: records, suspensions, throttles, strikes."""
    keys = [
        k
        for p in ("reputation", "domainrep", "suspend", "throttle", "strikes")
        for k in rdb.scan_iter(f"{{sb}}:{p}:*")
    ]
    return {k: (rdb.dump(k), rdb.pexpiretime(k)) for k in sorted(keys)}


def test_postmaster_and_snds_exports_take_out2_away_from_their_provider_only(mail_system, tmp_path):
    ms = mail_system(domains=DOMAINS)
    rcpt = lambda i: [f"u{i}@{DOMAINS[i % 3]}"]  # noqa: E731
    day = datetime.fromtimestamp(SYSTEM.wall(), UTC).date()  # the daemons' (test) clock's day
    postmaster = tmp_path / "trafficStats.json"
    postmaster.write_text(
        json.dumps(
            {
                "name": f"domains/shop.test/trafficStats/{day:%Y%m%d}",
                "ipReputations": [
                    {
                        "reputation": "HIGH",
                        "ipCount": "2",
                        "sampleIps": [ENDPOINT_IP["out1"], ENDPOINT_IP["out3"]],
                    },
                    {"reputation": "BAD", "ipCount": "1", "sampleIps": [OUT2]},
                ],
                "domainReputation": "MEDIUM",
            }
        )
    )
    snds = tmp_path / "ipStatus.csv"
    snds.write_bytes(
        f"{OUT2},{OUT2},Yes,Blocked due to user complaints or other evidence of spamming\r\n".encode()
    )

    assert ms.send_many(N, threads=4, recipients=rcpt) == []
    before = ms.sink.wait_for(N, timeout=MAIL_S)
    assert via_out2(before, "gmail.com") > 0  # out2 took Gmail mail until now

    report = imported(ms.config_path, postmaster)
    (action,) = report["actions"]
    assert (action["rule"], action["endpoint"], action["provider"], action["outcome"]) == (
        "google-ip-bad", "out2", "google", "acted",
    )  # fmt: skip
    assert ms.send_many(N, threads=4, recipients=rcpt, start=N) == []
    after_google = ms.sink.wait_for(2 * N, timeout=MAIL_S)[N:]
    assert via_out2(after_google, "gmail.com") == 0
    assert via_out2(after_google, "outlook.com") > 0  # 40 messages at a half: none has p < 1e-12

    report = imported(ms.config_path, snds)
    assert [(a["rule"], a["provider"]) for a in report["actions"]] == [("snds-blocked", "microsoft")]
    assert ms.send_many(N, threads=4, recipients=rcpt, start=2 * N) == []
    after_both = ms.sink.wait_for(3 * N, timeout=MAIL_S)[2 * N :]
    assert via_out2(after_both, "gmail.com") == via_out2(after_both, "outlook.com") == 0
    assert via_out2(after_both, "yahoo.com") > 0
    reason = ms.rdb.get("{sb}:suspend:out2:microsoft")
    assert reason.startswith(f"reputation rule snds-blocked: snds blocked yes for {OUT2} (out2) on {day}")

    written = state(ms.rdb)
    again = imported(ms.config_path, postmaster, snds)
    assert again["changed"] == 0 and again["actions"] == []
    assert state(ms.rdb) == written


def test_a_domains_spam_rate_moves_its_tenant_to_a_quarantine_pool(mail_system, tmp_path):
    """Postmaster Tools API v2: shop.test's spam rate over 0.2% moves its new mail to the
    `quarantine` pool (out3 only) within a second (the deciders' read), while news.test's
    mail keeps its pool; `tenant release` moves it back."""
    quarantine = {"endpoints": [{"endpoint": "out3", "weight": 1}]}
    rule = {
        "name": "spam-quarantine",
        "source": "postmaster",
        "signal": "spam_ratio",
        "above": 0.2,
        "action": "move_tenant",
        "pool": "quarantine",
        "duration": "1h",
    }
    ms = mail_system(
        {
            "tenants": ["shop.test", "news.test"],
            "pools": {"quarantine": quarantine},
            "reputation": {"rules": [rule]},
        }
    )
    day = datetime.fromtimestamp(SYSTEM.wall(), UTC).date()
    export = tmp_path / "domainStats.json"
    stat = {
        "name": "domains/shop.test/domainStats/x1",
        "metric": "SPAM_RATE",
        "value": {"doubleValue": 0.0025},
        "date": {"year": day.year, "month": day.month, "day": day.day},
    }
    export.write_text(json.dumps({"domainStats": [stat], "nextPageToken": ""}))
    shop = lambda i: f"app{i % 3}@shop.test"  # noqa: E731
    news = lambda i: "letters@news.test"  # noqa: E731

    report = imported(ms.config_path, export)
    assert [(a["rule"], a["tenant"], a["pool"], a["outcome"]) for a in report["actions"]] == [
        ("spam-quarantine", "shop.test", "quarantine", "acted")
    ]
    wait_until(
        lambda: (
            "tenant shop.test moved: its new mail goes to pool quarantine" in ms.policyd.log_path.read_text()
        ),
        30,
        "the policy daemon to read the move",
    )
    assert ms.send_many(40, threads=4, sender=shop) == []
    assert ms.send_many(40, threads=4, sender=news, start=40) == []
    got = ms.sink.wait_for(80, timeout=MAIL_S)
    shop_ips = {m.peer_ip for m in got if m.mail_from.endswith("@shop.test")}
    news_ips = {m.peer_ip for m in got if m.mail_from.endswith("@news.test")}
    assert shop_ips == {ENDPOINT_IP["out3"]}
    assert len(news_ips) > 1  # 40 messages over 1:2:1 all on one endpoint: p < 1e-11
    lines = [line for line in decision_lines(ms.policyd.log_path) if line.get("sender_domain") == "shop.test"]
    assert lines and {(d["pool"], d["rule"]) for d in lines} == {("quarantine", "all")}

    out = subprocess.run(
        [
            CLI,
            "-c",
            str(ms.config_path),
            "tenant",
            "release",
            "shop.test",
            "--postfix-dir",
            str(ms.postfix.config_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "tenant shop.test released" in out.stdout, out
    wait_until(
        lambda: "tenant shop.test moved back" in ms.policyd.log_path.read_text(), 30, "the move lifted"
    )
    assert ms.send_many(40, threads=4, sender=shop, start=80) == []
    back = ms.sink.wait_for(120, timeout=MAIL_S)[80:]
    assert len({m.peer_ip for m in back}) > 1
