"""The value grammar for hand-editable Redis values, in Python.

``values.lua`` is the Lua half, prepended to every script that reads these
values; ``tests/state/test_values.py`` feeds both the same generated strings.
Only ASCII decimal integers and decimals are numbers: ``re.ASCII`` classes, never
``int()`` or ``float()`` on raw text, which take "٣", "1_0", "0x10" or " 1e3 ".
"""

from __future__ import annotations

import re

from smtp_balancer.state.keys import ADMIN_STATES

WEIGHT_DIGITS = 7
COUNT_DIGITS = 15
DECIMAL_MAX_LEN = 32
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def text_of(value: object) -> str | None:
    """A reply value as text: bytes decoded, str kept; anything else (None, an error) is None."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def hash_texts(raw: object) -> dict[str, str]:
    """A hash reply (HGETALL) as text, whatever the client's decoding; {} for anything
    that is not a hash (an error value for a key of another type)."""
    if not isinstance(raw, dict):
        return {}
    return {text_of(k) or "": text_of(v) or "" for k, v in raw.items()}


def parse_int(raw: str | None, digits: int) -> int | None:
    # ASCII digits only (str.isdigit also takes '²', which int() refuses, and
    # Arabic-Indic digits, which int() reads), read here: compiled, ord(raw[i]) is a
    # load, where int() runs the interpreter's general number parser, cold each message
    if raw is None or not raw or len(raw) > digits:
        return None
    value = 0
    for i in range(len(raw)):
        digit = ord(raw[i]) - 48
        if digit < 0 or digit > 9:
            return None
        value = value * 10 + digit
    return value


def parse_decimal(raw: str | None) -> float | None:
    if raw is None or len(raw) > DECIMAL_MAX_LEN or not _DECIMAL.fullmatch(raw):
        return None
    return float(raw)


def parse_weight(raw: str | None) -> int | None:
    """A live weight, or None when absent or junk (the YAML weight applies)."""
    return parse_int(raw, WEIGHT_DIGITS)


def parse_count(raw: str | None) -> int | None:
    """A counter value; 0 when absent or below zero, None when junk. Counters take
    signed deltas (``count.lua``): a give-back from another process may land before
    the count it undoes, and the sum is right once both have."""
    if raw is None:
        return 0
    below = raw.startswith("-")
    count = parse_int(raw[1:] if below else raw, COUNT_DIGITS)
    return None if count is None else 0 if below else count


def parse_state(raw: str | None) -> str | None:
    """An admin state; "active" when absent, None when junk (treated as active)."""
    if raw is None:
        return "active"
    return raw if raw in ADMIN_STATES else None


def parse_until(raw: str | None) -> float | None:
    """A quarantine's ``until`` (epoch seconds); None when absent or junk (it never lifts)."""
    return parse_decimal(raw)


def parse_throttle(raw: str | None) -> float | None:
    """The factor of a throttle value ``"<factor> <reason>"``: strictly between 0 and 1, else None."""
    if raw is None:
        return None
    factor = parse_decimal(raw.partition(" ")[0])
    return factor if factor is not None and 0 < factor < 1 else None
