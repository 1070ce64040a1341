"""Cases that need IPv6 addresses of their own: run by ``test_dual_stack.py`` through
``netns.run_in_netns``, never collected by the normal run (no ``test_`` prefix)."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from integration.configs import ENDPOINT_IP, HELO
from integration.netns import IN_NETNS
from integration.sink import Received

SINK6 = "fd00::10"  # the sink's IPv6 address: the providers' AAAA records point here
OUT2_V6 = "fd00::3"  # out2's IPv6 source address
ADDRESSES = [SINK6, OUT2_V6]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "example.test"]
DUAL_OUT2 = {"endpoints": {"out2": {"bind_address6": OUT2_V6}}}


@pytest.fixture(autouse=True)
def _in_netns() -> None:
    if os.environ.get(IN_NETNS) != "1":
        pytest.fail("these cases need their own network namespace: run them through integration/netns.py")


def spread_recipients(i: int) -> list[str]:
    return [f"user{i}@{DOMAINS[i % len(DOMAINS)]}"]


def assert_from_endpoints_only(got: list[Received], total: int) -> None:
    """Every delivery left from an endpoint's own address with its HELO: none from ::1, a
    namespace's own IPv6 address, or the host's default 127.0.0.1."""
    seen = Counter(m.peer_ip for m in got)
    assert set(seen) <= set(ENDPOINT_IP.values()), seen
    assert seen.total() == total
    assert all(m.helo == HELO[m.peer_ip] for m in got)


def test_exim_ipv4_endpoints_send_nothing_over_ipv6(exim_system):
    # Exim sorts IPv6 addresses first, and `interface` binds only connections of its own
    # family: without the routers' family filter all 400 left from this host's IPv6
    es = exim_system(dual_stack=SINK6)
    assert es.send_many(400, recipients=spread_recipients) == []
    assert_from_endpoints_only(es.sink.wait_for(400, timeout=240), 400)


def test_exim_endpoint_with_an_ipv6_address_sends_from_it(exim_system):
    es = exim_system(DUAL_OUT2, dual_stack=SINK6)
    assert es.send_many(400, recipients=spread_recipients) == []
    got = es.sink.wait_for(400, timeout=240)
    seen = Counter(m.peer_ip for m in got)
    # out2 is dual-stack: Exim tries the AAAA address first, from out2's own IPv6 address
    assert set(seen) == {"127.0.0.2", OUT2_V6, "127.0.0.4"}, seen
    assert all(m.helo == "out2.test" for m in got if m.peer_ip == OUT2_V6)


def test_postfix_endpoint_with_an_ipv6_address_sends_from_it(mail_system):
    ms = mail_system(DUAL_OUT2, domains=DOMAINS, dual_stack=SINK6)
    assert ms.send_many(400, recipients=spread_recipients) == []
    got = ms.sink.wait_for(400, timeout=180)
    seen = Counter(m.peer_ip for m in got)
    # out1 and out3 over IPv4 only; out2 over either family, each from its own address
    # (Postfix picks a family per connection: with ~200 messages, both appear)
    assert set(seen) == {*ENDPOINT_IP.values(), OUT2_V6}, seen
    helo = {**HELO, OUT2_V6: "out2.test"}
    assert all(m.helo == helo[m.peer_ip] for m in got)
