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

from smtp_balancer.config.builtins import BUILTIN_PROVIDERS, OTHER, ProviderSpec

if TYPE_CHECKING:
    from smtp_balancer.config.model import BalancerConfig


@dataclass
class ProviderTable:
    """Domain and MX-suffix lookups, built-ins first extended by the YAML."""

    by_domain: dict[str, str] = field(default_factory=dict)
    mx_suffixes: list[tuple[str, str]] = field(default_factory=list)
    # providers learned by MX lookup at decision time (smtp_balancer/mx.py), if any
    learned: Callable[[str], str | None] | None = None
    # MX host -> provider, as found: a log names the same few MX hosts on every line
    _by_mx: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

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
        known = self._by_mx.get(host)
        if known is not None:
            return known
        found = OTHER
        name = host.lower().rstrip(".")
        for suffix, provider in self.mx_suffixes:
            if name == suffix or name.endswith("." + suffix):
                found = provider
                break
        if len(self._by_mx) >= 4096:
            self._by_mx.clear()
        self._by_mx[host] = found
        return found

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
