"""Routing rules: first match wins, and the match names a pool.

Within one condition any listed value may match; all given conditions must
match. Recipient conditions (domain, provider) match when any recipient
matches, because Postfix applies one FILTER to the whole message.

A rule whose recipient-domain (or sender-domain) condition lists exact domains
only is indexed by them, so a thousand such rules cost one dict lookup per
domain of the message, not a thousand pattern tests. Rules with glob patterns or
without a domain condition stay in a list that is tried in order; candidates
from both are merged by rule position, so first-match-wins is unchanged.
"""

from __future__ import annotations

import fnmatch
import heapq
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from smtp_balancer.config.model import RuleConfig
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.providers import domain_of

_GLOB_CHARS = frozenset("*?[")


def _globs(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(fnmatch.translate(p.lower()) for p in patterns))


def _exact(patterns: Sequence[str]) -> tuple[str, ...] | None:
    """The domains of a condition that lists exact domains only, else None."""
    if not patterns or any(_GLOB_CHARS & set(p) for p in patterns):
        return None
    return tuple(p.lower() for p in patterns)


@dataclass(slots=True, init=False)
class MessageView:
    """The facts a rule tests, each derived once per message (not frozen, and its own
    __init__: see decision/facts.py)."""

    facts: Facts
    sender: str  # lower case
    sender_domain: str
    recipient_domains: tuple[str, ...]
    providers: frozenset[str]

    def __init__(
        self,
        facts: Facts,
        sender: str,
        sender_domain: str,
        recipient_domains: tuple[str, ...],
        providers: frozenset[str],
    ) -> None:
        self.facts = facts
        self.sender = sender
        self.sender_domain = sender_domain
        self.recipient_domains = recipient_domains
        self.providers = providers

    @classmethod
    def of(
        cls, facts: Facts, providers: Sequence[str], recipient_domains: Sequence[str] | None = None
    ) -> MessageView:
        """``recipient_domains``: ``domain_of`` of each recipient, when the caller has them."""
        sender = facts.sender.lower()
        if recipient_domains is None:
            recipient_domains = [domain_of(r) for r in facts.recipients]
        elif len(recipient_domains) != len(facts.recipients):  # zip below is not strict (choice.py)
            raise ValueError(f"{len(facts.recipients)} recipients but {len(recipient_domains)} domains")
        # each domain once, in first-seen order: a loop, where dict.fromkeys over a
        # generator is two calls through Python from compiled code
        domains: list[str] = []
        seen: set[str] = set()
        for domain, recipient in zip(recipient_domains, facts.recipients):  # noqa: B905
            if "@" in recipient and domain not in seen:
                seen.add(domain)
                domains.append(domain)
        # the class itself, not cls: a native constructor call (cls goes through type())
        return MessageView(
            facts,
            sender,
            domain_of(sender) if "@" in sender else "",
            tuple(domains),
            frozenset(providers),
        )


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

    def matches(self, view: MessageView) -> bool:
        facts = view.facts
        if self.sender and not self.sender.match(view.sender):
            return False
        if self.sender_domain and not self.sender_domain.match(view.sender_domain):
            return False
        if self.sasl_username is not None and facts.sasl_username not in self.sasl_username:
            return False
        if self.client and not in_networks(facts.client_address, self.client):
            return False
        if self.recipient_domain and not any(self.recipient_domain.match(d) for d in view.recipient_domains):
            return False
        if self.provider is not None and self.provider.isdisjoint(view.providers):
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
        self._by_recipient_domain: dict[str, list[int]] = {}
        self._by_sender_domain: dict[str, list[int]] = {}
        unindexed: list[int] = []
        for i, rule in enumerate(rules):
            if (domains := _exact(rule.recipient_domain)) is not None:
                index = self._by_recipient_domain
            elif (domains := _exact(rule.sender_domain)) is not None:
                index = self._by_sender_domain
            else:
                unindexed.append(i)
                continue
            for domain in dict.fromkeys(domains):
                index.setdefault(domain, []).append(i)
        self._unindexed = tuple(unindexed)
        self._indexed = bool(self._by_recipient_domain or self._by_sender_domain)

    def match(self, facts: Facts | MessageView, providers: Sequence[str] = ()) -> CompiledRule | None:
        view = facts if isinstance(facts, MessageView) else MessageView.of(facts, providers)
        rules = self.rules
        for i in self._candidates(view):
            if rules[i].matches(view):
                return rules[i]
        return None

    def _candidates(self, view: MessageView) -> Sequence[int]:
        """Positions of the rules that can match, in rule order."""
        if not self._indexed:
            return self._unindexed
        hits: set[int] = set()
        by_rcpt = self._by_recipient_domain
        for domain in view.recipient_domains:
            if (found := by_rcpt.get(domain)) is not None:
                hits.update(found)
        if (found := self._by_sender_domain.get(view.sender_domain)) is not None:
            hits.update(found)
        if not hits:
            return self._unindexed
        return list(heapq.merge(sorted(hits), self._unindexed))
