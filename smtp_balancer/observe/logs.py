"""Structured log lines: logfmt or JSON, one event per line.

Fields ride on the record as ``extra={"fields": {...}}`` (see ``fields()``), so
call sites stay plain ``logging`` calls. Every value is escaped: a reply text, a
garbage log line or a client's address can never start a new log line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any, Literal

from smtp_balancer.observe.lines import LineWriter, go_direct
from smtp_balancer.observe.logfmt import HEAD, Stamper, Tail, event_line, render_pairs

LogFormat = Literal["logfmt", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("logfmt", "json")


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """``log.info("decision", extra=fields(queue_id=...))``: structured fields."""
    return {"fields": values}


class StructuredFormatter(logging.Formatter):
    def __init__(self, style: LogFormat = "logfmt") -> None:
        super().__init__()
        self.style = style
        self._stamper = Stamper()

    def _timestamp(self, created: float) -> str:
        return self._stamper.stamp(created)

    def event_fields(
        self, created: float, levelname: str, name: str, msg: str, extra: dict[str, Any] | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": self._timestamp(created),
            "level": levelname.lower(),
            "logger": name,
            "msg": msg,
        }
        if extra:
            if HEAD.isdisjoint(extra):
                out.update(extra)
            else:
                for key, value in extra.items():
                    # a field never overwrites the four above
                    out[key if key not in out else f"field_{key}"] = value
        return out

    def record_fields(self, record: logging.LogRecord) -> dict[str, Any]:
        extra = getattr(record, "fields", None)
        out = self.event_fields(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            extra if isinstance(extra, dict) else None,
        )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return out

    def render(self, values: dict[str, Any]) -> str:
        if self.style == "json":
            return json.dumps(values, ensure_ascii=False, default=str)
        return render_pairs(values.items())

    def render_event(
        self, created: float, levelname: str, name: str, msg: str, extra: dict[str, Any], tail: Tail
    ) -> str:
        """``render(event_fields(...))`` with ``tail``'s fields after ``extra``'s. In
        logfmt a tail seen before is not rendered again: a decision line repeats its
        rule, pool, endpoint, reason and action, and only its ids are new."""
        if self.style == "logfmt":
            line = event_line(self._timestamp(created), levelname.lower(), name, msg, extra, tail)
            if line is not None:
                return line
        # JSON, or a key twice, or one of the head's: named as event_fields names them
        return self.render(self.event_fields(created, levelname, name, msg, {**extra, **dict(tail)}))

    def format(self, record: logging.LogRecord) -> str:
        return self.render(self.record_fields(record))


class BufferedStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr through our own buffer, written at most every ``interval_s``.

    A decision line per message would otherwise cost a write(2) per line: it
    cut the policy daemon's throughput by about a third in the benchmark.
    Warnings and worse go out at once, with everything buffered before them; a
    background thread writes what a quiet daemon left in the buffer.

    Each write(2) is whole lines of at most PIPE_BUF bytes (a longer line goes
    alone), so that processes sharing one stderr pipe (policyd.workers) never
    interleave inside a line: the kernel keeps such writes to a pipe whole.
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        stream = open(  # noqa: SIM115 - the handler owns it until the process ends
            os.dup(sys.stderr.fileno()), "w", buffering=1 << 16, encoding="utf-8", errors="backslashreplace"
        )
        super().__init__(stream)
        self.interval_s = interval_s
        # the per-line work, compiled (lines.py); it holds this handler's lock
        self.writer = LineWriter(stream, interval_s, self.lock, self)
        self._stop_flushing = threading.Event()
        threading.Thread(target=self._flusher, name="log-flush", daemon=True).start()

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        super().setFormatter(fmt)
        # the writer renders logfmt event lines itself, as this formatter would
        self.writer.logfmt = isinstance(fmt, StructuredFormatter) and fmt.style == "logfmt"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write(self.format(record), record.levelno)  # handle() holds the lock
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _flusher(self) -> None:
        while not self._stop_flushing.wait(self.interval_s):
            self.flush()  # takes the handler's lock

    def close(self) -> None:
        self._stop_flushing.set()
        with self.lock:  # type: ignore[union-attr]
            if not self.stream.closed:
                self.writer.flush()  # deferred lines are rendered first (lines.LineWriter.defer)
                self.stream.close()
        super().close()

    def flush(self) -> None:
        self.writer.flush()


def _stderr_handler(flush_interval_s: float) -> logging.Handler:
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a test runner, say
        return logging.StreamHandler(sys.stderr)
    return BufferedStderrHandler(flush_interval_s)


def configure(
    style: LogFormat = "logfmt", level: str | int = logging.WARNING, flush_interval_s: float = 0.2
) -> None:
    """One stderr handler with our formatter on the root logger (replacing any other)."""
    handler = _stderr_handler(flush_interval_s)
    handler.setFormatter(StructuredFormatter(style))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    go_direct(handler, handler.writer if isinstance(handler, BufferedStderrHandler) else None)
