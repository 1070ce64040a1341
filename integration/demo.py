"""`make demo`: the whole system on this machine, start to finish, in about a minute.

It starts a private redis-server, a private Postfix (per-domain destinations,
like production), the policy daemon, the milter, the feedback daemon, and a
recording SMTP sink that plays the mailbox providers. Then it sends a realistic
mix and shows, from what the sink actually received:
  - the spread per endpoint and provider;
  - out3 stopping at its warm-up cap, the rest spilling to the other IPs;
  - Gmail throttling out2 (421-4.7.28), the feedback daemon suspending out2 for
    google only, google mail moving off out2 while other providers keep it;
  - transactional mail (submitted with sendmail, routed by the milter) kept on
    its own IP;
  - the `status` table;
  - an Exim 4 configured by `render exim` routed by the same daemon and state,
    its own feedback daemon reading Exim's log, and a Yahoo deferral there
    suspending the route for Postfix too;
  - a decision log line, and where the metrics are served.
Everything is torn down at the end, and nothing outside loopback is touched.
"""

from __future__ import annotations

import shutil
import smtplib
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import yaml

from integration.arf import NOT_MULTIPART, arf_report
from integration.configs import even_experiment
from integration.daemons import CLI, DaemonProcess, PolicydProcess, tcp_ready, unix_ready
from integration.exim import EXIM_SINK_HOST, EximError, EximInstance, exim_binary, exim_feedback
from integration.postfix import PostfixInstance, make_shared_dir
from integration.redis_server import RedisServer
from integration.sink import Sink, free_port
from integration.waits import MAIL_S, WaitTimeout, wait_until

IP_ENDPOINT = {"127.0.0.2": "out1", "127.0.0.3": "out2", "127.0.0.4": "out3", "127.0.0.5": "tx1"}
PROVIDER_OF = {
    "gmail.com": "google",
    "outlook.com": "microsoft",
    "hotmail.com": "microsoft",
    "yahoo.com": "yahoo",
    "icloud.com": "apple",
    "example.org": "other",
}
DOMAINS = list(PROVIDER_OF)
SENDERS = ["news@shop1.example", "deals@shop2.example", "digest@blog.example"]
GMAIL_421 = (
    "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating\r\n"
    "421 4.7.28 from your IP address. To protect our users from spam, mail sent from your IP "
    "address has been temporarily rate limited. - gsmtp"
)
YAHOO_TSS04 = (
    "421 4.7.0 [TSS04] Messages from 127.0.0.2 temporarily deferred due to unexpected volume or"
    " user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
)
OUT3_CAP = 60


