"""Structured log lines: logfmt or JSON, one event per line.

Fields ride on the record as ``extra={"fields": {...}}`` (see ``fields()``), so
call sites stay plain ``logging`` calls. Every value is escaped: a reply text, a
garbage log line or a client's address can never start a new log line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["logfmt", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("logfmt", "json")

_BARE = re.compile(r"[A-Za-z0-9_.:/@+-]+")
_KEY_JUNK = re.compile(r"[^A-Za-z0-9_.-]")


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """``log.info("decision", extra=fields(queue_id=...))``: structured fields."""
    return {"fields": values}


def _logfmt_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if text and _BARE.fullmatch(text):
        return text
    # quoted, with backslash, quote and every control character escaped
    escaped = json.dumps(text, ensure_ascii=False)
    return escaped


def _logfmt_key(key: str) -> str:
    return _KEY_JUNK.sub("_", key) or "_"


class StructuredFormatter(logging.Formatter):
    def __init__(self, style: LogFormat = "logfmt") -> None:
        super().__init__()
        self.style = style

    def record_fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                # a field never overwrites the four above
                out[key if key not in out else f"field_{key}"] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return out

    def format(self, record: logging.LogRecord) -> str:
        values = self.record_fields(record)
        if self.style == "json":
            return json.dumps(values, ensure_ascii=False, default=str)
        return " ".join(f"{_logfmt_key(k)}={_logfmt_value(v)}" for k, v in values.items())


def configure(style: LogFormat = "logfmt", level: str | int = logging.WARNING) -> None:
    """One stderr handler with our formatter on the root logger (replacing any other)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StructuredFormatter(style))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
