"""Moving queued mail off an ineligible route, on real Postfix (issue #16).

The sink throttles gmail.com on out2 for longer than each test lasts, so gmail
mail deferred on out2 could only leave by being moved. Postfix retries every
30 s here: "within one retry interval" is measured against that.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from collections import Counter

from integration.configs import ENDPOINT_IP, even_experiment
from integration.daemons import CLI
from integration.fixtures import arm_record_of
from integration.sink import Received
from integration.test_feedback_postfix import GMAIL_421
from integration.waits import MAIL_S, wait_until
from smtp_balancer.clock import utc_now

DOMAINS = ["gmail.com", "yahoo.com", "outlook.com"]
RETRY_S = 30
SUSPENSION = "{sb}:suspend:out2:google"


def slow_retries(ms) -> None:
    """Retries every RETRY_S: a message that leaves sooner was moved, not retried."""
    pf = ms.postfix
    names = ("minimal_backoff_time", "maximal_backoff_time", "queue_run_delay")
    times = [f"{name}={RETRY_S}s" for name in names]
    subprocess.run(["postconf", "-c", str(pf.config_dir), "-e", *times], check=True)
    pf.reload()


NAME_OF = {ip: name for name, ip in ENDPOINT_IP.items()}


def counts_reach(ms, expected: dict[str, int]) -> None:
    """Each endpoint's day counter equals what left by it. The deciders write uncapped
    counts in batches, at least once a second: wait for them, up to 30 s."""
    keys = {ep: day_key(ms, ep) for ep in ENDPOINT_IP}

    def counted() -> dict[str, int]:
        return {ep: int(ms.rdb.hget(key, "total") or 0) for ep, key in keys.items()}

    expected = {ep: expected.get(ep, 0) for ep in ENDPOINT_IP}
    wait_until(lambda: counted() == expected, 30, f"the day counters to equal {expected}")


def day_key(ms, endpoint: str) -> str:
    """Today's day counter in the daemons' (test) clock: the CLI's status shows the same."""
    status = subprocess.run(
        [CLI, "-c", str(ms.config_path), "status"], capture_output=True, text=True, check=True
    ).stdout
    day = status.split(" at ", 1)[1][:10].replace("-", "")
    return f"{{sb}}:count:{endpoint}:day:{day}"


def requeue_metrics(ms) -> int:
    import yaml

    return int(yaml.safe_load(ms.config_path.read_text())["requeue"]["metrics_listen"].rpartition(":")[2])


def moved_total(ms) -> int:
    page = (
        urllib.request.urlopen(f"http://127.0.0.1:{requeue_metrics(ms)}/metrics", timeout=10).read().decode()
    )
    prefix = "smtp_balancer_requeue_moved_total{"
    return int(sum(float(line.split()[-1]) for line in page.splitlines() if line.startswith(prefix)))


def moved_lines(ms) -> list[str]:
    return [line for line in (ms.base / "requeue.log").read_text().splitlines() if "moved queue id" in line]


def per_recipient(messages: list[Received]) -> Counter[str]:
    return Counter(r for m in messages for r in m.rcpt_tos)


def deferred_on_out2(ms) -> int:
    log = ms.postfix.log_text()
    return sum("postfix/out2/smtp" in line and "status=deferred" in line for line in log.splitlines())


