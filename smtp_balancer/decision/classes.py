"""Message classes from headers, sans I/O: one classification for the milter (Postfix)
and the policy daemon (Exim, whose ACL sends the few headers it needs).

The class is an input to the rules (``message_class``), and a rule maps it to a
pool. An explicit class header is honoured only from trusted clients, so a
stranger cannot move their mail into another pool by writing a header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from smtp_balancer.config.services import MilterConfig
from smtp_balancer.decision.rules import in_networks

BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
LIST_HEADERS = frozenset({"list-unsubscribe", "list-id"})


@dataclass(frozen=True)
class Classifier:
    class_header: str = "X-Mail-Class"
    classes: frozenset[str] = frozenset({"transactional", "bulk"})
    default_class: str = "transactional"

    @property
    def wanted(self) -> frozenset[str]:
        """The header names classification reads (lower case); others need not be kept."""
        return frozenset({self.class_header.lower(), "precedence", *LIST_HEADERS})

    def classify(self, headers: Iterable[tuple[str, str]], trusted: bool) -> tuple[str, str]:
        """(class, why) for a message's headers."""
        bulk_why = ""
        explicit = ""
        for name, value in headers:
            key, val = name.lower(), value.strip().lower()
            if key == self.class_header.lower():
                if trusted and val in self.classes:
                    explicit = val
            elif key == "precedence" and val in BULK_PRECEDENCE:
                bulk_why = bulk_why or f"Precedence: {val}"
            elif key in LIST_HEADERS:
                bulk_why = bulk_why or f"{name} present"
        if explicit:
            return explicit, f"{self.class_header}: {explicit}"
        if bulk_why and "bulk" in self.classes:
            return "bulk", bulk_why
        return self.default_class, "default class"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class MessageClasses:
    """The classifier and who is trusted with the class header (``milter:`` settings)."""

    classifier: Classifier = field(default_factory=Classifier)
    trusted: tuple[Network, ...] = ()

    @classmethod
    def from_config(cls, cfg: MilterConfig) -> MessageClasses:
        return cls(
            Classifier(cfg.class_header, frozenset(cfg.classes), cfg.default_class),
            tuple(ipaddress.ip_network(n, strict=False) for n in cfg.trusted_networks),
        )

    def is_trusted(self, client_ip: str, sasl_username: str) -> bool:
        if sasl_username or not client_ip:  # authenticated, or local submission (sendmail/pickup)
            return True
        return in_networks(client_ip, self.trusted)

    def classify(
        self, headers: Iterable[tuple[str, str]], client_ip: str, sasl_username: str
    ) -> tuple[str, str]:
        return self.classifier.classify(headers, self.is_trusted(client_ip, sasl_username))
