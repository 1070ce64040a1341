"""Bounce and deferral classes on real Postfix (issue #17): the sink answers one reply
of each class, and the feedback daemon's metric carries the class."""

from __future__ import annotations

import urllib.request

import yaml

from integration.configs import ENDPOINT_IP
from integration.waits import MAIL_S, wait_until

REPLIES = {
    "invalid-recipient.test": (
        "550 5.1.1 <x>: Recipient address rejected: User unknown",
        "invalid_recipient",
    ),
    "mailbox-full.test": ("552 5.2.2 <x>: Recipient address rejected: Mailbox full", "mailbox_full"),
    "policy.test": (
        "550 5.7.1 Unfortunately, messages from [127.0.0.2] weren't sent. Please contact your Internet"
        " service provider since part of their network is on our block list (S3150).",
        "policy_block",
    ),
    "content.test": (
        "550 5.7.1 Our system has detected that this message is likely unsolicited mail."
        " https://support.google.com/mail/?p=UnsolicitedMessageError",
        "spam_content",
    ),
    "rate.test": (
        "421 4.7.28 Our system has detected an unusual rate ... temporarily rate limited",
        "rate_limited",
    ),
    "tls.test": ("530 5.7.0 Must issue a STARTTLS command first", "tls_failure"),
    "other.test": ("451 4.3.0 Temporary server error", "other"),
}
NOT_IN_DNS = "no-such-domain.test"  # absent from the private hosts file: a DNS failure


def test_each_class_once_through_real_postfix(mail_system) -> None:
    ms = mail_system(domains=list(REPLIES), feedback=True)
    for domain, (reply, _) in REPLIES.items():
        for ip in ENDPOINT_IP.values():
            ms.sink.script(ip, domain, reply)
    recipients = [f"u@{d}" for d in [*REPLIES, NOT_IN_DNS]]
    assert ms.send_many(len(recipients), threads=1, recipients=lambda i: [recipients[i]]) == []
    port = int(yaml.safe_load(ms.config_path.read_text())["feedback"]["metrics_listen"].rpartition(":")[2])
    expected = {cls for _, cls in REPLIES.values()} | {"dns_failure"}

    def classes_seen() -> set[str]:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        seen = set()
        for line in page.splitlines():
            if line.startswith("smtp_balancer_deliveries_total{") and 'endpoint="out' in line:
                seen.add(line.split('class="', 1)[1].split('"', 1)[0])
        return seen

    seen = wait_until(lambda: (s := classes_seen()) >= expected and s, MAIL_S, "a delivery of each class")
    assert seen == expected, seen  # and nothing was sent, nothing unclassified
