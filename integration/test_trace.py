"""``smtp-balancer trace`` on a message sent through real Postfix (issue #17): its
decision, two attempts (421, then 250), the outcome, and the suspension its 421 caused."""

from __future__ import annotations

import json
import smtplib
import subprocess
from email.message import EmailMessage

from integration.configs import ENDPOINT_IP
from integration.daemons import CLI
from integration.test_feedback_postfix import GMAIL_421
from integration.waits import MAIL_S, wait_until


def trace(ms, *args: str) -> subprocess.CompletedProcess[str]:
    logs = ["--log", str(ms.policyd.log_path), "--log", str(ms.postfix.log_file)]
    return subprocess.run(
        [CLI, "-c", str(ms.config_path), "trace", *args, *logs], capture_output=True, text=True, timeout=60
    )


def test_trace_shows_decision_attempts_outcome_and_the_suspension(mail_system) -> None:
    ms = mail_system(domains=["gmail.com"], feedback=True)
    for ip in ENDPOINT_IP.values():
        ms.sink.script(ip, "gmail.com", GMAIL_421)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "news@shop.test", "bob@gmail.com", "trace me"
    msg["Message-ID"] = "<trace-me-1@shop.test>"
    msg.set_content("hello\n")
    with smtplib.SMTP("127.0.0.1", ms.postfix.smtpd_port, timeout=30) as smtp:
        smtp.mail("news@shop.test")
        smtp.rcpt("bob@gmail.com")
        code, reply = smtp.data(msg.as_bytes())
    assert code == 250
    queue_id = reply.decode().rsplit(" ", 1)[1]
    wait_until(lambda: sum(ms.sink.handler.refused.values()) >= 1, MAIL_S, "the 421")
    with ms.sink.handler.lock:
        ms.sink.handler.scripted.clear()  # the provider accepts the retry
    ms.sink.wait_for(1, timeout=MAIL_S)

    def traced() -> subprocess.CompletedProcess[str] | None:
        out = trace(ms, queue_id)  # the daemons' info lines reach their logs within a second
        return (
            out
            if "decision:   " in out.stdout and "sent" in out.stdout and "in force" in out.stdout
            else None
        )

    out = wait_until(traced, 20, "a complete trace")
    text = out.stdout
    assert out.returncode == 0, out.stderr
    assert f"queue ids:  {queue_id}" in text and "message-id: <trace-me-1@shop.test>" in text
    assert "via policyd: outcome route, rule all, pool main, endpoint out" in text
    assert "attempts:   2" in text
    assert "deferred 4.7.28 [rate_limited]" in text and "sent 2.0.0 [none]" in text
    assert "outcome:    sent" in text
    assert "in force:   suspension out" in text and "google" in text and "4.7.28" in text

    # the same message by its Message-ID and by its decision id, as JSON
    by_mid = json.loads(trace(ms, "trace-me-1@shop.test", "--json").stdout)
    assert by_mid["queue_ids"] == [queue_id] and by_mid["outcome"] == "sent"
    decision_id = by_mid["decisions"][0]["decision_id"]
    by_decision = json.loads(trace(ms, decision_id, "--json").stdout)
    assert [a["status"] for a in by_decision["attempts"]] == ["deferred", "sent"]
    # an id no log knows: said so, non-zero
    missing = trace(ms, "ABCDEF123456")
    assert missing.returncode == 1 and "(none found)" in missing.stdout
