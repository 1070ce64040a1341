"""`render postfix --postconf`: merging into an operator's main.cf (text only; the real
Postfix applies it in integration/test_existing_config.py)."""

from __future__ import annotations

import shlex

from smtp_balancer.config import validate_config
from smtp_balancer.generation import MARKER
from smtp_balancer.render.postfix import main_cf
from smtp_balancer.render.postfix_merge import (
    main_settings,
    merged,
    postconf_script,
    split_list,
    without_ours,
)

RAW = {
    "endpoints": {"out1": {"bind_address": "192.0.2.1"}},
    "pools": {"p": {"endpoints": [{"endpoint": "out1"}]}},
    "milter": {"enabled": True, "postfix_maps_dir": "/etc/postfix/sb"},
    "requeue": {"enabled": True, "table_listen": "127.0.0.1:10041"},
}
POLICY = (
    "check_policy_service { inet:127.0.0.1:10040, default_action=DUNNO, try_limit=2, timeout=3s,"
    f" policy_context={MARKER} }}"
)


def test_lists_split_at_commas_and_spaces_but_not_inside_braces():
    assert split_list("permit_mynetworks,reject_unauth_destination  check_sender_access hash:/x") == [
        "permit_mynetworks",
        "reject_unauth_destination",
        "check_sender_access",
        "hash:/x",
    ]
    assert split_list(f"{POLICY}, permit") == ["check_policy_service", POLICY.split(" ", 1)[1], "permit"]


def test_an_earlier_run_of_ours_is_replaced_not_repeated():
    config = validate_config(RAW)
    rcpt = next(s for s in main_settings(config) if s.param == "smtpd_recipient_restrictions")
    theirs = "permit_mynetworks, check_sender_access texthash:/etc/postfix/senders, reject_unauth_destination"
    once = merged(rcpt, theirs)
    assert once == f"{POLICY}, permit_mynetworks, check_sender_access, texthash:/etc/postfix/senders, " + (
        "reject_unauth_destination"
    )
    assert merged(rcpt, once) == once
    # older forms of ours go too: brace-less, and braces without the generation marker
    assert without_ours("check_policy_service inet:127.0.0.1:10040, permit", rcpt.mark) == ["permit"]
    unmarked = "check_policy_service { inet:127.0.0.1:10040, default_action=DUNNO, timeout=3s }"
    assert merged(rcpt, f"{unmarked}, permit") == f"{POLICY}, permit"
    eod = next(s for s in main_settings(config) if s.param == "smtpd_end_of_data_restrictions")
    assert merged(eod, "reject_unlisted_sender") == f"reject_unlisted_sender, {POLICY}"  # ours last


def test_the_script_sets_every_parameter_main_cf_renders():
    config = validate_config(RAW)
    rendered = {line.split(" =")[0] for line in main_cf(config).splitlines() if line and line[0].isalpha()}
    assert {s.param for s in main_settings(config)} == rendered


def test_the_script_keeps_their_transport_maps_for_intake_and_wires_qmgr_last():
    config = validate_config(RAW)
    current = {"transport_maps": "hash:/etc/postfix/transport", "header_checks": "regexp:/etc/postfix/hc"}
    script = postconf_script(config, current, "/etc/postfix")
    commands = [shlex.split(line) for line in script.splitlines() if line.startswith("postconf")]
    assert all(c[:3] == ["postconf", "-c", "/etc/postfix"] for c in commands)
    sets = {c[4].split(" = ")[0]: c[4].split(" = ", 1)[1] for c in commands if c[3] == "-e"}
    assert sets["transport_maps"] == "socketmap:inet:127.0.0.1:10041:route, hash:/etc/postfix/transport"
    assert sets["header_checks"] == "regexp:/etc/postfix/sb/header_checks, regexp:/etc/postfix/hc"
    assert sets["rewrite_service_name"] == "rewrite-nomap"
    options = [c[4] for c in commands if c[3] == "-P"]
    assert "rewrite-nomap/unix/transport_maps=hash:/etc/postfix/transport" in options
    assert "out1/unix/inet_protocols=ipv4" in options
    # the order Postfix needs: rewrite-nomap exists before main.cf points at it, and qmgr
    # is pointed back at `rewrite` after
    order = [c[4] for c in commands]
    nomap = next(i for i, o in enumerate(order) if o.startswith("rewrite-nomap/unix="))
    assert (
        nomap
        < order.index("rewrite_service_name = rewrite-nomap")
        < order.index("qmgr/unix/rewrite_service_name=rewrite")
    )


def test_an_operators_service_of_the_same_name_is_never_replaced():
    from smtp_balancer.render.postfix_merge import clashes

    config = validate_config(
        {**RAW, "endpoints": {"amavis": {}}, "pools": {"p": {"endpoints": [{"endpoint": "amavis"}]}}}
    )
    theirs = {"amavis/unix", "smtp/unix"}
    [problem] = clashes(config, theirs, {"amavis/unix/smtp_data_done_timeout": "1200"})
    assert "master.cf already has a service 'amavis' that render did not write" in problem
    # ours from an earlier run (its syslog_name) is replaced, as the script means to
    assert clashes(config, theirs, {"amavis/unix/syslog_name": "postfix/amavis"}) == []
    assert clashes(config, {"smtp/unix"}, {}) == []
