"""Message classes from headers, sans I/O.

The class is an input to the rules (``message_class``), and a rule maps it to a
pool. An explicit class header is honoured only from trusted clients, so a
stranger cannot move their mail into another pool by writing a header.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
