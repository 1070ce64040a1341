"""Issue #29: applying the rendered config keeps the operator's own main.cf settings.

``render postfix --part main`` prints whole parameters: pasted into this main.cf, its
``smtpd_recipient_restrictions`` and ``transport_maps`` would replace the operator's
sender check and transport entry. ``render postfix --postconf`` merges instead.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
from collections import Counter

import pytest

from integration.configs import ENDPOINT_IP
from integration.conftest import apply_postconf
from integration.postfix import make_shared_dir
from integration.sink import Sink
from integration.submit import build_message

DOMAINS = ["gmail.com", "yahoo.com", "outlook.com"]


def _operator_main(folder, backend_port: int) -> str:
    (folder / "senders").write_text("spammer@bad.test REJECT no mail from you\n")
    (folder / "transport").write_text(f"partner.test relay:[127.0.0.1]:{backend_port}\n")
    return (
        f"smtpd_recipient_restrictions = check_sender_access texthash:{folder}/senders,"
        " permit_mynetworks, reject_unauth_destination\n"
        f"transport_maps = texthash:{folder}/transport\n"
    )


def _postconf_n(ms) -> str:
    main = subprocess.run(
        ["postconf", "-c", str(ms.postfix.config_dir), "-n"], capture_output=True, text=True
    )
    master = subprocess.run(
        ["postconf", "-c", str(ms.postfix.config_dir), "-M"], capture_output=True, text=True
    )
    return main.stdout + master.stdout


def test_the_operators_restriction_and_transport_survive_and_routing_works(mail_system):
    backend = Sink()  # where the operator's transport_maps sends partner.test
    backend.start()
    folder = make_shared_dir("sb-operator-")
    try:
        ms = mail_system(
            {"inbound_domains": ["partner.test"]},  # a domain their own table routes
            domains=DOMAINS,
            requeue=True,
            postfix_main=_operator_main(folder, backend.port),
            postconf_apply=True,
        )
        applied = _postconf_n(ms)
        assert "check_sender_access, texthash:" in applied and "check_policy_service {" in applied
        # the table first, their map after it (and for intake, in rewrite-nomap, theirs alone)
        table = r"socketmap:inet:127\.0\.0\.1:\d+:route"
        assert re.search(rf"^transport_maps = {table}, texthash:{folder}/transport$", applied, re.M), applied
        assert re.search(rf"^rewrite-nomap .* -o transport_maps=texthash:{folder}/transport$", applied, re.M)
        # their sender check still rejects
        with (
            smtplib.SMTP("127.0.0.1", ms.postfix.smtpd_port, timeout=30) as smtp,
            pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
        ):
            smtp.send_message(build_message(0, "spammer@bad.test", ["u@gmail.com"]))
        assert "no mail from you" in str(refused.value.recipients)
        # their transport entry still takes partner.test; the rest is routed
        assert ms.send_many(20, start=100, recipients=lambda i: [f"p{i}@partner.test"]) == []
        assert ms.send_many(200, recipients=lambda i: [f"u{i}@{DOMAINS[i % 3]}"]) == []
        got = ms.sink.wait_for(200, timeout=180)
        backend.wait_for(20, timeout=120)
        assert set(Counter(m.peer_ip for m in got)) <= set(ENDPOINT_IP.values())
        assert not [m for m in got if m.mail_from == "spammer@bad.test"]
        assert sorted(r for m in backend.messages for r in m.rcpt_tos) == sorted(
            f"p{i}@partner.test" for i in range(100, 120)
        )
        # applying again, against the config as it now is, changes nothing
        apply_postconf(ms.config_path, ms.postfix.config_dir)
        assert _postconf_n(ms) == applied
    finally:
        backend.stop()
        shutil.rmtree(folder, ignore_errors=True)
