"""Mailbox providers: which provider a recipient domain or an MX host belongs to.

The built-in table covers the large consumer providers by their public mail
domains and by the MX host suffixes they publish. Hosted business domains
(Google Workspace, Microsoft 365) are only recognisable by MX: the feedback
daemon sees the MX host in the log, and deciders look it up (``mx.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smtp_balancer.config.model import BalancerConfig

OTHER = "other"


@dataclass(frozen=True)
class ProviderSpec:
    domains: tuple[str, ...] = ()
    mx_suffixes: tuple[str, ...] = ()


BUILTIN_PROVIDERS: dict[str, ProviderSpec] = {
    "google": ProviderSpec(
        domains=("gmail.com", "googlemail.com"),
        mx_suffixes=("google.com", "googlemail.com"),
    ),
    "microsoft": ProviderSpec(
        domains=(
            "outlook.com",
            "hotmail.com",
            "live.com",
            "msn.com",
            "hotmail.co.uk",
            "hotmail.fr",
            "hotmail.de",
            "hotmail.it",
            "live.co.uk",
            "outlook.de",
        ),
        mx_suffixes=("protection.outlook.com", "outlook.com", "hotmail.com"),
    ),
    "yahoo": ProviderSpec(
        domains=(
            "yahoo.com",
            "ymail.com",
            "rocketmail.com",
            "yahoo.co.uk",
            "yahoo.fr",
            "yahoo.de",
            "yahoo.co.jp",
            "aol.com",
            "aim.com",
        ),
        mx_suffixes=("yahoodns.net",),
    ),
    "apple": ProviderSpec(domains=("icloud.com", "me.com", "mac.com"), mx_suffixes=("icloud.com",)),
    "united-internet": ProviderSpec(
        domains=("gmx.de", "gmx.net", "gmx.com", "web.de", "mail.com"),
        mx_suffixes=("gmx.net", "web.de", "mail.com"),
    ),
    "yandex": ProviderSpec(
        domains=("yandex.ru", "yandex.com", "ya.ru"), mx_suffixes=("yandex.net", "yandex.ru")
    ),
    "mailru": ProviderSpec(domains=("mail.ru", "bk.ru", "inbox.ru", "list.ru"), mx_suffixes=("mail.ru",)),
    "proton": ProviderSpec(domains=("proton.me", "protonmail.com", "pm.me"), mx_suffixes=("protonmail.ch",)),
    "zoho": ProviderSpec(domains=("zoho.com", "zohomail.com"), mx_suffixes=("zoho.com", "zoho.eu")),
    "fastmail": ProviderSpec(domains=("fastmail.com", "fastmail.fm"), mx_suffixes=("messagingengine.com",)),
    "comcast": ProviderSpec(domains=("comcast.net",), mx_suffixes=("comcast.net",)),
}


@dataclass
class ProviderTable:
    """Domain and MX-suffix lookups, built-ins first extended by the YAML."""

    by_domain: dict[str, str] = field(default_factory=dict)
    mx_suffixes: list[tuple[str, str]] = field(default_factory=list)
    # providers learned by MX lookup at decision time (smtp_balancer/mx.py), if any
    learned: Callable[[str], str | None] | None = None

    @classmethod
    def build(cls, extra: Mapping[str, ProviderSpec] | None = None) -> ProviderTable:
        table = cls()
        specs = dict(BUILTIN_PROVIDERS)
        for name, spec in (extra or {}).items():
            base = specs.get(name, ProviderSpec())
            specs[name] = ProviderSpec(
                domains=base.domains + tuple(spec.domains),
                mx_suffixes=base.mx_suffixes + tuple(spec.mx_suffixes),
            )
        for name, spec in specs.items():
            for domain in spec.domains:
                table.by_domain[domain.lower().rstrip(".")] = name
            for suffix in spec.mx_suffixes:
                table.mx_suffixes.append((suffix.lower().strip(".").lstrip("*."), name))
        # longest suffix first, so protection.outlook.com beats outlook.com
        table.mx_suffixes.sort(key=lambda item: -len(item[0]))
        return table

    @classmethod
    def from_config(cls, config: BalancerConfig) -> ProviderTable:
        return cls.build(
            {n: ProviderSpec(tuple(p.domains), tuple(p.mx_suffixes)) for n, p in config.providers.items()}
        )

    @property
    def names(self) -> set[str]:
        return set(self.by_domain.values()) | {name for _, name in self.mx_suffixes}

    def for_domain(self, domain: str) -> str:
        return self._provider(domain.lower().rstrip("."))

    def _provider(self, domain: str) -> str:
        """The provider of a normalised domain (as ``domain_of`` returns it)."""
        known = self.by_domain.get(domain)
        if known is None and self.learned is not None:
            known = self.learned(domain)
        return known or OTHER

    def for_mx(self, host: str) -> str:
        host = host.lower().rstrip(".")
        for suffix, name in self.mx_suffixes:
            if host == suffix or host.endswith("." + suffix):
                return name
        return OTHER

    def for_domains(self, domains: Iterable[str]) -> dict[str, int]:
        """Recipient count per provider, in first-seen order, from each recipient's
        domain (``domain_of``: already normalised)."""
        counts: dict[str, int] = {}
        for domain in domains:
            provider = self._provider(domain)
            counts[provider] = counts.get(provider, 0) + 1
        return counts


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".").strip("<>")
