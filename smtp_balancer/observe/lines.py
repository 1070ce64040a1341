"""The buffered stderr handler's per-line work, and the per-message event line that
skips the LogRecord. Compiled (setup.py); the logging classes that own it are in
logs.py, which mypyc cannot compile (docs/development.md).

A LogRecord (caller lookup, thread and process names) costs about as much as the
rest of a local decision; when logs.configure() set up its handler alone, a
per-message line goes straight to that handler's LineWriter instead, formatted as
the handler's formatter would.
"""

from __future__ import annotations

import logging
import select
import sys
import time
from typing import Any, TextIO

from smtp_balancer.observe.logfmt import Stamper, Tail, event_line

PIPE_BUF = select.PIPE_BUF
_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


class LineWriter:
    """Whole lines into a buffered text stream, written (flushed) at most every
    ``interval_s``, at once from WARNING up, and before the buffer passes PIPE_BUF
    bytes (see logs.BufferedStderrHandler). Its methods are called with ``lock`` held
    (the handler's, re-entrant), but ``flush``, which takes it."""

    def __init__(self, stream: TextIO, interval_s: float, lock: Any, handler: Any) -> None:
        self.stream = stream
        self.interval_s = interval_s
        self.lock = lock
        self.handler = handler  # its formatter renders what logfmt's fast path does not
        self.logfmt = True  # the formatter's style (StructuredFormatter sets it)
        self.stamper = Stamper()
        self.pending = 0  # bytes buffered since the last write(2), at most
        self.written = float("-inf")  # the first line (usually "listening on") goes out at once

    def write(self, line: str, levelno: int) -> None:
        stream = self.stream
        if stream.closed:  # a line at exit, after close(): straight to stderr
            sys.stderr.write(line + "\n")
            return
        size = len(line) + 1 if line.isascii() else 4 * len(line) + 1  # UTF-8: 4 bytes a character at most
        if self.pending and self.pending + size > PIPE_BUF:
            self._flush()
        stream.write(line + "\n")
        self.pending += size
        now = time.monotonic()
        if levelno >= logging.WARNING or now - self.written >= self.interval_s:
            self._flush()
            self.written = now

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        if not self.stream.closed:
            self.stream.flush()
            self.pending = 0

    def event(
        self,
        levelno: int,
        name: str,
        msg: str,
        extra: dict[str, Any],
        tail: Tail,
        rendered: str | None = None,
    ) -> None:
        """One event's line, rendered and written under the lock (``rendered``: see event())."""
        created = time.time()
        level = _LEVELS.get(levelno)
        with self.lock:
            line = None
            if self.logfmt and level is not None:
                line = event_line(self.stamper.stamp(created), level, name, msg, extra, tail, rendered)
            if line is None:  # JSON, or a key twice: the formatter names them
                line = self.handler.formatter.render_event(
                    created, logging.getLevelName(levelno), name, msg, extra, tail
                )
            self.write(line, levelno)


# set by logs.configure(): its handler, and that handler's writer, while event() may bypass logging
_handler: Any = None
_writer: LineWriter | None = None


def go_direct(handler: Any, writer: LineWriter | None) -> None:
    global _handler, _writer
    _handler, _writer = handler, writer


def direct_writer() -> LineWriter | None:
    return _writer


def event(
    logger: logging.Logger,
    levelno: int,
    msg: str,
    extra: dict[str, Any],
    tail: Tail = (),
    rendered: str | None = None,
) -> None:
    """A structured line, like ``logger.log(levelno, msg, extra=fields(**extra, **dict(tail)))``.
    ``tail``: fields that repeat from line to line, rendered once (logfmt.event_line).
    ``rendered``: ``extra`` as logfmt.render_pairs renders it, when the caller made it
    cheaper (the decision line); used only where a logfmt line is written directly."""
    # Logger.isEnabledFor's own cache (CPython keeps it in _cache), read without a
    # Python frame per line; the method itself when there is no answer there
    cache = getattr(logger, "_cache", None)
    enabled = cache.get(levelno) if type(cache) is dict and not logger.disabled else None
    if enabled is None:
        enabled = logger.isEnabledFor(levelno)
    if not enabled:
        return
    writer = _writer
    # only while our handler is still the root's one and only (not after a test
    # framework or another configure() swapped it) and nothing else would see the line
    handlers = logging.root.handlers
    if (
        writer is None
        or len(handlers) != 1
        or handlers[0] is not _handler
        or logger.handlers
        or not logger.propagate
    ):
        logger.log(levelno, msg, extra={"fields": {**extra, **dict(tail)} if tail else extra})
        return
    try:
        writer.event(levelno, logger.name, msg, extra, tail, rendered)
    except Exception:  # as logging does: a log line never breaks the caller
        _handler.handleError(logging.makeLogRecord({"msg": msg, "levelno": levelno, "name": logger.name}))
