"""Decision-time MX lookups against a local DNS responder, and through the engine."""

from __future__ import annotations

import asyncio

from integration.dns_responder import DnsResponder
from smtp_balancer.config.services import MxLookupConfig
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.engine import Engine
from smtp_balancer.engine.mx import MxProviders, provider_of_exchanges
from tests.ready import until

TABLE = ProviderTable.build()


def test_most_preferred_known_exchange_names_the_provider() -> None:
    assert (
        provider_of_exchanges([(20, "alt1.aspmx.l.google.com."), (5, "mx.backup.test.")], TABLE) == "google"
    )
    assert provider_of_exchanges([(10, "corp-com.mail.protection.outlook.com.")], TABLE) == "microsoft"
    assert provider_of_exchanges([(10, "mx.corp.test.")], TABLE) == "other"


def wired(config: MxLookupConfig) -> tuple[MxProviders, ProviderTable]:
    """As the engine wires it: the table asks the lookup's cache for domains it does not know."""
    table = ProviderTable.build()
    mx = MxProviders(config, table)
    table.learned = mx.cached
    return mx, table


async def test_lookup_within_budget_caches_and_a_missing_domain_is_other(dns: DnsResponder) -> None:
    dns.set("workspace.test", ["1 aspmx.l.google.com.", "5 alt1.aspmx.l.google.com."], rdtype="MX")
    mx, table = wired(MxLookupConfig(nameservers=[dns.address], budget_ms=1000))
    await mx.learn(["workspace.test", "nowhere.test", "gmail.com"])
    assert table.for_domain("workspace.test") == "google"
    assert table.for_domain("nowhere.test") == "other"
    assert "gmail.com" not in dns.queries  # the built-in table answers first
    asked = len(dns.queries)
    await mx.learn(["workspace.test"])
    assert len(dns.queries) == asked  # cached
    await mx.close()


async def test_a_slow_answer_misses_the_budget_then_serves_the_next_message(dns: DnsResponder) -> None:
    dns.set("hosted.test", ["10 hosted-test.mail.protection.outlook.com."], rdtype="MX")
    # a resolver that never answers: the budget passes, the lookup goes on in the background
    silent = DnsResponder()
    silent.sock.close()  # nobody listens at its port
    mx, table = wired(MxLookupConfig(nameservers=[silent.address], budget_ms=30, lookup_timeout_ms=200))
    await mx.learn(["hosted.test"])
    assert table.for_domain("hosted.test") == "other"
    await asyncio.sleep(0.4)
    assert mx.cached("hosted.test") == "other"  # the failure is cached briefly, not retried per message
    await mx.close()

    good, table = wired(MxLookupConfig(nameservers=[dns.address], budget_ms=0))
    await good.learn(["hosted.test"])  # budget 0: no waiting at all
    assert table.for_domain("hosted.test") == "other"
    # the lookup goes on in the background
    await until(lambda: table.for_domain("hosted.test") == "microsoft", "the background lookup")
    await good.close()


async def test_the_engine_applies_a_suspension_to_a_hosted_domain_found_by_mx(make_config, rdb, dns) -> None:
    dns.set("workspace.test", ["1 aspmx.l.google.com."], rdtype="MX")
    engine = Engine(
        make_config({"mx_lookup": {"enabled": True, "nameservers": [dns.address], "budget_ms": 1000}})
    )
    try:
        rdb.set("{sb}:suspend:out2:google", "rule test", ex=60)
        picks = set()
        for i in range(200):
            d = await engine.decide(
                Facts(sender="a@shop.test", recipients=(f"u{i}@workspace.test",)), commit=False
            )
            picks.add(d.endpoint)
        assert "out2" not in picks and picks
    finally:
        await engine.aclose()
