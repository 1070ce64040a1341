"""Whose complaint is it: endpoint by Source-IP, provider by reporter, tenant by sender. Sans I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from smtp_balancer.complaints.arf import Report
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.providers import OTHER, ProviderTable
from smtp_balancer.decision.tenants import TenantTable

# the domains feedback loops send reports from (the report's From, or a parent of it);
# feedback.complaints.reporters adds to and overrides these
BUILTIN_REPORTERS: dict[str, str] = {
    "yahoo.com": "yahoo",
    "yahoo.net": "yahoo",
    "yahoo-inc.com": "yahoo",
    "aol.com": "yahoo",
    "hotmail.com": "microsoft",
    "outlook.com": "microsoft",
    "microsoft.com": "microsoft",
    "live.com": "microsoft",
    "comcast.net": "comcast",
    "mail.ru": "mailru",
    "yandex.ru": "yandex",
    "yandex.net": "yandex",
    "fastmail.com": "fastmail",
    "messagingengine.com": "fastmail",
    "zoho.com": "zoho",
    "gmx.net": "united-internet",
    "web.de": "united-internet",
    "icloud.com": "apple",
    "apple.com": "apple",
}


@dataclass(frozen=True)
class Attribution:
    endpoint: str | None  # None: the Source-IP is none of our endpoints
    provider: str
    tenant: str


def _parents(domain: str) -> list[str]:
    """arf.mail.yahoo.com -> [arf.mail.yahoo.com, mail.yahoo.com, yahoo.com, com]."""
    out = []
    while domain:
        out.append(domain)
        domain = domain.partition(".")[2]
    return out


class Attributor:
    def __init__(
        self,
        config: BalancerConfig,
        providers: ProviderTable | None = None,
        tenants: TenantTable | None = None,
        reporters: Mapping[str, str] | None = None,
    ) -> None:
        self.providers = providers or ProviderTable.from_config(config)
        self.tenants = tenants if tenants is not None else TenantTable(config.tenants)
        self.reporters = {**BUILTIN_REPORTERS, **(reporters or config.feedback.complaints.reporters)}
        # the address a provider sees is the public one (NAT) or the bind address
        self.by_ip = config.endpoints_by_ip()

    def provider(self, report: Report) -> str:
        for domain in _parents(report.reporter):
            if domain in self.reporters:
                return self.reporters[domain]
        # an unknown reporter: the provider of the complaining recipient's domain
        return self.providers.for_domain(report.recipient_domain) if report.recipient_domain else OTHER

    def attribute(self, report: Report) -> Attribution:
        return Attribution(
            endpoint=self.by_ip.get(ipaddress.ip_address(report.source_ip)),
            provider=self.provider(report),
            tenant=self.tenants.of(report.sender_domain),
        )
