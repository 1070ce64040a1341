from smtp_balancer.config import validate_config
from smtp_balancer.generation import MARKER
from smtp_balancer.render.postfix import main_cf, master_cf

RAW = {
    "endpoints": {
        "out1": {"bind_address": "127.0.0.2", "helo_name": "out1.example.com"},
        "out6": {"bind_address": "2001:db8::6"},
        "dual": {"bind_address": "127.0.0.5", "bind_address6": "2001:db8::5"},
    },
    "pools": {"p": {"endpoints": [{"endpoint": "out1"}, {"endpoint": "out6"}]}},
    "policyd": {"listen": ["inet:127.0.0.1:10040"], "postfix_timeout_s": 7},
}


def test_master_cf_transports():
    text = master_cf(validate_config(RAW))
    assert (
        "out1       unix  -       -       n       -       -       smtp\n  -o smtp_bind_address=127.0.0.2\n"
        in text
    )
    assert "  -o smtp_helo_name=out1.example.com\n  -o syslog_name=postfix/out1\n" in text
    assert "  -o smtp_bind_address6=2001:db8::6\n" in text


def _transport(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return [line.strip() for line in lines[start + 1 : end]]


def test_an_endpoint_with_one_family_sends_over_that_family_only():
    # smtp_bind_address binds IPv4 connections only: on a dual-stack host an IPv4-only
    # transport without inet_protocols=ipv4 sends about half its mail from the host's IPv6
    text = master_cf(validate_config(RAW))
    assert _transport(text, "out1")[:2] == ["-o smtp_bind_address=127.0.0.2", "-o inet_protocols=ipv4"]
    assert _transport(text, "out6")[:2] == ["-o smtp_bind_address6=2001:db8::6", "-o inet_protocols=ipv6"]
    dual = _transport(text, "dual")
    assert dual[:2] == ["-o smtp_bind_address=127.0.0.5", "-o smtp_bind_address6=2001:db8::5"]
    assert not any("inet_protocols" in line for line in dual)


def test_main_cf_policy_before_permit_mynetworks():
    text = main_cf(validate_config(RAW))
    policy = (
        "check_policy_service { inet:127.0.0.1:10040, default_action=DUNNO, try_limit=2, timeout=7s,"
        f" policy_context={MARKER} }}"  # the generation, for the daemon (README: Upgrading)
    )
    rcpt = text.index("smtpd_recipient_restrictions =")
    assert text.index(policy, rcpt) < text.index("permit_mynetworks", rcpt)
    assert f"smtpd_end_of_data_restrictions =\n    {policy}\n" in text


def test_collect_recipients_off_drops_the_rcpt_hook():
    raw = {**RAW, "policyd": {**RAW["policyd"], "collect_recipients": False}}
    text = main_cf(validate_config(raw))
    assert "smtpd_recipient_restrictions" not in text
    assert "smtpd_end_of_data_restrictions =\n    check_policy_service" in text


def test_shipped_examples_match_the_renderer():
    from pathlib import Path

    from smtp_balancer.config import load_config

    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "examples" / "config.yaml")
    shipped = root / "mta-configs" / "postfix"
    assert (shipped / "master.cf.example").read_text() == master_cf(config, "examples/config.yaml")
    assert (shipped / "main.cf.example").read_text() == main_cf(config, "examples/config.yaml")


