from smtp_balancer.config import validate_config
from smtp_balancer.render.postfix import main_cf, master_cf

RAW = {
    "endpoints": {
        "out1": {"bind_address": "127.0.0.2", "helo_name": "out1.example.com"},
        "out6": {"bind_address": "2001:db8::6"},
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


def test_main_cf_policy_before_permit_mynetworks():
    text = main_cf(validate_config(RAW))
    policy = "check_policy_service { inet:127.0.0.1:10040, default_action=DUNNO, try_limit=1, timeout=7s }"
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