def test_throttled_gmail_mail_leaves_out2_at_once_and_yahoo_stays(mail_system) -> None:
    # an experiment whose arms route alike: moved mail keeps its arm under its new queue id
    experiment = even_experiment("ab", "all", {"a": "main", "b": "main"})
    ms = mail_system({"experiments": [experiment]}, domains=DOMAINS, feedback=True, requeue=True)
    cli(ms, "experiment", "start", "ab")
    slow_retries(ms)
    out2 = ENDPOINT_IP["out2"]
    ms.sink.script(out2, "gmail.com", GMAIL_421)

    def alternate(i: int) -> list[str]:
        return [f"u{i}@{'gmail.com' if i % 2 == 0 else 'yahoo.com'}"]

    assert ms.send_many(60, threads=4, recipients=alternate, tag=lambda i: "p1") == []
    wait_until(lambda: ms.rdb.exists(SUSPENSION), MAIL_S, "the (out2, google) suspension")
    suspended_at = time.monotonic()
    gmail = {f"u{i}@gmail.com" for i in range(0, 60, 2)}
    yahoo = {f"u{i}@yahoo.com" for i in range(1, 60, 2)}
    # every gmail message arrives within one retry interval of the suspension
    wait_until(lambda: gmail <= set(per_recipient(ms.sink.messages)), RETRY_S, "every gmail message")
    took = time.monotonic() - suspended_at
    wait_until(lambda: yahoo <= set(per_recipient(ms.sink.messages)), MAIL_S, "every yahoo message")

    got = ms.sink.messages
    counts = per_recipient(got)
    assert all(counts[a] == 1 for a in gmail | yahoo), {a: n for a, n in counts.items() if n != 1}
    assert not [m for m in got if m.peer_ip == out2 and m.rcpt_tos[0].endswith("@gmail.com")]
    # info lines are buffered for up to a second: wait for the daemon's to be written
    moved_metric = wait_until(lambda: moved_total(ms), 10, "the moved metric")
    moved = wait_until(
        lambda: moved_lines(ms) if len(moved_lines(ms)) >= moved_metric else [], 10, "log lines"
    )
    assert len(moved) == moved_metric, moved
    assert all("from out2" in line and "google" in line for line in moved), moved
    assert deferred_on_out2(ms) >= len(moved)  # each moved message had been deferred on out2
    print(f"{len(moved)} messages moved; the last gmail message arrived {took:.1f}s after the suspension")

    # out2 keeps serving yahoo: new mail, and nothing for yahoo was moved
    assert ms.send_many(40, threads=4, recipients=lambda i: [f"n{i}@yahoo.com"], tag=lambda i: "p2") == []
    wait_until(
        lambda: len([m for m in ms.sink.messages if m.header("X-Test-Tag") == "p2"]) >= 40, MAIL_S, "p2"
    )
    assert sum(m.peer_ip == out2 for m in ms.sink.messages if m.header("X-Test-Tag") == "p2") >= 5
    assert not any("yahoo" in line for line in moved)

    # each message counts once, on the route it left by: out2 gave back what moved
    wait_until(ms.postfix.queue_is_empty, MAIL_S, "an empty queue")
    left_by = dict(Counter(NAME_OF[m.peer_ip] for m in ms.sink.messages))
    counts_reach(ms, left_by)

    # the moves are counted in the metric, and status shows queued mail per route
    page = (
        urllib.request.urlopen(f"http://127.0.0.1:{requeue_metrics(ms)}/metrics", timeout=10).read().decode()
    )
    moved_metric = sum(
        float(line.split()[-1])
        for line in page.splitlines()
        if line.startswith("smtp_balancer_requeue_moved_total{")
    )
    assert moved_metric == len(moved), page
    status = subprocess.run(
        [CLI, "-c", str(ms.config_path), "status"], capture_output=True, text=True, check=True
    ).stdout
    assert "queued (deferred messages bound to each endpoint, 1 host):\n  out1 0, out2 0, out3 0" in status, (
        status
    )

    # pickup logs each moved message's new queue id with orig_id=: its arm record follows,
    # so every delivered message counts in its arm, moved or not
    moves = re.findall(r"postfix/pickup\[\d+\]: (\w+): .* orig_id=(\w+)", ms.postfix.log_text())
    assert moves and len(moves) == len(moved), moves
    arm = [(arm_record_of(ms.rdb, new), arm_record_of(ms.rdb, old)) for new, old in moves]
    assert all(old.rsplit(" ", 1)[0] in ("ab a", "ab b") for _, old in arm), arm  # and the decision time
    wait_until(
        lambda: all(arm_record_of(ms.rdb, new) == arm_record_of(ms.rdb, old) for new, old in moves),
        MAIL_S,  # the feedback daemon asks a late record again for MOVE_GRACE_S (60 s)
        "the moved messages' arm records",
    )

    def sent_per_arm() -> int:
        return sum(int(ms.rdb.hget(f"{{sb}}:expstats:ab:{arm}", "sent") or 0) for arm in ("a", "b"))

    wait_until(lambda: sent_per_arm() == 100, MAIL_S, "every delivery counted in its arm")


