"""Issue #29: on a dual-stack host every message leaves from its endpoint's address.

Real Postfix with ``inet_protocols = all`` (Debian's default), recipient domains that
resolve to 127.0.0.1 and ::1 (as Gmail's and Outlook's MX hosts have A and AAAA
records), a sink listening on both: an IPv4-only endpoint rendered without the
family option sent about half its mail from ::1, an address no endpoint owns.
"""

from __future__ import annotations

from integration.netns import run_in_netns
from integration.netns_cases import ADDRESSES, DOMAINS, assert_from_endpoints_only, spread_recipients


def test_postfix_ipv4_endpoints_on_a_dual_stack_host_send_nothing_over_ipv6(mail_system):
    ms = mail_system(domains=DOMAINS, dual_stack="::1")
    assert ms.send_many(400, recipients=spread_recipients) == []
    # every delivery from an endpoint's own address: none from ::1 or the default 127.0.0.1
    assert_from_endpoints_only(ms.sink.wait_for(400, timeout=180), 400)


def test_ipv6_egress_in_a_network_namespace():
    """Exim, and endpoints with IPv6 addresses of their own: netns_cases.py, in a network
    namespace whose loopback holds the sink's and out2's IPv6 addresses."""
    out = run_in_netns(ADDRESSES, "integration/netns_cases.py")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "3 passed" in out.stdout, out.stdout[-2000:]
