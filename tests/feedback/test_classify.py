"""Bounce and deferral classes from real replies (as Postfix logs them: ``host ... said:``
then the remote text), the built-in table and rows of your own."""

from __future__ import annotations

import pytest

from smtp_balancer.config.feedback import FeedbackConfig
from smtp_balancer.feedback.classify import BounceClassifier, builtin_classes

CLASSIFIER = BounceClassifier(builtin_classes())
GMAIL = "host gmail-smtp-in.l.google.com[142.250.1.27] said: "
MS = "host example-com.mail.protection.outlook.com[52.101.1.1] said: "
YAHOO = "host mta5.am0.yahoodns.net[67.195.1.1] said: "
MX = "host mx.example.test[192.0.2.25] said: "

REPLIES = [
    # Gmail
    ("bounced", "5.1.1", GMAIL + "550-5.1.1 The email account"
     " that you tried to reach does not exist. Please try double-checking the recipient's email address for"
     " typos or unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser"
     " (in reply to RCPT TO command)",
     "invalid_recipient"),
    ("deferred", "4.2.2", GMAIL + "452-4.2.2 The recipient's inbox"
     " is out of storage space. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp",
     "mailbox_full"),
    ("deferred", "4.7.28", GMAIL + "421-4.7.28 Our system has"
     " detected an unusual rate of unsolicited mail originating from your IP address. To protect our users"
     " from spam, mail sent from your IP address has been temporarily rate limited.", "rate_limited"),
    ("bounced", "5.7.1", GMAIL + "550-5.7.1 Our system has"
     " detected an unusual rate of unsolicited mail originating from your IP address. To protect our users"
     " from spam, mail sent from your IP address has been blocked.", "policy_block"),
    ("bounced", "5.7.1", GMAIL + "550-5.7.1 [192.0.2.1] Our"
     " system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to"
     " Gmail, this message has been blocked. https://support.google.com/mail/?p=UnsolicitedMessageError",
     "spam_content"),
    ("bounced", "5.7.26", GMAIL + "550-5.7.26 This mail has been"
     " blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either"
     " SPF or DKIM.", "policy_block"),
    # Microsoft
    ("bounced", "5.1.10", MS + "550 5.1.10"
     " RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", "invalid_recipient"),
    ("bounced", "5.7.1", MS + "550 5.7.1"
     " Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider"
     " since part of their network is on our block list (S3150).", "policy_block"),
    ("deferred", "4.7.650", MS + "451 4.7.650 The"
     " mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.", "rate_limited"),
    # Yahoo
    ("deferred", "4.7.0", YAHOO + "421 4.7.0 [TSS04] Messages from"
     " 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1",
     "rate_limited"),
    ("bounced", "5.0.0", YAHOO + "554 delivery error: dd This user"
     " doesn't have a yahoo.com account (nobody@yahoo.com) [0] - mta1234.mail.gq1.yahoo.com",
     "invalid_recipient"),
    ("bounced", "5.7.9", YAHOO + "554 5.7.9 Message not accepted for"
     " policy reasons. See https://postmaster.yahooinc.com/error-codes", "policy_block"),
    # generic Postfix servers and Postfix's own reasons
    ("bounced", "5.1.1", MX + "550 5.1.1 <x@example.test>: Recipient address"
     " rejected: User unknown in virtual mailbox table", "invalid_recipient"),
    ("bounced", "5.2.2", MX + "552 5.2.2 <x@example.test>: Recipient address"
     " rejected: Mailbox full", "mailbox_full"),
    ("deferred", "4.4.3", "Host or domain name not found. Name service error for name=nowhere.test type=MX:"
     " Host not found, try again", "dns_failure"),
    ("deferred", "4.7.5", "TLS is required, but was not offered by host mx.example.test[192.0.2.25]",
     "tls_failure"),
    ("deferred", "4.3.0", MX + "451 4.3.0 Temporary server error", "other"),
]  # fmt: skip


@pytest.mark.parametrize("status, dsn, reply, expected", REPLIES)
def test_real_replies(status: str, dsn: str, reply: str, expected: str) -> None:
    assert CLASSIFIER.classify(status, dsn, reply) == expected


def test_delivered_mail_has_no_class() -> None:
    assert CLASSIFIER.classify("sent", "2.0.0", "250 2.0.0 OK") == "none"


def test_your_rows_come_first_and_the_builtin_table_can_be_left_out() -> None:
    own = {"class": "policy_block", "match": "(?i)corp-blocklist"}
    mine = BounceClassifier.from_config(FeedbackConfig(bounce_classes=[own]))
    assert mine.classify("bounced", "5.1.1", "550 5.1.1 user unknown (corp-blocklist)") == "policy_block"
    assert mine.classify("bounced", "5.1.1", "550 5.1.1 user unknown") == "invalid_recipient"
    alone = BounceClassifier.from_config(FeedbackConfig(bounce_classes=[own], builtin_bounce_classes=False))
    assert alone.classify("bounced", "5.1.1", "550 5.1.1 user unknown") == "other"


def test_a_row_needs_a_condition_and_a_known_class() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="give dsn, match or both"):
        FeedbackConfig(bounce_classes=[{"class": "other"}])
    with pytest.raises(ValidationError):
        FeedbackConfig(bounce_classes=[{"class": "banana", "match": "x"}])
    with pytest.raises(ValidationError, match="not a regular expression"):
        FeedbackConfig(bounce_classes=[{"class": "other", "match": "("}])
