"""The tenant guard on real Postfix (issue #38): a tenant whose spam complaints pass
0.3% of what it delivered is held. Its new mail goes to Postfix's hold queue (the
policy daemon answers HOLD at RCPT) while other tenants' mail flows; `tenant release`
lets it go, on the route the policy daemon chose, and nothing is lost."""

from __future__ import annotations

import json
import subprocess

from integration.arf import report_about
from integration.configs import ENDPOINT_IP
from integration.daemons import CLI, run_cli
from integration.waits import MAIL_S, wait_until

N = 100  # per tenant: one complaint is 1%


def sent_by(rdb, tenant: str) -> int:
    return sum(int(rdb.hget(k, "sent") or 0) for k in rdb.scan_iter(f"{{sb}}:tenant:{tenant}:*"))


def held_ids(config_dir: str) -> list[str]:
    out = subprocess.run(["postqueue", "-c", config_dir, "-j"], capture_output=True, text=True, check=True)
    return [
        e["queue_id"] for line in out.stdout.splitlines() if (e := json.loads(line))["queue_name"] == "hold"
    ]


def test_a_tenant_over_the_complaint_ceiling_is_held_and_released(mail_system, tmp_path):
    hold = {"above_percent": 0.3, "min_delivered": 50, "duration": "1h"}
    ms = mail_system(
        {
            "tenants": ["shop.test", "news.test"],
            "feedback": {"complaints": {"keep_dir": str(tmp_path / "fbl"), "tenant_hold": hold}},
        },
        feedback=True,
    )
    shop = lambda i: f"app{i % 3}@shop.test"  # noqa: E731
    news = lambda i: "letters@news.test"  # noqa: E731
    assert ms.send_many(N, threads=4, sender=shop) == []
    assert ms.send_many(N, threads=4, sender=news, start=N) == []
    first = ms.sink.wait_for(2 * N, timeout=MAIL_S)
    wait_until(lambda: sent_by(ms.rdb, "shop.test") >= N, MAIL_S, "shop.test's deliveries counted")

    # one spam complaint about a shop.test message: 1% of 100, over 0.3%
    reported = next(m for m in first if m.mail_from.endswith("@shop.test"))
    fbl = subprocess.run(
        [CLI, "-c", str(ms.config_path), "fbl"], input=report_about(reported), capture_output=True, timeout=60
    )
    assert fbl.returncode == 0, fbl.stderr
    assert b"tenant shop.test held: 1 complaints of 100 delivered in 24 h (1.00%)" in fbl.stdout, fbl.stdout
    wait_until(
        lambda: "tenant shop.test held" in ms.policyd.log_path.read_text(),
        30,
        "the policy daemon to read the hold",
    )

    # shop.test's new mail waits in the hold queue; news.test's flows
    config_dir = str(ms.postfix.config_dir)
    assert ms.send_many(10, threads=2, sender=shop, start=2 * N) == []
    assert ms.send_many(10, threads=2, sender=news, start=2 * N + 10) == []
    wait_until(lambda: len(held_ids(config_dir)) == 10, MAIL_S, "shop.test's 10 messages in the hold queue")
    after = ms.sink.wait_for(2 * N + 10, timeout=MAIL_S)[2 * N :]
    assert {m.mail_from.rpartition("@")[2] for m in after} == {"news.test"}

    out = subprocess.run(
        [CLI, "-c", str(ms.config_path), "tenant", "release", "shop.test", "--postfix-dir", config_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "tenant shop.test released" in out.stdout
    assert "10 held messages of shop.test released from the hold queue" in out.stdout
    got = ms.sink.wait_for(2 * N + 20, timeout=MAIL_S)
    released = [m for m in got[2 * N :] if m.mail_from.endswith("@shop.test")]
    assert len(released) == 10 and held_ids(config_dir) == []
    # each on the route the policy daemon gave it before the hold
    assert {m.peer_ip for m in released} <= set(ENDPOINT_IP.values())
    seqs = [int(m.header("X-Test-Seq")) for m in got]
    assert sorted(seqs) == list(range(2 * N + 20)), "lost or twice"


def test_the_milter_quarantines_a_held_tenants_mail_and_release_delivers_it(mail_system):
    ms = mail_system({"tenants": ["shop.test"]}, policy=False, milter=True)
    config, config_dir = str(ms.config_path), str(ms.postfix.config_dir)
    held = run_cli(config, "tenant", "hold", "shop.test", "--for", "1h", "--reason", "by hand")
    assert held.returncode == 0, held.stderr
    wait_until(
        lambda: "tenant shop.test held" in ms.milter.log_path.read_text(), 30, "the milter to read the hold"
    )
    ms.send("app@shop.test", ["u1@example.test"], seq=1)
    ms.send("app@elsewhere.test", ["u2@example.test"], seq=2)
    (other,) = ms.sink.wait_for(1, timeout=MAIL_S)
    assert other.mail_from == "app@elsewhere.test"
    wait_until(lambda: len(held_ids(config_dir)) == 1, MAIL_S, "shop.test's message in the hold queue")
    out = subprocess.run(
        [CLI, "-c", config, "tenant", "release", "shop.test", "--postfix-dir", config_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "1 held message of shop.test released" in out.stdout, out
    got = ms.sink.wait_for(2, timeout=MAIL_S)
    assert got[1].mail_from == "app@shop.test" and got[1].peer_ip in set(ENDPOINT_IP.values())
    assert held_ids(config_dir) == []
