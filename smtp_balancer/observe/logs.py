"""Structured log lines: logfmt or JSON, one event per line.

Fields ride on the record as ``extra={"fields": {...}}`` (see ``fields()``), so
call sites stay plain ``logging`` calls. Every value is escaped: a reply text, a
garbage log line or a client's address can never start a new log line.
"""

from __future__ import annotations

import json
import logging
import os
import select
import sys
import threading
import time
from typing import Any, Literal

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
        self._pending = 0  # bytes buffered since the last write(2), at most
        self._written = float("-inf")  # the first line (usually "listening on") goes out at once
        self._stop_flushing = threading.Event()
        threading.Thread(target=self._writer, name="log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record), record.levelno)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _write(self, line: str, levelno: int) -> None:
        if self.stream.closed:  # a line at exit, after close(): straight to stderr
            sys.stderr.write(line + self.terminator)
            return
        size = len(line) + 1 if line.isascii() else 4 * len(line) + 1  # UTF-8: 4 bytes a character at most
        if self._pending and self._pending + size > select.PIPE_BUF:
            self.flush()  # the handler's lock is re-entrant: callers of _write hold it
        self.stream.write(line + self.terminator)
        self._pending += size
        now = time.monotonic()
        if levelno >= logging.WARNING or now - self._written >= self.interval_s:
            self.flush()
            self._written = now

    def emit_event(self, levelno: int, name: str, msg: str, extra: dict[str, Any], tail: Tail = ()) -> None:
        """``emit`` without a LogRecord: for the per-decision line (see ``event``)."""
        formatter = self.formatter
        assert isinstance(formatter, StructuredFormatter)
        try:
            with self.lock:  # type: ignore[union-attr]
                line = formatter.render_event(
                    time.time(), logging.getLevelName(levelno), name, msg, extra, tail
                )
                self._write(line, levelno)
        except Exception:  # as logging does: a log line never breaks the caller
            self.handleError(logging.makeLogRecord({"msg": msg, "levelno": levelno, "name": name}))

    def _writer(self) -> None:
        while not self._stop_flushing.wait(self.interval_s):
            self.flush()  # takes the handler's lock

    def close(self) -> None:
        self._stop_flushing.set()
        with self.lock:  # type: ignore[union-attr]
            if not self.stream.closed:
                self.stream.flush()
                self.stream.close()
        super().close()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self.stream.closed:
                self.stream.flush()
                self._pending = 0


_direct: BufferedStderrHandler | None = None  # set by configure() when event() may bypass logging


def event(logger: logging.Logger, levelno: int, msg: str, extra: dict[str, Any], tail: Tail = ()) -> None:
    """A structured line, like ``logger.log(levelno, msg, extra=fields(**extra, **dict(tail)))``.
    ``tail``: fields that repeat from line to line, rendered once (see render_event).

    A LogRecord (caller lookup, thread and process names) costs about as much as
    the rest of a local decision; when configure() set up our handler alone, a
    per-message line goes straight to it instead, formatted the same way.
    """
    if not logger.isEnabledFor(levelno):
        return
    direct = _direct
    # only while our handler is still the root's one and only (not after a test
    # framework or another configure() swapped it) and nothing else would see the line
    handlers = logging.root.handlers
    if (
        direct is None
        or len(handlers) != 1
        or handlers[0] is not direct
        or logger.handlers
        or not logger.propagate
    ):
        logger.log(levelno, msg, extra={"fields": {**extra, **dict(tail)} if tail else extra})
        return
    direct.emit_event(levelno, logger.name, msg, extra, tail)


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
    global _direct
    _direct = handler if isinstance(handler, BufferedStderrHandler) else None
