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
    out = {}
    for key, raw in _LOGFMT.findall(text):
        if raw.startswith('"'):
            try:
                raw = json.loads(raw)
            except ValueError:
                raw = raw.strip('"')
        out[key] = raw
    return out