def config(redis_url: str, base: Path, ports: dict[str, int]) -> dict[str, Any]:
    today = datetime.now(UTC).date().isoformat()
    return {
        "redis": {"url": redis_url},
        "decision": {"budget_ms": 200, "retry_after_ms": 500},
        "mx_lookup": {"enabled": False},  # the demo's domains live in a private hosts file
        "endpoints": {
            "out1": {"bind_address": "127.0.0.2", "helo_name": "out1.example.com"},
            "out2": {"bind_address": "127.0.0.3", "helo_name": "out2.example.com"},
            "out3": {
                "bind_address": "127.0.0.4",
                "helo_name": "out3.example.com",
                "warmup": {"start": today, "schedule": [{"daily": OUT3_CAP, "hourly": OUT3_CAP}, 200, 500]},
            },
            "tx1": {"bind_address": "127.0.0.5", "helo_name": "tx1.example.com"},
        },
        "pools": {
            "bulk": {
                "endpoints": [
                    {"endpoint": "out1", "weight": 1},
                    {"endpoint": "out2", "weight": 2},
                    {"endpoint": "out3", "weight": 1},
                ]
            },
            "transactional": {"endpoints": [{"endpoint": "tx1"}], "overflow": "pool:bulk"},
            # the same members with adaptive weights: the experiment's second arm (step 9)
            "bulk-adaptive": {
                "endpoints": [
                    {"endpoint": "out1", "weight": 1},
                    {"endpoint": "out2", "weight": 2},
                    {"endpoint": "out3", "weight": 1},
                ],
                "adaptive": True,
            },
        },
        "adaptive": {"window": "1m", "interval": 2, "min_attempts": 10},
        "experiments": [
            even_experiment("adaptive-vs-static", "bulk", {"static": "bulk", "adaptive": "bulk-adaptive"})
        ],
        "rules": [
            {"name": "transactional", "message_class": ["transactional"], "pool": "transactional"},
            {"name": "bulk", "pool": "bulk"},
        ],
        "policyd": {
            "listen": [f"inet:127.0.0.1:{ports['policy']}"],
            "metrics_listen": f"127.0.0.1:{ports['policy_metrics']}",
        },
        "milter": {
            "enabled": True,
            "listen": f"unix:{base}/milter/milter.sock",
            "postfix_maps_dir": str(base / "maps"),
            "metrics_listen": f"127.0.0.1:{ports['milter_metrics']}",
        },
        "feedback": {
            "log_file": str(base / "postfix" / "postfix.log"),
            "start_at": "beginning",
            "instance": "demo",
            "metrics_listen": f"127.0.0.1:{ports['feedback_metrics']}",
            "poll_interval_ms": 100,
            "state_interval": 2,
            # spam complaints above 1% of at least 20 delivered in an hour halve the route's share
            "rate_rules": [
                {
                    "name": "complaints",
                    "measure": "complained",
                    "above_percent": 1,
                    "recover_below_percent": 0.5,
                    "min_attempts": 20,
                    "window": "1h",
                    "action": "throttle",
                    "factor": 0.5,
                    "duration": "1h",
                }
            ],
            "complaints": {"keep_dir": str(base / "fbl")},
        },
        "tenants": ["shop1.example", "shop2.example"],
        # mail deferred on a route that becomes ineligible moves to another one
        "requeue": {
            "enabled": True,
            "table_listen": f"127.0.0.1:{ports['table']}",
            "table_metrics_listen": f"127.0.0.1:{ports['table_metrics']}",
            "postfix_config_dir": str(base / "postfix" / "etc"),
            "interval": 2,
            "instance": "demo",
            "metrics_listen": f"127.0.0.1:{ports['requeue_metrics']}",
        },
    }


def heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 72 - len(text)), flush=True)


