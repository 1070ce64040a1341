"""Replay on real Exim logs (issue #37): the Postfix run's twin through Exim 4.96,
whose policy daemon answers ``${readsocket}`` and whose feedback daemon reads its
main log; the same checks (``integration/replays.py``) on Exim's logs, read with
``--mta exim``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from integration.configs import ENDPOINT_IP
from integration.daemons import wait_for_decision_lines
from integration.exim import exim_feedback
from integration.replays import WARM_GOOGLE, WARM_TOTAL, check_replays, log_time
from integration.test_replay_postfix import ACTED, DOMAINS, GMAIL_421
from integration.waits import MAIL_S, wait_until
from smtp_balancer.clock import TEST_TIME_ENV

N1, N2 = 1_000, 1_500  # 4 connections each (Exim takes at most 1,000 messages on one); half the
# Postfix twin's, which Exim takes twice as long to deliver
FIRST_ATTEMPT = re.compile(r"^\S+ \S+ \S+ (=>|==|\*\*) ", re.M)  # a delivery, deferral or bounce


def test_replaying_an_exim_run_with_a_throttle_and_a_warming_ip(exim_system, tmp_path):
    today = datetime.now(UTC).date().isoformat()
    warm = {"start": today, "schedule": [WARM_TOTAL], "providers": {"google": [WARM_GOOGLE]}}
    real_clock = {TEST_TIME_ENV: ""}
    es = exim_system({"endpoints": {"out3": {"warmup": warm}}}, env=real_clock)
    feedback, _ = exim_feedback(es.config_path, es.exim, es.base, "exim1")
    feedback.env = real_clock
    feedback.start()
    try:
        rcpt = lambda i: [f"u{i}@{DOMAINS[i % 3]}"]  # noqa: E731
        assert es.send_many(N1, threads=4, recipients=rcpt) == []
        es.sink.wait_for(N1, timeout=MAIL_S)
        es.sink.script(ENDPOINT_IP["out2"], "gmail.com", GMAIL_421)
        assert es.send_many(N2, threads=4, recipients=rcpt, start=N1) == []
        acted = wait_until(lambda: ACTED.search(feedback.log_path.read_text()), 60, "the real suspension")
        wait_for_decision_lines(es.policyd.log_path, N1 + N2)
        wait_until(
            lambda: len(FIRST_ATTEMPT.findall(es.exim.log_text())) >= N1 + N2,
            MAIL_S,
            "every first attempt logged",
        )
        first_421 = next(
            line for line in es.exim.log_text().splitlines() if " == " in line and "4.7.28" in line
        )
        check_replays(
            es.config_path,
            es.policyd.log_path,
            es.exim.logs / "mainlog",
            "exim",
            tmp_path,
            real_suspension_at=datetime.fromisoformat(acted.group(1)).timestamp(),
            first_421_at=log_time(first_421, "exim"),
            messages=N1 + N2,
        )
    finally:
        feedback.stop()
