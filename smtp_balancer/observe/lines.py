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
from typing import Any, Final, TextIO

from mypy_extensions import mypyc_attr

from smtp_balancer.observe.logfmt import Stamper, Tail, event_line

PIPE_BUF: Final = select.PIPE_BUF
_LEVELS: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


# per-message lines kept unrendered until this many wait: rendered together, their code
# is loaded into the CPU caches once for the batch, not once for each message
DEFER_MAX: Final = 32

# what a line's event needs: level, logger name, msg, extra, tail, extra rendered (or None)
Event = tuple[int, str, str, dict[str, Any], Tail, str | None]


@mypyc_attr(allow_interpreted_subclasses=True)
class Deferred:
    """A per-message line kept unrendered (``LineWriter.defer``). A base class, not a
    Protocol: the batch calls a compiled line's ``event`` natively."""

    def event(self) -> Event:
        raise NotImplementedError


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
        self.deferred: list[tuple[float, Deferred]] = []  # (created, line), in order

    def write(self, line: str, levelno: int) -> None:
        if self.deferred:  # the lines before this one go first
            self._render_deferred()
        self._write(line, levelno)

    def _write(self, line: str, levelno: int) -> None:
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
        if self.deferred:
            self._render_deferred()
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
        with self.lock:
            self.write(self._line(created, levelno, name, msg, extra, tail, rendered), levelno)

    def defer(self, line: Deferred) -> None:
        """A per-message INFO line, stamped now and rendered with the next ones: at
        DEFER_MAX of them, before any other line, and at the next flush (the
        handler's thread flushes every ``interval_s``). ``line.event()`` must give
        the same then as now: it holds only values that do not change."""
        created = time.time()
        with self.lock:
            deferred = self.deferred
            deferred.append((created, line))
            if len(deferred) >= DEFER_MAX:
                self._render_deferred()

    def _render_deferred(self) -> None:
        deferred, self.deferred = self.deferred, []
        for created, line in deferred:
            try:
                levelno, name, msg, extra, tail, rendered = line.event()
                self._write(self._line(created, levelno, name, msg, extra, tail, rendered), levelno)
            except Exception:  # as logging does: a bad line is reported, the others written
                self.handler.handleError(logging.makeLogRecord({"msg": repr(line), "created": created}))

    def _line(
        self,
        created: float,
        levelno: int,
        name: str,
        msg: str,
        extra: dict[str, Any],
        tail: Tail,
        rendered: str | None,
    ) -> str:
        level = _LEVELS.get(levelno)
        line = None
        if self.logfmt and level is not None:
            line = event_line(self.stamper.stamp(created), level, name, msg, extra, tail, rendered)
        if line is None:  # JSON, or a key twice: the formatter names them
            line = self.handler.formatter.render_event(
                created, logging.getLevelName(levelno), name, msg, extra, tail
            )
        return line


# set by logs.configure(): its handler, and that handler's writer, while event() may bypass logging
_handler: Any = None
_writer: LineWriter | None = None


def go_direct(handler: Any, writer: LineWriter | None) -> None:
    global _handler, _writer
    _handler, _writer = handler, writer


def direct_writer() -> LineWriter | None:
    return _writer


def enabled(logger: logging.Logger, levelno: int) -> bool:
    """``logger.isEnabledFor(levelno)``, from CPython's own cache (``Logger._cache``)
    without a Python frame per line; the method itself when the cache has no answer."""
    cache = getattr(logger, "_cache", None)
    answer = cache.get(levelno) if type(cache) is dict and not logger.disabled else None
    if answer is None:
        return bool(logger.isEnabledFor(levelno))
    return bool(answer)


def writer_for(logger: logging.Logger) -> LineWriter | None:
    """The writer a line of ``logger`` may go to directly: only while our handler is
    still the root's one and only (not after a test framework or another configure()
    swapped it) and nothing else would see the line."""
    writer = _writer
    handlers = logging.root.handlers
    if (
        writer is None
        or len(handlers) != 1
        or handlers[0] is not _handler
        or logger.handlers
        or not logger.propagate
    ):
        return None
    return writer


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
    if not enabled(logger, levelno):
        return
    writer = writer_for(logger)
    if writer is None:
        logger.log(levelno, msg, extra={"fields": {**extra, **dict(tail)} if tail else extra})
        return
    try:
        writer.event(levelno, logger.name, msg, extra, tail, rendered)
    except Exception:  # as logging does: a log line never breaks the caller
        _handler.handleError(logging.makeLogRecord({"msg": msg, "levelno": levelno, "name": logger.name}))
