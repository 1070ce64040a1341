"""The tenant guard on real Exim (issue #38): Exim asks the policy daemon once, at
DATA, so a held tenant's answer keeps its route and says HOLD-TENANT after it; the
rendered ACL freezes the message (``control = freeze``). `tenant release` thaws the
tenant's frozen messages, which leave on their routes at the next queue run, while
messages Exim froze for its own reasons stay frozen."""

from __future__ import annotations

import subprocess

from integration.configs import ENDPOINT_IP
from integration.daemons import run_cli
from integration.exim import exim_binary
from integration.submit import build_message
from integration.waits import MAIL_S, wait_until
from smtp_balancer.requeue.exim_queue import EximQueue


def test_a_held_tenants_mail_is_frozen_with_its_route_and_release_thaws_it(exim_system):
    es = exim_system({"tenants": ["shop.test"]})
    config = str(es.config_path)
    queue = EximQueue(str(exim_binary()), str(es.exim.config_file))
    held = run_cli(config, "tenant", "hold", "shop.test", "--for", "1h", "--reason", "by hand")
    assert held.returncode == 0, held.stderr
    wait_until(
        lambda: "tenant shop.test held" in es.policyd.log_path.read_text(),
        30,
        "the policy daemon to read the hold",
    )
    shop = lambda i: f"app{i % 2}@shop.test"  # noqa: E731
    other = lambda i: "letters@news.test"  # noqa: E731
    assert es.send_many(6, threads=2, sender=shop) == []
    assert es.send_many(5, threads=2, sender=other, start=6) == []
    # a local submission (exim -bm: acl_not_smtp = sb_route_local) is frozen the same way
    local = build_message(11, "app7@shop.test", ["local@example.test"], "local")
    es.exim.submit_local("app7@shop.test", ["local@example.test"], local.as_bytes())
    wait_until(lambda: len(queue.frozen()) == 7, MAIL_S, "shop.test's 7 messages frozen in Exim's queue")
    got = es.sink.wait_for(5, timeout=MAIL_S)
    assert {m.mail_from for m in got} == {"letters@news.test"}
    assert {sender.rpartition("@")[2] for _, sender in queue.frozen()} == {"shop.test"}
    assert es.exim.log_text().count("smtp-balancer: tenant held, message frozen") == 7

    # a message frozen by hand, of another sender, is the postmaster's: release leaves it
    exim = [str(exim_binary()), "-C", str(es.exim.config_file)]
    subprocess.run(
        [*exim, "-odq", "-f", "postmaster@news.test", "--", "u@example.test"],
        input=b"Subject: kept\n\nfrozen by hand\n",
        check=True,
        timeout=60,
    )
    (kept,) = [i for i, sender in queue.all() if sender == "postmaster@news.test"]
    subprocess.run([*exim, "-Mf", kept], check=True, capture_output=True, timeout=60)

    out = run_cli(
        config,
        "tenant",
        "release",
        "shop.test",
        "--exim",
        str(exim_binary()),
        "--exim-config",
        str(es.exim.config_file),
    )
    assert out.returncode == 0, out.stderr
    assert "tenant shop.test released" in out.stdout
    assert "7 frozen messages of shop.test thawed" in out.stdout, out.stdout
    got = es.sink.wait_for(12, timeout=MAIL_S)
    released = [m for m in got[5:] if m.mail_from.endswith("@shop.test")]
    assert len(released) == 7 and queue.frozen() == [(kept, "postmaster@news.test")]
    # each on the route the policy daemon gave it at DATA, kept through the freeze
    assert {m.peer_ip for m in released} <= set(ENDPOINT_IP.values())
    assert sorted(int(m.header("X-Test-Seq")) for m in got) == list(range(12)), "lost or twice"
