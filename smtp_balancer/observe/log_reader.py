"""Reading our own structured log lines back (logfmt or JSON), as
``observe/logs.py`` writes them: for ``trace``, ``shadow report`` and ``replay``."""

from __future__ import annotations

import json
import re

_LOGFMT = re.compile(r'([\w.-]+)=("(?:[^"\\]|\\.)*"|\S*)')


def _as_logfmt_text(value: object) -> str:
    """A JSON value as the logfmt line has it: null "", booleans true/false."""
    if value is None:
        return ""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _as_written(text: str) -> dict[str, str] | None:
    """The fields of a line as our writer makes it (``key=value`` one space apart, a key
    a plain name, a value bare or quoted without escapes), read with string searches
    only; None for any other line, which the regex then reads (to the same fields: the
    tests compare the two)."""
    out: dict[str, str] = {}
    n = len(text)
    start = 0
    while True:
        eq = text.find("=", start)
        if eq < 0:
            return None
        key = text[start:eq]
        if not (key.isidentifier() and key.isascii()):
            return None
        if text.startswith('"', eq + 1):
            close = text.find('"', eq + 2)
            if close < 0:
                return None
            value = text[eq + 2 : close]
            if "\\" in value:
                return None  # escapes: JSON reads them
            end = close + 1
        else:
            end = text.find(" ", eq + 1)
            if end < 0:
                end = n
            value = text[eq + 1 : end]
            if not value.isprintable():  # another blank (a tab...) ends the regex's value there
                return None
        out[key] = value
        if end == n:
            return out
        if text[end] != " " or end + 1 == n:
            return None
        start = end + 1


def parse_fields(line: str) -> dict[str, str] | None:
    """A structured log line (logfmt or JSON) as text fields; None for anything else."""
    text = line.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        return {str(k): _as_logfmt_text(v) for k, v in obj.items()}
    if " msg=" not in text and not text.startswith("ts="):
        return None
    fast = _as_written(text)
    return fast if fast is not None else _by_pattern(text)


def _by_pattern(text: str) -> dict[str, str]:
    """Any logfmt line's fields, by the pattern: what a hand-edited or odd line gets."""
    out = {}
    for key, raw in _LOGFMT.findall(text):
        if raw.startswith('"'):
            if len(raw) > 1 and raw.endswith('"') and "\\" not in raw:
                raw = raw[1:-1]  # nothing escaped: the text between the quotes, as JSON reads it
            else:
                try:
                    raw = json.loads(raw)
                except ValueError:
                    raw = raw.strip('"')
        out[key] = raw
    return out