def test_milter_maps_and_milter_only_main_cf():
    from smtp_balancer.render.postfix import postfix_maps

    raw = {
        "policyd": {"enabled": False},
        "milter": {"enabled": True, "info_header": "X-Egress-Info", "postfix_maps_dir": "/etc/postfix/sb/"},
        "endpoints": {"out1": {}, "relay1": {"kind": "relay", "nexthop": "mta2.internal:2525"}},
        "pools": {"p": {"endpoints": [{"endpoint": "out1"}, {"endpoint": "relay1"}]}},
    }
    config = validate_config(raw)
    maps = postfix_maps(config)
    assert maps["milter_header_checks"].splitlines()[1:] == [
        r"/^X-Egress-Route:\s*out1$/ FILTER out1:",
        r"/^X-Egress-Route:\s*relay1$/ FILTER relay1:[mta2.internal]:2525",
    ]
    assert maps["header_checks"].splitlines()[1:] == ["/^X-Egress-Route:/ IGNORE"]
    assert maps["smtp_header_checks"].splitlines()[1:] == [
        "/^X-Egress-Route:/ IGNORE",
        "/^X-Egress-Info:/ IGNORE",
    ]
    main = main_cf(config)
    assert "check_policy_service" not in main and "smtpd_end_of_data_restrictions" not in main
    assert "milter_header_checks = regexp:/etc/postfix/sb/milter_header_checks\n" in main
    # the milter's own settings, in braces: an operator's other milters keep the global ones
    milter = (
        "{ unix:/run/smtp-balancer/milter.sock, default_action=accept, connect_timeout=1s,"
        " command_timeout=3s, content_timeout=10s }"
    )
    assert f"\nnon_smtpd_milters = {milter}\n" in main
    assert "milter_default_action" not in main and "milter_connect_timeout" not in main
    assert "  -o smtp_header_checks=regexp:/etc/postfix/sb/smtp_header_checks" in master_cf(config)
    # Postfix's own notices get a cleanup that strips ours from the copy they attach
    assert maps["notice_body_checks"].splitlines()[1:] == maps["smtp_header_checks"].splitlines()[1:]
    master = master_cf(config)
    notice = master[master.index("sb-notice-cleanup unix") :].splitlines()
    assert notice[0].split() == ["sb-notice-cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"]
    assert "  -o nested_header_checks=regexp:/etc/postfix/sb/smtp_header_checks" in notice
    assert "  -o body_checks=regexp:/etc/postfix/sb/notice_body_checks" in notice
    assert "  -o non_smtpd_milters=" in notice
    command = next(line.lstrip("# ") for line in master.splitlines() if "postconf -P" in line)
    assert command.split()[2:] == [
        f"{service}/unix/{option}"
        for service in ("bounce", "defer", "trace")
        for option in ("cleanup_service_name=sb-notice-cleanup", "internal_mail_filter_classes=bounce")
    ]
    assert "sb-notice-cleanup" not in master_cf(validate_config({**raw, "milter": {"enabled": False}}))


def test_milter_decides_smtp_mail_only_when_the_policy_daemon_does_not():
    base = {
        "milter": {"enabled": True},
        "endpoints": {"out1": {}},
        "pools": {"p": {"endpoints": [{"endpoint": "out1"}]}},
    }
    milter_only = main_cf(validate_config({**base, "policyd": {"enabled": False}}))
    assert "\nsmtpd_milters = { unix:/run/smtp-balancer/milter.sock, default_action=accept," in milter_only
    both = main_cf(validate_config(base))
    # no message decided twice: the milter keeps to local submissions
    assert "\nsmtpd_milters" not in both and "# smtpd_milters is not set" in both
    assert "\nnon_smtpd_milters = { unix:/run/smtp-balancer/milter.sock, default_action=accept," in both
    assert "smtpd_end_of_data_restrictions" in both
    # asked for explicitly, without the policy daemon: allowed
    explicit = {**base, "policyd": {"enabled": False}, "milter": {"enabled": True, "smtpd": True}}
    assert "\nsmtpd_milters = " in main_cf(validate_config(explicit))


def test_both_deciding_smtp_mail_is_a_config_error():
    import pytest

    from smtp_balancer.config import ConfigInvalid

    raw = {
        "milter": {"enabled": True, "smtpd": True},
        "endpoints": {"out1": {}},
        "pools": {"p": {"endpoints": [{"endpoint": "out1"}]}},
    }
    with pytest.raises(ConfigInvalid) as err:
        validate_config(raw)
    assert "milter.smtpd" in str(err.value) and "warm-up quota twice" in str(err.value)


def test_requeue_renders_the_table_for_qmgr_only():
    off_main, off_master = main_cf(validate_config(RAW)), master_cf(validate_config(RAW))
    assert "transport_maps" not in off_main and "rewrite-nomap" not in off_master
    raw = {**RAW, "requeue": {"enabled": True, "table_listen": "127.0.0.1:10099"}}
    main, master = main_cf(validate_config(raw)), master_cf(validate_config(raw))
    assert "\nrewrite_service_name = rewrite-nomap\n" in main
    assert "\ntransport_maps = socketmap:inet:127.0.0.1:10099:route\n" in main
    entry = next(line for line in master.splitlines() if line.startswith("rewrite-nomap "))
    assert entry.split() == ["rewrite-nomap", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"]
    assert "  -o transport_maps=\n" in master  # intake resolves without our table
    assert "#   postconf -P qmgr/unix/rewrite_service_name=rewrite\n" in master  # qmgr with it
    own = {**raw, "requeue": {**raw["requeue"], "postfix_transport_maps": "hash:/etc/postfix/transport"}}
    main, master = main_cf(validate_config(own)), master_cf(validate_config(own))
    assert "transport_maps = socketmap:inet:127.0.0.1:10099:route, hash:/etc/postfix/transport\n" in main
    assert "  -o transport_maps=hash:/etc/postfix/transport\n" in master
    two = {**raw, "requeue": {**raw["requeue"], "postfix_transport_maps": "hash:/a, texthash:/b"}}
    assert "  -o { transport_maps = hash:/a, texthash:/b }\n" in master_cf(validate_config(two))