def cli(ms, *args: str) -> str:
    return subprocess.run(
        [CLI, "-c", str(ms.config_path), *args], capture_output=True, text=True, check=True
    ).stdout


def deferred_count(ms) -> int:
    return sum(1 for p in (ms.postfix.queue_dir / "deferred").rglob("*") if p.is_file())


def queue_everything_on_out2(ms, count: int, recipients, tag: str) -> None:
    """All new mail to out2 (the others at weight 0), where the sink refuses it with
    421: ``count`` messages end up deferred, bound to out2 by their FILTER."""
    cli(ms, "weight", "main", "out1", "0")
    cli(ms, "weight", "main", "out3", "0")
    assert ms.send_many(count, threads=4, recipients=recipients, tag=lambda i: tag) == []
    wait_until(lambda: deferred_count(ms) >= count, 120, f"{count} messages deferred on out2")
    cli(ms, "weight", "main", "out1", "--reset")
    cli(ms, "weight", "main", "out3", "--reset")


def sweep_lines(ms) -> list[tuple[int, int]]:
    """(moved, limit) of every sweep that had something to move."""
    out = []
    for line in (ms.base / "requeue.log").read_text().splitlines():
        if 'msg="sweep:' in line:
            words = line.split("sweep:", 1)[1].split()
            limit = int(line.split("at most ", 1)[1].split()[0])
            out.append((int(words[words.index("moved,") - 1]), limit))
    return out


def test_drain_requeue_moves_500_queued_messages_at_a_bounded_rate(mail_system) -> None:
    ms = mail_system(domains=DOMAINS, requeue=True, extra={"requeue": {"max_per_second": 100}})
    slow_retries(ms)
    out2 = ENDPOINT_IP["out2"]
    ms.sink.script(out2, "*", "421 4.7.0 out2 refused for this test")
    everyone = [f"d{i}@{DOMAINS[i % 3]}" for i in range(500)]
    queue_everything_on_out2(ms, 500, lambda i: [everyone[i]], "drain")
    assert not moved_lines(ms)  # out2 is active: nothing moves by itself

    assert "queued mail moves" in cli(ms, "drain", "out2", "--requeue")
    drained_at = time.monotonic()
    wait_until(lambda: set(everyone) <= set(per_recipient(ms.sink.messages)), 120, "all 500 messages")
    print(
        f"500 queued messages delivered by other routes {time.monotonic() - drained_at:.1f}s after the drain"
    )
    counts = per_recipient(ms.sink.messages)
    assert all(counts[a] == 1 for a in everyone), {a: n for a, n in counts.items() if n != 1}
    assert not [m for m in ms.sink.messages if m.peer_ip == out2]
    wait_until(lambda: len(moved_lines(ms)) >= 500, 10, "500 'moved' log lines")
    # each sweep's summary line follows its moves, and info lines reach the log within a second
    wait_until(lambda: sum(m for m, _ in sweep_lines(ms)) >= 500, 10, "the sweeps' summary lines")
    sweeps = [s for s in sweep_lines(ms) if s[0] > 0]
    assert len(sweeps) >= 5 and all(moved <= limit == 100 for moved, limit in sweeps), sweeps
    assert all("reason" not in line or "drained" in line for line in moved_lines(ms))
    assert all("(drained: drained by operator)" in line for line in moved_lines(ms)), moved_lines(ms)[:3]


