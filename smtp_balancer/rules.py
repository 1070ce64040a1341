"""Routing rules: first match wins, and the match names a pool.

Within one condition any listed value may match; all given conditions must
match. Recipient conditions (domain, provider) match when any recipient
matches, because Postfix applies one FILTER to the whole message.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from smtp_balancer.config.model import RuleConfig
from smtp_balancer.facts import Facts


def _globs(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(fnmatch.translate(p.lower()) for p in patterns))


@dataclass(frozen=True)
class CompiledRule:
    name: str
    pool: str
    sender: re.Pattern[str] | None
    sender_domain: re.Pattern[str] | None
    sasl_username: frozenset[str] | None
    client: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    recipient_domain: re.Pattern[str] | None
    provider: frozenset[str] | None
    message_class: frozenset[str] | None
    size_min: int | None
    size_max: int | None

    @classmethod
    def compile(cls, rule: RuleConfig) -> CompiledRule:
        return cls(
            name=rule.name,
            pool=rule.pool,
            sender=_globs(rule.sender),
            sender_domain=_globs(rule.sender_domain),
            sasl_username=frozenset(rule.sasl_username) or None,
            client=tuple(ipaddress.ip_network(c, strict=False) for c in rule.client),
            recipient_domain=_globs(rule.recipient_domain),
            provider=frozenset(rule.provider) or None,
            message_class=frozenset(c.lower() for c in rule.message_class) or None,
            size_min=rule.size.min if rule.size else None,
            size_max=rule.size.max if rule.size else None,
        )

    def matches(self, facts: Facts, providers: Sequence[str]) -> bool:
        if self.sender and not self.sender.match(facts.sender.lower()):
            return False
        if self.sender_domain and not self.sender_domain.match(facts.sender_domain):
            return False
        if self.sasl_username is not None and facts.sasl_username not in self.sasl_username:
            return False
        if self.client and not in_networks(facts.client_address, self.client):
            return False
        if self.recipient_domain and not any(self.recipient_domain.match(d) for d in facts.recipient_domains):
            return False
        if self.provider is not None and self.provider.isdisjoint(providers):
            return False
        if self.message_class is not None and (facts.message_class or "").lower() not in self.message_class:
            return False
        if self.size_min is not None and (facts.size is None or facts.size < self.size_min):
            return False
        return not (self.size_max is not None and (facts.size is None or facts.size > self.size_max))


def in_networks(address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether ``address`` is in any of ``networks``; not an IP address means no."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


class RuleSet:
    def __init__(self, rules: Sequence[RuleConfig]) -> None:
        self.rules = tuple(CompiledRule.compile(r) for r in rules)

    def match(self, facts: Facts, providers: Sequence[str]) -> CompiledRule | None:
        for rule in self.rules:
            if rule.matches(facts, providers):
                return rule
        return None
