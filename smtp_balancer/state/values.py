"""Reading hand-editable Redis values in Python, with the same rules as select.lua."""

from __future__ import annotations

import re

from smtp_balancer.state.keys import ADMIN_STATES

_UINT = re.compile(r"\d{1,7}")
_COUNT = re.compile(r"\d{1,15}")


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