def timed_sends(ms, count: int, start: int) -> list[float]:
    """Seconds each message took to be accepted (one SMTP session each)."""
    took = []
    for i in range(start, start + count):
        began = time.monotonic()
        ms.send("probe@shop.test", [f"intake{i}@{DOMAINS[i % 3]}"], seq=i, tag="intake")
        took.append(time.monotonic() - began)
    return took


def test_killed_or_hung_daemons_never_delay_intake_and_lose_nothing(mail_system) -> None:
    ms = mail_system(domains=DOMAINS, requeue=True, extra={"requeue": {"max_per_second": 5}})
    slow_retries(ms)
    out2 = ENDPOINT_IP["out2"]
    baseline = timed_sends(ms, 10, 0)

    # 1. both daemons killed: the table before the move, the requeue daemon during it
    ms.sink.script(out2, "gmail.com", GMAIL_421)
    gmail = [f"g{i}@gmail.com" for i in range(40)]
    queue_everything_on_out2(ms, 40, lambda i: [gmail[i]], "gmail")
    ms.table.kill()
    cli(ms, "suspend", "out2", "google", "--for", "1h", "--requeue")
    wait_until(lambda: moved_total(ms) >= 5, 15, "the first moves")
    ms.requeue.kill()
    dead = timed_sends(ms, 20, 100)
    ms.table.start()
    ms.requeue.start()
    # moved mail that met the dead table waits for its next retry (RETRY_S)
    wait_until(lambda: set(gmail) <= set(per_recipient(ms.sink.messages)), 3 * RETRY_S, "the gmail mail")

    # 2. the table hung (SIGSTOP: connections are accepted, never answered)
    ms.sink.script(out2, "yahoo.com", "421 4.7.0 out2 refused yahoo for this test")
    yahoo = [f"y{i}@yahoo.com" for i in range(20)]
    queue_everything_on_out2(ms, 20, lambda i: [yahoo[i]], "yahoo")
    assert ms.table.proc is not None
    os.kill(ms.table.proc.pid, signal.SIGSTOP)
    try:
        cli(ms, "suspend", "out2", "yahoo", "--for", "1h", "--requeue")
        wait_until(lambda: moved_total(ms) >= 45, MAIL_S, "the yahoo moves")
        hung = timed_sends(ms, 20, 200)
        # the documented cost of a hung table: qmgr waits on its lookup (Postfix allows
        # 100 s), so FILTERed mail queued meanwhile is not delivered either
        time.sleep(5)
        probes = {f"intake{i}@{DOMAINS[i % 3]}" for i in range(200, 220)}
        assert not probes & set(per_recipient(ms.sink.messages))
    finally:
        os.kill(ms.table.proc.pid, signal.SIGCONT)
    wait_until(lambda: set(yahoo) <= set(per_recipient(ms.sink.messages)), 3 * RETRY_S, "the yahoo mail")

    intake = [f"intake{i}@{DOMAINS[i % 3]}" for i in (*range(10), *range(100, 120), *range(200, 220))]
    wait_until(lambda: set(intake) <= set(per_recipient(ms.sink.messages)), 3 * RETRY_S, "the intake probes")
    counts = per_recipient(ms.sink.messages)
    assert all(counts[a] == 1 for a in gmail + yahoo + intake), {a: n for a, n in counts.items() if n != 1}
    assert not [m for m in ms.sink.messages if m.peer_ip == out2 and not m.rcpt_tos[0].startswith("intake")]
    # no added delay: every acceptance within 1 s of the slowest with both daemons up
    limit = max(baseline) + 1.0
    assert max(dead) < limit and max(hung) < limit, (baseline, dead, hung)
    print(f"intake seconds: up {max(baseline):.3f}, daemons dead {max(dead):.3f}, table hung {max(hung):.3f}")


