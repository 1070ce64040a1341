"""Attribution: endpoint by Source-IP, provider by reporter, tenant by sender domain."""

from __future__ import annotations

from integration.arf import arf_report
from smtp_balancer.complaints.arf import parse_report
from smtp_balancer.complaints.attribute import Attribution, Attributor


def test_source_ip_reporter_and_sender_name_endpoint_provider_and_tenant(make_config) -> None:
    config = make_config({"tenants": ["shop.test"], "endpoints": {"out1": {"public_ip": "192.0.2.10"}}})
    who = Attributor(config)
    assert who.attribute(parse_report(arf_report("127.0.0.3"))) == Attribution("out2", "yahoo", "shop.test")
    # a NATed endpoint is known by its public address too
    assert who.attribute(parse_report(arf_report("192.0.2.10"))).endpoint == "out1"
    assert who.attribute(parse_report(arf_report("198.51.100.7"))).endpoint is None
    # a subdomain of a tenant is the tenant; any other sender is "other"
    assert who.attribute(parse_report(arf_report(mail_from="b@bounces.shop.test"))).tenant == "shop.test"
    assert who.attribute(parse_report(arf_report(mail_from="x@elsewhere.test"))).tenant == "other"


def test_an_endpoints_ipv6_addresses_name_it_too(make_config) -> None:
    endpoints = {"out1": {"bind_address6": "fd00::2", "public_ip6": "2001:db8::10"}}
    who = Attributor(make_config({"endpoints": endpoints}))
    assert who.attribute(parse_report(arf_report("fd00::2"))).endpoint == "out1"
    assert who.attribute(parse_report(arf_report("2001:db8::10"))).endpoint == "out1"
    assert who.attribute(parse_report(arf_report("2001:DB8:0::10"))).endpoint == "out1"  # any spelling
    assert who.attribute(parse_report(arf_report("127.0.0.2"))).endpoint == "out1"  # and its IPv4


def test_reporters_come_from_the_table_the_config_or_the_recipient_domain(make_config) -> None:
    config = make_config({"feedback": {"complaints": {"reporters": {"fbl.example.net": "comcast"}}}})
    who = Attributor(config)
    assert who.provider(parse_report(arf_report(reporter="staff@hotmail.com"))) == "microsoft"
    assert who.provider(parse_report(arf_report(reporter="x@scomp.fbl.example.net"))) == "comcast"
    # an unknown reporter: the provider of the recipient who complained
    unknown = arf_report(reporter="abuse@isp.test", rcpt_to="u@gmail.com")
    assert who.provider(parse_report(unknown)) == "google"
    assert who.provider(parse_report(arf_report(reporter="abuse@isp.test", rcpt_to="u@isp.test"))) == "other"
