"""Durations as operators write them: 90, 90s, 30m, 2h, 1d, 1h30m."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str, unit_required: bool = False) -> int:
    """Seconds in ``text``; raises ValueError with the offending text. ``unit_required``:
    a bare number is refused (the CLI: `--for 90` read as seconds surprised operators)."""
    value = text.strip().lower()
    if value.isdigit():
        if unit_required:
            raise ValueError(f"give a unit: {text!r} could be seconds or minutes (e.g. {value}s or {value}m)")
        seconds = int(value)
    else:
        parts = _PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h, 1d)")
        seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds


def format_duration(seconds: int) -> str:
    if seconds < 0:
        return "no expiry"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not out:
        out.append(f"{seconds}s")
    return "".join(out)
