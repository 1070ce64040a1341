"""Reading hand-editable Redis values in Python, with the same rules as select.lua."""

from __future__ import annotations

import re

from smtp_balancer.state.keys import ADMIN_STATES

_UINT = re.compile(r"\d{1,7}")
_COUNT = re.compile(r"\d{1,15}")


def text_of(value: object) -> str | None:
    """A reply value as text: bytes decoded, str kept; anything else (None, an error) is None."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def parse_weight(raw: str | None) -> int | None:
    """A live weight, or None when absent or junk (the YAML weight applies)."""
    return int(raw) if raw is not None and _UINT.fullmatch(raw) else None


def parse_count(raw: str | None) -> int | None:
    """A counter value; 0 when absent, None when junk."""
    if raw is None:
        return 0
    return int(raw) if _COUNT.fullmatch(raw) else None


def parse_state(raw: str | None) -> str | None:
    """An admin state; "active" when absent, None when junk (treated as active)."""
    if raw is None:
        return "active"
    return raw if raw in ADMIN_STATES else None
