"""Config validation: every error reported at once, each with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtp_balancer.config import ConfigInvalid, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"


def test_example_config_is_valid():
    config = load_config(EXAMPLE)
    assert "out1" in config.endpoints and config.pools["bulk"].overflow == "pool:spill"


FIVE_ERRORS = """
endpoints:
  out1: {bind_address: 127.0.0.2, colour: blue}
  out2: {bind_address: not-an-ip}
pools:
  bulk:
    endpoints:
      - {endpoint: out1, weight: 1}
      - {endpoint: out2, weight: 1}
      - {endpoint: out9, weight: -1}
rules:
  - {name: all, pool: nowhere}
"""


def test_five_distinct_errors_reported_together():
    with pytest.raises(ConfigInvalid) as info:
        parse_config(FIVE_ERRORS, "five.yaml")
    errors = dict(info.value.errors)
    assert errors == {
        "endpoints.out1.colour": "unknown key",
        "endpoints.out2.bind_address": "not an IP address: 'not-an-ip'",
        "pools.bulk.endpoints[2].weight": "must be >= 0",
        "pools.bulk.endpoints[2].endpoint": "unknown endpoint 'out9'",
        "rules[0].pool": "unknown pool 'nowhere'",
    }
    text = str(info.value)
    assert "five.yaml: 5 error(s)" in text and "pools.bulk.endpoints[2].weight: must be >= 0" in text


@pytest.mark.parametrize(
    ("yaml_text", "path", "message"),
    [
        ("endpoints: {Out1: {}}\npools: {}\n", "endpoints.Out1.[key]", "must match"),
        (
            "endpoints: {r1: {kind: relay}}\npools: {p: {endpoints: [{endpoint: r1}]}}\n",
            "endpoints.r1",
            "a relay endpoint needs nexthop",
        ),
        (
            "endpoints: {r1: {kind: relay, nexthop: 'mx:99999'}}\n"
            "pools: {p: {endpoints: [{endpoint: r1}]}}\n",
            "endpoints.r1.nexthop",
            "nexthop must be host:port",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}], overflow: pool:q},"
            " q: {endpoints: [{endpoint: a}], overflow: pool:p}}\n",
            "pools.p.overflow",
            "overflow loops back: p -> q -> p",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}], overflow: sideways}}\n",
            "pools.p.overflow",
            "must be defer, ignore_caps, default or pool:<name>",
        ),
        (
            "endpoints: {a: {warmup: {start: 2026-01-01, schedule: turbo}}}\n"
            "pools: {p: {endpoints: [{endpoint: a}]}}\n",
            "endpoints.a.warmup.schedule",
            "unknown warm-up schedule 'turbo'",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}, {endpoint: a}]}}\n",
            "pools.p.endpoints[1].endpoint",
            "listed twice",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "rules: [{name: r, pool: p, provider: [gmail]}]\n",
            "rules[0].provider[0]",
            "unknown provider 'gmail'",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "feedback: {response_rules: [{name: r, match: x, providers: [gmail]}]}\n",
            "feedback.response_rules[0].providers[0]",
            "unknown provider 'gmail'",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "feedback: {complaints: {tenant_hold: {pool: jail}}}\n",
            "feedback.complaints.tenant_hold.pool",
            "unknown pool 'jail'",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "reputation: {rules: [{name: r, source: postmaster, signal: spam_ratio, above: 0.3,"
            " action: move_tenant, pool: jail}]}\n",
            "reputation.rules[0].pool",
            "unknown pool 'jail'",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "feedback: {response_rules: [{name: r, match: '(unclosed'}]}\n",
            "feedback.response_rules[0].match",
            "not a regular expression",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "feedback: {rate_rules: [{name: r, above_percent: 10, recover_below_percent: 20}]}\n",
            "feedback.rate_rules[0]",
            "recover_below_percent must not exceed above_percent",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "feedback: {complaints: {reporters: {fbl.isp.example: isp}}}\n",
            "feedback.complaints.reporters.fbl.isp.example",
            "unknown provider 'isp'",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\ntenants: ['shop example']\n",
            "tenants[0]",
            "not a domain",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "feedback: {rate_retention: 1h, rate_rules: [{name: c, measure: complained, window: 1d,"
            " above_percent: 0.3, recover_below_percent: 0.1}]}\n",
            "feedback",
            "longer than rate_retention",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "milter: {metrics_listen: 'unix:/run/m.sock'}\n",
            "milter.metrics_listen",
            "must be host:port",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "feedback: {rate_retention: soon, metrics_listen: 'unix:/run/f.sock'}\n",
            "feedback.rate_retention",
            "not a duration",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "feedback: {dnsbl: {nameservers: [resolver.example]}}\n",
            "feedback.dnsbl.nameservers",
            "must be host:port",
        ),
        (  # a sentinel without its port raised at connect time before
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "redis: {sentinel: {hosts: ['10.0.0.1:26379', '10.0.0.2'], service_name: m}}\n",
            "redis.sentinel.hosts[1]",
            "must be host:port, got '10.0.0.2'",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}], stickiness: recipient}}\n",
            "pools.p.stickiness",
            "must be one of",
        ),
        (
            "redis: {url: 'http://x'}\nendpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n",
            "redis.url",
            "must start with",
        ),
        # issue #29: what would break Postfix or Exim once rendered
        *[
            (
                f"endpoints: {{{name}: {{}}}}\npools: {{p: {{endpoints: [{{endpoint: {name}}}]}}}}\n",
                f"endpoints.{name}",
                f"{name!r} is a Postfix service name: its master.cf line would replace Postfix's own",
            )
            for name in ("cleanup", "smtp", "relay", "local", "rewrite", "rewrite-nomap")
        ],
        (
            "endpoints: {m1-tx: {}, m1_tx: {}}\npools: {p: {endpoints: [{endpoint: m1-tx}]}}\n",
            "endpoints.m1_tx",
            "endpoints 'm1-tx' and 'm1_tx' both render as Exim transport sb_m1_tx",
        ),
        (
            "endpoints: {a: {bind_address: 192.0.2.1}, b: {bind_address: 192.0.2.1}}\n"
            "pools: {p: {endpoints: [{endpoint: a}]}}\n",
            "endpoints.b.bind_address",
            "192.0.2.1 is already endpoint 'a''s address",
        ),
        (
            "endpoints: {a: {bind_address: 192.0.2.1, bind_address6: '2001:db8::1'},"
            " b: {bind_address: '2001:DB8:0::1'}}\npools: {p: {endpoints: [{endpoint: a}]}}\n",
            "endpoints.b.bind_address",
            "2001:db8::1 is already endpoint 'a''s address",
        ),
        (
            "endpoints: {a: {bind_address6: 192.0.2.1}}\npools: {p: {endpoints: [{endpoint: a}]}}\n",
            "endpoints.a.bind_address6",
            "not an IPv6 address",
        ),
        (
            "endpoints: {a: {bind_address: '2001:db8::1', bind_address6: '2001:db8::2'}}\n"
            "pools: {p: {endpoints: [{endpoint: a}]}}\n",
            "endpoints.a",
            "bind_address is IPv6 and bind_address6 is set",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "rules: [{name: all, pool: p}, {name: gmail, provider: [google], pool: p}]\n",
            "rules[1]",
            "rule 'gmail' can never match: rule 'all' (rules[0]) has no conditions",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
            "rules: [{name: r, pool: p, provider: [gmail]}]\n",
            "rules[0].provider[0]",
            "known: apple, comcast, fastmail, google,",
        ),
        (
            "endpoints: {a: {bind_adress: 192.0.2.1}}\npools: {p: {endpoints: [{endpoint: a, wieght: 2}]}}\n",
            "endpoints.a.bind_adress",
            "unknown key; did you mean 'bind_address'?",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a, wieght: 2}]}}\n",
            "pools.p.endpoints[0].wieght",
            "unknown key; did you mean 'weight'?",
        ),
        (
            "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\npolicy: {}\n",
            "policy",
            "unknown key; did you mean 'policyd'?",
        ),
    ],
)
def test_single_errors_have_paths(yaml_text: str, path: str, message: str):
    with pytest.raises(ConfigInvalid) as info:
        parse_config(yaml_text)
    assert any(p == path and message in m for p, m in info.value.errors), info.value.errors


def test_a_boolean_is_not_a_number_but_still_a_boolean():
    with pytest.raises(ConfigInvalid) as info:
        parse_config("endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a, weight: true}]}}\n")
    assert ("pools.p.endpoints[0].weight", "a number, not true") in info.value.errors
    config = parse_config(
        "mx_lookup: {enabled: false}\nendpoints: {a: {}}\n"
        "pools: {p: {endpoints: [{endpoint: a, weight: 2}]}}\n"
    )
    assert config.mx_lookup.enabled is False and config.pools["p"].endpoints[0].weight == 2


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(ConfigInvalid) as info:
        parse_config("endpoints:\n  a: [1, 2\npools: {}\n")
    assert "YAML syntax error at line" in str(info.value)


def test_not_a_mapping_and_missing_file(tmp_path: Path):
    with pytest.raises(ConfigInvalid, match="must be a YAML mapping"):
        parse_config("- just\n- a list\n")
    with pytest.raises(ConfigInvalid, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_password_is_secret_in_repr():
    config = parse_config(
        "redis: {password: hunter2}\nendpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
    )
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.redis)


@pytest.mark.parametrize(
    ("section", "path", "message"),
    [
        ("policyd: {listen: ['unix:relative.sock']}", "policyd.listen", "must be absolute"),
        ("policyd: {listen: ['127.0.0.1']}", "policyd.listen", "must be host:port"),
        ("milter: {listen: 'inet:localhost:99999'}", "milter.listen", "must be host:port"),
        ("milter: {trusted_networks: ['10.0.0.0/33']}", "milter.trusted_networks", "not a CIDR"),
        ("milter: {default_class: vip}", "milter", "default_class 'vip' is not in classes"),
        # pydantic alone would read a yes/no as 1/0
        ("policyd: {workers: yes}", "policyd.workers", "a number, not true"),
        ("decision: {budget_ms: no}", "decision.budget_ms", "a number, not false"),
    ],
)
def test_daemon_sections(section: str, path: str, message: str):
    with pytest.raises(ConfigInvalid) as info:
        parse_config(section + "\nendpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n")
    assert any(p == path and message in m for p, m in info.value.errors), info.value.errors


def test_a_duplicate_key_is_an_error_with_its_path_and_line():
    text = (
        "endpoints:\n"
        "  out3: {bind_address: 127.0.0.4, warmup: {start: 2026-11-20, schedule: standard}}\n"
        "  out3: {bind_address: 127.0.0.4}\n"
        "pools:\n  p: {endpoints: [{endpoint: out3}]}\nrules: [{name: all, pool: p}]\n"
    )
    with pytest.raises(ConfigInvalid) as info:
        parse_config(text)
    assert (
        "endpoints.out3",
        "duplicate key at line 3 (first at line 2): the YAML is ambiguous",
    ) in info.value.errors


@pytest.mark.parametrize("day", ["2026-13-45", "2026-02-30"])
def test_an_impossible_date_is_a_path_error_alongside_the_others(day: str):
    text = (
        f"endpoints:\n  out1: {{bind_address: 127.0.0.2, warmup: {{start: {day}, schedule: standard}}}}\n"
        "  out2: {bind_address: not-an-ip}\n"
        "pools:\n  p: {endpoints: [{endpoint: out1}, {endpoint: out2}]}\nrules: [{name: all, pool: p}]\n"
    )
    with pytest.raises(ConfigInvalid) as info:
        parse_config(text)
    paths = [path for path, _ in info.value.errors]
    assert "endpoints.out1.warmup.start" in paths and "endpoints.out2.bind_address" in paths


def test_a_deeply_nested_document_is_refused_without_a_traceback():
    with pytest.raises(ConfigInvalid) as info:
        parse_config("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested deeper than 64 levels (line 1)" in str(info.value)


def test_a_rule_an_experiment_may_order_first_is_not_unreachable():
    text = (
        "endpoints: {a: {}}\npools: {p: {endpoints: [{endpoint: a}]}}\n"
        "rules: [{name: all, pool: p}, {name: gmail, provider: [google], pool: p}]\n"
        "experiments: [{name: x, rule: all, arms: [{name: a, split: 50, rule_order: [gmail, all]},"
        " {name: b, split: 50, pool: p}]}]\n"
    )
    config = parse_config(text)  # valid: the arm's rule order reaches gmail first
    assert [r.name for r in config.rules] == ["all", "gmail"]


def test_an_endpoint_names_its_host_by_full_or_short_name():
    from smtp_balancer.config.endpoints import same_host

    assert same_host("mta1", "MTA1.example.com") and same_host("mta1.example.com", "mta1")
    assert same_host("mta1.example.com.", "mta1.example.com")
    assert not same_host("mta1.dc1.example", "mta1.dc2.example")  # two full names must agree
    assert not same_host("mta1", "mta10")
    text = (
        "endpoints: {a: {host: mta1}, b: {host: mta2.example.com}, r: {kind: relay, nexthop: 'x:25'}}\n"
        "pools: {p: {endpoints: [{endpoint: a}]}}\n"
    )
    config = parse_config(text)
    assert list(config.for_host("mta1.example.com").endpoints) == ["a", "r"]  # and those of no host
    assert list(config.for_host("mta2").endpoints) == ["b", "r"]
    with pytest.raises(ConfigInvalid, match=r"endpoints\.a\.host"):
        parse_config(text.replace("host: mta1", "host: 'mta 1'"))


def test_shadow_config_is_read_beside_the_live_one_and_a_broken_one_only_says_why(tmp_path: Path):
    text = Path(EXAMPLE).read_text()
    (tmp_path / "candidate.yaml").write_text(text + "shadow: {config: /nonexistent.yaml}\n")
    path = tmp_path / "live.yaml"
    path.write_text(text + "shadow: {config: candidate.yaml}\n")
    config = load_config(path)
    assert config.shadow_candidate is not None and config.shadow_error == ""
    assert config.shadow_candidate.shadow is not None  # its own shadow: not followed
    assert config.shadow_candidate.shadow_candidate is None and config.shadow_candidate.shadow_error == ""
    (tmp_path / "candidate.yaml").write_text("pools: [\n")
    broken = load_config(path)  # the live config loads all the same
    assert broken.shadow_candidate is None
    assert broken.shadow_error.startswith(f"shadow.config {tmp_path / 'candidate.yaml'}: 1 error(s)")
    assert "YAML syntax error" in broken.shadow_error
    (tmp_path / "candidate.yaml").unlink()
    assert "cannot read config" in load_config(path).shadow_error