def cli(config_path: Path, *args: str) -> str:
    out = subprocess.run([CLI, "-c", str(config_path), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"smtp-balancer {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def message(i: int, sender: str, rcpt: str, phase: str, bulk: bool) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = rcpt
    msg["Subject"] = f"demo {phase} {i}"
    msg["X-Demo-Phase"] = phase
    if bulk:
        msg["Precedence"] = "bulk"
        msg["List-Unsubscribe"] = f"<mailto:unsubscribe@{sender.partition('@')[2]}>"
    msg.set_content(f"message {i}\n")
    return msg


def send_bulk(port: int, count: int, start: int, phase: str) -> None:
    """Newsletters over SMTP: the policy daemon routes them from the envelope."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for i in range(start, start + count):
            sender, rcpt = SENDERS[i % len(SENDERS)], f"user{i}@{DOMAINS[i % len(DOMAINS)]}"
            smtp.send_message(message(i, sender, rcpt, phase, bulk=True), sender, [rcpt])


def send_transactional(postfix: PostfixInstance, count: int) -> None:
    """Receipts submitted by a local application with sendmail(1): the milter routes them."""
    for i in range(count):
        rcpt = f"buyer{i}@{DOMAINS[i % len(DOMAINS)]}"
        msg = message(i, "receipts@shop1.example", rcpt, "tx", bulk=False)
        msg["X-Mail-Class"] = "transactional"
        subprocess.run(
            ["sendmail", "-C", str(postfix.config_dir), "-f", "receipts@shop1.example", "--", rcpt],
            input=msg.as_bytes(),
            check=True,
            capture_output=True,
            timeout=30,
        )


def table(seen: Counter[tuple[str, str]], title: str) -> None:
    providers = sorted({p for _, p in seen} | {"google", "microsoft", "yahoo"})
    endpoints = sorted({e for e, _ in seen})
    print(f"  {title}")
    print(f"  {'endpoint':<9}" + "".join(f"{p:>11}" for p in providers) + f"{'total':>8}")
    for ep in endpoints:
        row = [seen[(ep, p)] for p in providers]
        print(f"  {ep:<9}" + "".join(f"{n:>11}" for n in row) + f"{sum(row):>8}")


def by_endpoint_provider(sink: Sink, phase: str) -> Counter[tuple[str, str]]:
    seen: Counter[tuple[str, str]] = Counter()
    for m in sink.messages:
        if m.header("X-Demo-Phase") == phase:
            domain = m.rcpt_tos[0].rpartition("@")[2]
            seen[(IP_ENDPOINT.get(m.peer_ip, m.peer_ip), PROVIDER_OF.get(domain, "other"))] += 1
    return seen


def metric_lines(port: int, names: tuple[str, ...]) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return [line for line in text.splitlines() if line.startswith(names) and not line.endswith(" 0.0")]


def run(base: Path, stack: list) -> None:
    heading(
        "starting a private Redis, Postfix, policy daemon, milter, feedback daemon, "
        "table and requeue daemons, and sink"
    )
    redis = RedisServer(base / "redis")
    redis.start()
    stack.append(redis.stop)
    rdb = redis.client()
    stack.append(rdb.close)
    sink = Sink()
    sink.start()
    stack.append(sink.stop)
    # the sink plays Gmail: it throttles 127.0.0.3 (out2), and only for gmail.com
    sink.script("127.0.0.3", "gmail.com", GMAIL_421)
    names = ("policy", "policy_metrics", "milter_metrics", "feedback_metrics", "smtpd")
    names += ("table", "table_metrics", "requeue_metrics")
    ports = {k: free_port() for k in names}
    config_path = base / "config.yaml"
    config_path.write_text(yaml.safe_dump(config(redis.url, base, ports), sort_keys=False))
    print(cli(config_path, "check").strip())
    cli(config_path, "render", "postfix", "--write-maps", str(base / "maps"))

    policyd = PolicydProcess(config_path, ports["policy"], base / "policyd.log")
    policyd.start()
    stack.append(policyd.stop)
    milter = DaemonProcess(
        "milter", config_path, base / "milter.log", unix_ready(base / "milter" / "milter.sock")
    )
    milter.start()
    stack.append(milter.stop)
    postfix = PostfixInstance(
        base / "postfix",
        smtpd_port=ports["smtpd"],
        sink_port=sink.port,
        master_cf_extra=cli(config_path, "render", "postfix", "--part", "master"),
        # with both enabled, the rendered main.cf has the policy daemon decide SMTP mail
        # and the milter local submissions (sendmail): no message is decided twice
        main_cf_extra=cli(config_path, "render", "postfix", "--part", "main"),
        domains=DOMAINS,
    )
    stack.append(postfix.stop)
    postfix.start()
    feedback = DaemonProcess(
        "feedback", config_path, base / "feedback.log", tcp_ready(ports["feedback_metrics"])
    )
    feedback.start()
    stack.append(feedback.stop)
    table_daemon = DaemonProcess("table", config_path, base / "table.log", tcp_ready(ports["table"]))
    table_daemon.start()
    stack.append(table_daemon.stop)
    requeue = DaemonProcess("requeue", config_path, base / "requeue.log", tcp_ready(ports["requeue_metrics"]))
    requeue.start()
    stack.append(requeue.stop)
    print(f"  Postfix smtpd on 127.0.0.1:{ports['smtpd']}; egress IPs 127.0.0.2-5; the sink on :{sink.port}")

    heading("1. 600 newsletters over SMTP: bulk pool out1:out2:out3 = 1:2:1, out3 warming")
    send_bulk(postfix.smtpd_port, 600, 0, "A")
    key = "{sb}:suspend:out2:google"
    wait_until(lambda: rdb.exists(key), 30, "the Gmail throttle")
    # the rule's first suspension lasts 15 min: its remaining TTL dates it to the millisecond
    suspended_at = time.monotonic() - (900_000 - rdb.pttl(key)) / 1000
    first_421 = sink.handler.first_refused_at[("127.0.0.3", "gmail.com")]
    wait_until(lambda: sum(by_endpoint_provider(sink, "A").values()) >= 550, MAIL_S, "phase 1 deliveries")
    a = by_endpoint_provider(sink, "A")
    table(a, "delivered, by the sink's view of source IP and provider:")
    print(f"  -> out3 stopped at its warm-up cap ({OUT3_CAP} today); the rest spilled to out1/out2 by weight")
    print(
        f"  -> Gmail answered 421-4.7.28 to out2; {suspended_at - first_421:.2f}s later the feedback "
        "daemon had suspended (out2, google):"
    )
    print("     " + rdb.get(key)[:150] + "...")
    refused_before = sink.handler.refused[("127.0.0.3", "gmail.com")]
    print(
        f"  -> gmail.com mail deferred on out2 before that ({refused_before} refusals so far) is moved"
        " by the requeue daemon: step 6"
    )

    heading("2. 600 more newsletters: google mail avoids out2, the others still use it")
    send_bulk(postfix.smtpd_port, 600, 1000, "B")
    wait_until(lambda: sum(by_endpoint_provider(sink, "B").values()) >= 600, MAIL_S, "phase 2 deliveries")
    b = by_endpoint_provider(sink, "B")
    table(b, "delivered:")
    others = sum(n for (ep, p), n in b.items() if ep == "out2" and p != "google")
    print(f"  -> out2 took {b[('out2', 'google')]} google messages and {others} for other providers")

    heading("3. 90 receipts submitted with sendmail: the milter routes class transactional to tx1")
    send_transactional(postfix, 90)
    wait_until(
        lambda: sum(by_endpoint_provider(sink, "tx").values()) >= 90, MAIL_S, "transactional deliveries"
    )
    table(by_endpoint_provider(sink, "tx"), "delivered:")

    heading("4. explain: where would the next gmail.com newsletter go, and why? (dry run)")
    print(cli(config_path, "explain", "--sender", "news@shop1.example", "--rcpt", "bob@gmail.com"))

    heading("5. smtp-balancer status")
    print(cli(config_path, "status"))

    heading("6. the gmail mail deferred on out2 leaves by another route, with Gmail still throttling out2")
    wait_until(postfix.queue_is_empty, MAIL_S, "the queue to drain")
    total_moved = int(
        sum(
            float(ln.split()[-1])
            for ln in metric_lines(ports["requeue_metrics"], ("smtp_balancer_requeue_moved",))
        )
    )

    def moved_lines() -> list[str]:
        return [ln for ln in (base / "requeue.log").read_text().splitlines() if "moved queue id" in ln]

    # info lines reach the log within a second
    moved = wait_until(lambda: (m,) if len(m := moved_lines()) >= total_moved else None, 10, "the log")[0]
    print(f"  the requeue daemon moved {len(moved)} message(s) off out2:")
    for line in moved[:2]:
        print("    " + line.split('msg="', 1)[-1][:150])
    # Postfix wrote each message's Message-ID with its first queue id: find the moved ones
    moved_ids = [ln.split("moved queue id ", 1)[1].split()[0] for ln in moved]
    arrived = [m for m in sink.messages if any(q in (m.header("Message-ID") or "") for q in moved_ids)]
    where = Counter(IP_ENDPOINT.get(m.peer_ip, m.peer_ip) for m in arrived)
    if arrived:
        last = max(m.at for m in arrived) - suspended_at
        print(f"  they arrived through {dict(where)}, the last {last:.1f}s after the suspension")
    refused = sink.handler.refused[("127.0.0.3", "gmail.com")]
    print(f"  the sink refused {refused} gmail.com attempts from out2, and still refuses them;")
    twice = sum(n - 1 for n in Counter((m.header("Subject"), m.rcpt_tos) for m in sink.messages).values())
    print(f"  queue empty: all {len(sink.messages)} messages delivered, none lost, {twice} delivered twice")
    with sink.handler.lock:
        sink.handler.scripted.clear()

    heading("7. an Exim server in the same fleet: `render exim`, the same daemon, the same Redis")
    rendered = base / "exim-rendered"
    cli(config_path, "render", "exim", "--write", str(rendered))
    exim_sink = Sink(EXIM_SINK_HOST)
    exim_sink.start()
    stack.append(exim_sink.stop)
    # the Exim host's provider view: Yahoo defers out1 ([TSS04]), in Exim's log only
    exim_sink.script("127.0.0.2", "yahoo.com", YAHOO_TSS04)
    exim = EximInstance(base / "exim", free_port(), rendered, EXIM_SINK_HOST, exim_sink.port)
    stack.append(exim.stop)
    exim.start()
    # the Exim host runs its own feedback daemon, on Exim's main log
    exim_host_feedback, _ = exim_feedback(config_path, exim, base, "exim")
    exim_host_feedback.start()
    stack.append(exim_host_feedback.stop)
    print(f"  Exim 4 on 127.0.0.1:{exim.smtp_port}, asking the policy daemon through ${{readsocket}};")
    print("  its own feedback daemon follows Exim's main log (feedback.log_format: exim)")
    send_bulk(exim.smtp_port, 120, 3000, "E")
    yahoo_key = "{sb}:suspend:out1:yahoo"
    wait_until(lambda: rdb.exists(yahoo_key), 30, "the Yahoo suspension from Exim's log")
    wait_until(lambda: sum(by_endpoint_provider(exim_sink, "E").values()) >= 120, 90, "Exim's deliveries")
    e = by_endpoint_provider(exim_sink, "E")
    table(e, "delivered by Exim:")
    print(
        f"  -> out3 still at its cap, and out2 took {e[('out2', 'google')]} google messages:"
        " the suspension Postfix's log caused holds for Exim too"
    )
    print("  -> Yahoo deferred out1 ([TSS04]) in Exim's log; the Exim host's feedback daemon suspended")
    print("     (out1, yahoo), and the yahoo mail Exim had deferred on out1 left by another route at")
    print(f"     its next retry: out1 delivered {e[('out1', 'yahoo')]} yahoo messages for Exim")
    send_bulk(postfix.smtpd_port, 60, 4000, "F")
    wait_until(lambda: sum(by_endpoint_provider(sink, "F").values()) >= 60, MAIL_S, "Postfix's deliveries")
    f = by_endpoint_provider(sink, "F")
    yahoo_elsewhere = sum(n for (ep, p), n in f.items() if p == "yahoo" and ep != "out1")
    print(
        f"  -> and Postfix, on the same Redis: out1 took {f[('out1', 'yahoo')]} of its next"
        f" {yahoo_elsewhere + f[('out1', 'yahoo')]} yahoo messages"
    )

    heading("8. spam complaints: ARF reports into `smtp-balancer fbl`, as a pipe transport hands them over")
    reports = [
        arf_report("127.0.0.3", mail_from="news@shop1.example", rcpt_to="user1@yahoo.com"),
        arf_report("127.0.0.3", mail_from="deals@shop2.example", rcpt_to="user2@yahoo.com"),
        NOT_MULTIPART,
    ]
    for raw in reports:
        out = subprocess.run([CLI, "-c", str(config_path), "fbl"], input=raw, capture_output=True, timeout=60)
        print("  " + out.stdout.decode().strip()[:170] + f"  (exit {out.returncode})")
    kept = [q.name.rpartition(".")[2] for q in (base / "fbl").iterdir()]
    print(f"  unusable reports are kept whole in {base / 'fbl'}: {kept}")
    prefix = ('smtp_balancer_complaints_total{endpoint="out2",provider="yahoo"',)
    lines = wait_until(lambda: metric_lines(ports["feedback_metrics"], prefix), 30, "the complaint metric")
    print("  every feedback daemon exports the fleet's complaints from Redis:")
    for line in lines:
        print("    " + line)
    status = cli(config_path, "status")
    print("  `smtp-balancer status`, its tenants part:")
    for line in status[status.index("tenants (") :].splitlines():
        print("  " + line)

    heading("9. an A/B experiment: adaptive weights against static ones, with out1 degraded for Microsoft")
    # the sink plays Microsoft busy on out1: half of out1's outlook.com and hotmail.com RCPTs
    for domain in ("outlook.com", "hotmail.com"):
        sink.script_share("127.0.0.2", domain, "451 4.3.2 Try again later", 0.6)

    def factor() -> str | None:
        value = rdb.get("{sb}:adaptive:out1:microsoft")
        return value if value and float(value.split()[0]) <= 0.2 else None

    # newsletters before the experiment, until the feedback daemons have seen enough of
    # out1's Microsoft deferrals to lower its adaptive factor (used by adaptive pools only)
    sent, deadline = 0, time.monotonic() + 120
    while not factor():
        if time.monotonic() > deadline:
            raise WaitTimeout("timed out after 120s waiting for out1's adaptive factor for Microsoft")
        send_bulk(postfix.smtpd_port, 100, 4000 + sent, "D")
        sent += 100
        time.sleep(1)
    print(f"  after {sent} newsletters: out1 x microsoft adaptive factor {factor()}")
    print("  " + cli(config_path, "experiment", "start", "adaptive-vs-static").strip())
    send_bulk(postfix.smtpd_port, 1000, 5000, "E")

    def decided() -> dict[str, int]:
        stats = "{sb}:expstats:adaptive-vs-static:"
        return {arm: int(rdb.hget(stats + arm, "decided") or 0) for arm in ("static", "adaptive")}

    # the deciders write each arm's count in batches: within 5 s of its decisions
    arms = wait_until(lambda: found if sum((found := decided()).values()) >= 1000 else None, 30, "1,000 arms")
    print(f"  1,000 newsletters, split by queue id: {arms}")
    wait_until(
        lambda: "defers less" in cli(config_path, "experiment", "report", "adaptive-vs-static"),
        90,
        "the experiment's verdict",
    )
    report = cli(config_path, "experiment", "report", "adaptive-vs-static")
    print("\n".join("  " + ln for ln in report.splitlines()))
    print(
        "  -> the adaptive arm gives out1 only its adaptive factor's share of Microsoft mail;"
        " the static arm kept sending a third of its Microsoft mail there"
    )
    sink.clear_scripts()
    cli(config_path, "experiment", "stop", "adaptive-vs-static")

    heading("10. one decision line from the policy daemon's log (logfmt; --log-format json also)")
    line = next(ln for ln in (base / "policyd.log").read_text().splitlines() if " msg=decision " in ln)
    print("  " + line)

    heading("11. metrics (Prometheus text format, scraped now)")
    for name, port, prefixes in (
        ("policy daemon", ports["policy_metrics"], ("smtp_balancer_decisions_total",)),
        ("milter", ports["milter_metrics"], ("smtp_balancer_milter_classified_total",)),
        (
            "feedback daemon",
            ports["feedback_metrics"],
            ("smtp_balancer_feedback_actions_total", "smtp_balancer_deliveries_total{"),
        ),
        ("requeue daemon", ports["requeue_metrics"], ("smtp_balancer_requeue_moved_total",)),
    ):
        print(f"  {name}: http://127.0.0.1:{port}/metrics")
        for line in metric_lines(port, prefixes)[:6]:
            print(f"    {line}")


def main() -> int:
    missing = [tool for tool in ("redis-server", "postfix", "unshare") if shutil.which(tool) is None]
    try:
        exim_binary()
    except EximError:
        missing.append("exim4 (unpacked)")
    if missing:
        print(f"demo: missing {', '.join(missing)}: run `make demo`, which installs them first")
        return 1
    base = make_shared_dir("smtp-balancer-demo-")
    stack: list = []
    keep = False
    try:
        run(base, stack)
    except WaitTimeout as exc:
        print(f"demo: {exc}; the logs are in {base}", file=sys.stderr)
        keep = True
        return 1
    finally:
        for stop in reversed(stack):
            try:
                stop()
            except Exception as exc:
                print(f"teardown: {exc}", file=sys.stderr)
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    print("\nDemo finished: every process it started is stopped and its files are removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
