"""Replay on real Postfix logs (issue #37): 5,000 messages with a warming endpoint
and a Gmail throttle, replayed from the policy daemon's and Postfix's own logs
(``integration/replays.py`` has the checks, which the Exim run shares):

- under the same YAML, each (endpoint, provider)'s volume matches the actual one
  (chi-square, false-failure rate below 1e-7), out3 reaches both its caps as it
  did, and the replay suspends (out2, google) by the same rule within 1 s of the
  real feedback daemon;
- under new weights, the mail of the providers nobody throttled follows them;
- under a lower cap, the cap is reached at the message the log sent through out3
  next;
- a new response rule acts on the reply that made the shipped rule act.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from integration.configs import ENDPOINT_IP
from integration.daemons import wait_for_decision_lines
from integration.replays import WARM_GOOGLE, WARM_TOTAL, check_replays, log_time
from integration.waits import MAIL_S, wait_until
from smtp_balancer.clock import TEST_TIME_ENV

DOMAINS = ["gmail.com", "yahoo.com", "outlook.com"]
GMAIL_421 = (
    "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating\r\n"
    "421 4.7.28 from your IP address. - gsmtp"
)
N1, N2 = 2_000, 3_000  # before Gmail throttles out2, and after
ACTED = re.compile(
    r"^ts=(\S+) .*msg=\"suspend_provider out2 for google for \d+s \(rule google-rate-limited", re.M
)


def test_replaying_a_postfix_run_with_a_throttle_and_a_warming_ip(mail_system, tmp_path):
    # the real clock for the daemons: their log lines carry the real time, which the
    # replay's simulated clock follows, so the warm-up's day is the same for both
    today = datetime.now(UTC).date().isoformat()
    # Google's 5 are reached before the total: out3 takes a third of its 80 draws
    # from gmail.com mail, and fewer than 5 has a probability below 1e-8
    warm = {"start": today, "schedule": [WARM_TOTAL], "providers": {"google": [WARM_GOOGLE]}}
    real_clock = {TEST_TIME_ENV: ""}
    ms = mail_system(
        {"endpoints": {"out3": {"warmup": warm}}},
        domains=DOMAINS,
        feedback=True,
        env={"policyd": real_clock, "feedback": real_clock},
    )
    rcpt = lambda i: [f"u{i}@{DOMAINS[i % 3]}"]  # noqa: E731
    assert ms.send_many(N1, threads=4, recipients=rcpt) == []
    ms.sink.wait_for(N1, timeout=MAIL_S)
    ms.sink.script(ENDPOINT_IP["out2"], "gmail.com", GMAIL_421)
    assert ms.send_many(N2, threads=4, recipients=rcpt, start=N1) == []
    acted = wait_until(lambda: ACTED.search(ms.feedback.log_path.read_text()), 60, "the real suspension")
    wait_for_decision_lines(ms.policyd.log_path, N1 + N2)
    wait_until(
        lambda: ms.postfix.log_text().count("status=") >= N1 + N2, MAIL_S, "every first attempt logged"
    )
    first_421 = next(
        line for line in ms.postfix.log_text().splitlines() if "status=deferred" in line and "4.7.28" in line
    )
    check_replays(
        ms.config_path,
        ms.policyd.log_path,
        ms.postfix.log_file,
        "postfix",
        tmp_path,
        real_suspension_at=datetime.fromisoformat(acted.group(1)).timestamp(),
        first_421_at=log_time(first_421, "postfix"),
        messages=N1 + N2,
    )
