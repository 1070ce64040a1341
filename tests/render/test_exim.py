"""The Exim renderer: text only (the real Exim reads it in integration/test_exim.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smtp_balancer.config import load_config, validate_config
from smtp_balancer.config.loader import ConfigInvalid
from smtp_balancer.generation import MARKER
from smtp_balancer.render.exim import (
    FILE_NAMES,
    acl_conf,
    exim_files,
    main_conf,
    policy_socket,
    request_attributes,
    routes_file,
)

RAW = {
    "endpoints": {
        "out1": {"bind_address": "127.0.0.2", "helo_name": "out1.example.com"},
        "out6": {"bind_address": "2001:db8::6"},
        "dual": {"bind_address": "127.0.0.5", "bind_address6": "2001:db8::5"},
        "relay1": {"kind": "relay", "nexthop": "[mta2.internal]:2525", "helo_name": "r.example.com"},
        "bare": {},
    },
    "pools": {"p": {"endpoints": [{"endpoint": "out1"}, {"endpoint": "out6"}]}},
    "exim": {"readsocket_timeout_s": 3},
}


def test_routes_file_one_lsearch_line_per_endpoint():
    lines = routes_file(validate_config(RAW)).splitlines()
    # one family: the routers drop the other family's target addresses (family=)
    assert "out1: interface=127.0.0.2 family=4 helo=out1.example.com transport=sb_out1" in lines
    assert "out6: interface=2001:db8::6 family=6 transport=sb_out6" in lines
    # both: an Exim `<;` list, each connection bound by its own family
    assert "dual: interface=127.0.0.5;2001:db8::5 transport=sb_dual" in lines
    assert "relay1: helo=r.example.com host=mta2.internal port=2525 transport=sb_relay1" in lines
    assert "bare: transport=sb_bare" in lines  # known: Exim's defaults, its own transport
    assert all(line.startswith("#") or ":" in line for line in lines)


def test_policy_socket_in_readsocket_form():
    unix = validate_config({**RAW, "policyd": {"listen": ["unix:/run/sb/policy.sock"]}})
    assert policy_socket(unix) == "/run/sb/policy.sock"
    inet = validate_config({**RAW, "policyd": {"listen": ["127.0.0.1:10040"]}})
    assert policy_socket(inet) == "inet:127.0.0.1:10040"


def test_main_conf_macros_never_prefix_one_another():
    # Exim replaces a macro name wherever it appears: SB_ROUTE would eat SB_ROUTES
    text = main_conf(validate_config(RAW), "/etc/exim4/sb")
    names = re.findall(r"^([A-Z][A-Z0-9_]*) =", text, re.M)
    assert len(names) >= 6
    assert not [(a, b) for a in names for b in names if a != b and b.startswith(a)]
    assert "SB_ROUTES_FILE = /etc/exim4/sb/routes" in text
    assert "SB_POLICY_TIMEOUT = 3s" in text


def test_acl_asks_with_every_attribute_and_headers_only_for_the_class():
    config = validate_config(RAW)
    acl = acl_conf(config)
    for name, value in request_attributes(config):
        assert acl.count(f"        {name}={value}\\n\\") == 2  # sb_route and sb_route_local
    assert ("policy_context", MARKER) in request_attributes(config)  # README: Upgrading
    # values a client controls cannot add a line (an attribute) to the request
    for variable in (
        "$sender_address",
        "$recipients",
        "$authenticated_id",
        "$h_X-Mail-Class:",
        "$h_Precedence:",
    ):
        assert "${sg{" + variable + r"}{\N[\r\n]\N}{}}" in acl
    # headers go to the daemon as header_* attributes, to classify the message; the
    # route comes from the daemon's answer only
    header_lines = [line for line in acl.splitlines() if "$h_" in line or "def:h_" in line]
    assert header_lines and all(line.strip().startswith("header_") for line in header_lines)
    assert "$rh_" not in acl and "$bh_" not in acl
    assert acl.count("set acl_m_sb_route = ${if match{$acl_m_sb_reply}") == 2
    local = acl[acl.index("sb_route_local:") :]
    assert "defer" not in local  # a local submission is never refused for an overflow
    assert "{action=DUNNO}}" in acl  # the fail string: an unreachable daemon means no route


def test_files_are_consistent_with_where_they_are_written():
    files = exim_files(validate_config(RAW), "/srv/exim")
    assert set(files) == set(FILE_NAMES.values())
    assert "SB_ROUTES_FILE = /srv/exim/routes" in files["main.conf"]
    # every macro the other parts use is defined in main.conf (SB_SMARTHOST is optional)
    used = set(
        re.findall(
            r"\bSB_[A-Z_]+", "".join(files[n] for n in ("acl.conf", "routers.conf", "transports.conf"))
        )
    )
    defined = set(re.findall(r"^(SB_[A-Z_]+) =", files["main.conf"], re.M))
    assert used - defined == {"SB_SMARTHOST"}


def test_one_transport_per_endpoint_named_in_the_log():
    from smtp_balancer.render.exim import transport_names, transports_conf

    config = validate_config(RAW)
    names = ("out1", "out6", "dual", "relay1", "bare")
    expected = {f"sb_{name}": name for name in names}
    assert transport_names(config) == expected
    text = transports_conf(config)
    for name in ("sb_smtp", "sb_out1", "sb_out6", "sb_relay1", "sb_bare"):
        assert f"\n{name}:\n  driver = smtp\n" in text
    clash = {**RAW, "endpoints": {"a-b": {}, "a_b": {}}, "pools": {"p": {"endpoints": [{"endpoint": "a-b"}]}}}
    with pytest.raises(ConfigInvalid, match="both render as Exim transport sb_a_b"):
        validate_config(clash)


def test_shipped_examples_match_the_renderer():
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "examples" / "config.yaml")
    shipped = root / "mta-configs" / "exim"
    for name, text in exim_files(config, source="examples/config.yaml").items():
        assert (shipped / f"{name}.example").read_text() == text, name


def test_requeue_adds_the_retry_router_and_routes_by_address_data():
    from smtp_balancer.render.exim import routers_conf

    off = validate_config(RAW)
    assert "sb_route_now" not in routers_conf(off)
    assert "${lookup{$acl_m_sb_route}lsearch{SB_ROUTES_FILE}}" in main_conf(off, "/etc/exim4/sb")
    on = validate_config({**RAW, "requeue": {"enabled": True, "table_listen": "127.0.0.1:10099"}})
    main, routers = main_conf(on, "/etc/exim4/sb"), routers_conf(on)
    assert "SB_TABLE_SOCKET = inet:127.0.0.1:10099\n" in main
    assert "SB_ROUTE_NOW = ${if first_delivery {$acl_m_sb_route}" in main  # first attempts: no ask
    assert "SB_ROUTE_LINE = ${lookup{$address_data}lsearch{SB_ROUTES_FILE}}" in main
    # the route-now router runs before the routers that deliver, and declines itself
    assert routers.index("sb_route_now:") < routers.index("sb_relay:") < routers.index("sb_direct:")
    assert "  address_data = SB_ROUTE_NOW\n  data =\n" in routers


def test_routes_skip_this_hosts_own_domains():
    # local and relay domains, and the YAML's inbound_domains: Exim's own routers take them
    config = validate_config({**RAW, "inbound_domains": ["dsn.example.com", ".corp.example.com"]})
    text = main_conf(config, "/etc/exim4/sb")
    assert (
        "SB_REMOTE_DOMAINS = ! +local_domains : ! +relay_to_domains : ! dsn.example.com"
        " : ! *.corp.example.com\n" in text
    )
    plain = main_conf(validate_config(RAW), "/etc/exim4/sb")
    assert "SB_REMOTE_DOMAINS = ! +local_domains : ! +relay_to_domains\n" in plain