def test_warming_endpoint_that_receives_moved_mail_ends_at_exactly_its_cap(mail_system) -> None:
    cap = 20
    today = utc_now().date().isoformat()
    warm = {"endpoints": {"out3": {"warmup": {"start": today, "schedule": [{"daily": cap}]}}}}
    ms = mail_system(warm, domains=DOMAINS, requeue=True)
    slow_retries(ms)
    out2 = ENDPOINT_IP["out2"]
    ms.sink.script(out2, "gmail.com", GMAIL_421)
    queued = [f"w{i}@gmail.com" for i in range(40)]
    queue_everything_on_out2(ms, 40, lambda i: [queued[i]], "queued")
    cli(ms, "suspend", "out2", "google", "--for", "1h", "--requeue")
    # the moved mail first (about half of it to out3, at weight 1:1), then new mail
    wait_until(lambda: moved_total(ms) >= 40, MAIL_S, "40 moves")
    fresh = [f"f{i}@gmail.com" for i in range(60)]
    assert ms.send_many(60, threads=4, recipients=lambda i: [fresh[i]], tag=lambda i: "fresh") == []
    wait_until(
        lambda: set(queued + fresh) <= set(per_recipient(ms.sink.messages)), MAIL_S, "all 100 messages"
    )
    wait_until(ms.postfix.queue_is_empty, MAIL_S, "an empty queue")

    counts = per_recipient(ms.sink.messages)
    assert all(counts[a] == 1 for a in queued + fresh)
    left_by = Counter(NAME_OF[m.peer_ip] for m in ms.sink.messages)
    moved_to_out3 = [line for line in moved_lines(ms) if " to out3 " in line]
    assert moved_to_out3, "no moved mail went to the warming endpoint: nothing was tested"
    assert left_by["out3"] == cap, left_by
    counts_reach(ms, {"out1": left_by["out1"], "out2": 0, "out3": cap})


def test_without_the_qmgr_step_nothing_moves_until_it_is_done(mail_system) -> None:
    """Issue #29: the operator skipped `postconf -P qmgr/unix/rewrite_service_name=rewrite`.
    qmgr then resolves without the table, and moved mail would leave by the default
    transport from the host's own address: the daemon refuses, says why, and moves the
    same mail to its new endpoint once the step is done."""
    ms = mail_system(domains=DOMAINS, requeue=True, skip_steps=("qmgr/unix/rewrite_service_name",))
    slow_retries(ms)
    out2 = ENDPOINT_IP["out2"]
    ms.sink.script(out2, "gmail.com", GMAIL_421)
    gmail = {f"u{i}@gmail.com" for i in range(40)}
    assert ms.send_many(40, threads=4, recipients=lambda i: [f"u{i}@gmail.com"]) == []
    wait_until(lambda: deferred_on_out2(ms) >= 1, MAIL_S, "gmail mail deferred on out2")
    cli(ms, "suspend", "out2", "google", "--for", "1h", "--requeue")

    def refusal() -> bool:
        text = (ms.base / "requeue.log").read_text()
        return "refusing to move mail: qmgr resolves through the 'rewrite-nomap' service" in text

    wait_until(refusal, MAIL_S, "the requeue daemon's refusal")
    assert "postconf -P qmgr/unix/rewrite_service_name=rewrite" in (ms.base / "requeue.log").read_text()
    assert moved_lines(ms) == [] and deferred_count(ms) >= 1
    stuck = deferred_count(ms)

    # the daemon reads the files, not the running qmgr: between `postconf -P` and the reload
    # it would move mail that qmgr still resolves without the table (README), so the step is
    # applied with the daemon stopped, as the README says
    ms.requeue.stop()
    subprocess.run(
        ["postconf", "-c", str(ms.postfix.config_dir), "-P", "qmgr/unix/rewrite_service_name=rewrite"],
        check=True,
    )
    ms.postfix.reload()
    ms.requeue.start()
    wait_until(lambda: gmail <= set(per_recipient(ms.sink.messages)), RETRY_S, "every gmail message")
    # moved mail left from its new endpoint: never from out2, never from the host's own address
    peers = Counter(m.peer_ip for m in ms.sink.messages)
    assert set(peers) <= {ENDPOINT_IP["out1"], ENDPOINT_IP["out3"]}, peers
    assert wait_until(lambda: len(moved_lines(ms)) >= stuck, 10, "the moves logged")
