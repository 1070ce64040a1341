"""The buffered stderr handler's per-line work: when lines are written, and event
lines rendered as the handler's formatter renders them."""

from __future__ import annotations

import io
import logging
import threading

from smtp_balancer.observe.lines import PIPE_BUF, LineWriter
from smtp_balancer.observe.logs import StructuredFormatter


class Stream(io.StringIO):
    """What reached the file: the text as of each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []

    def flush(self) -> None:
        self.flushed.append(self.getvalue())


class Owner:
    def __init__(self, style: str = "logfmt") -> None:
        self.formatter = StructuredFormatter(style)  # type: ignore[arg-type]


def writer(stream: Stream, interval_s: float = 3600.0, style: str = "logfmt") -> LineWriter:
    w = LineWriter(stream, interval_s, threading.RLock(), Owner(style))
    w.logfmt = style == "logfmt"
    return w


def test_the_first_line_goes_out_at_once_and_the_next_wait_for_the_interval() -> None:
    stream = Stream()
    w = writer(stream)
    w.write("a=1", logging.INFO)
    w.write("a=2", logging.INFO)
    assert stream.flushed == ["a=1\n"] and stream.getvalue() == "a=1\na=2\n"


def test_a_warning_goes_out_at_once_with_what_came_before() -> None:
    stream = Stream()
    w = writer(stream)
    for line in ("a=1", "a=2", "a=3"):
        w.write(line, logging.INFO)
    w.write("w=1", logging.WARNING)
    assert stream.flushed[-1] == "a=1\na=2\na=3\nw=1\n"


def test_what_is_buffered_is_written_before_it_passes_pipe_buf() -> None:
    # each write(2) is whole lines of at most PIPE_BUF bytes: workers share one pipe
    stream = Stream()
    w = writer(stream)
    w.write("first", logging.INFO)
    line = "x" * 99
    for _ in range(3 * PIPE_BUF // 100):
        w.write(line, logging.INFO)
    assert stream.flushed[0] == "first\n"
    sizes = [len(b) - len(a) for a, b in zip(stream.flushed, stream.flushed[1:], strict=False)]
    assert len(sizes) >= 2 and all(PIPE_BUF - 100 < size <= PIPE_BUF for size in sizes), sizes
    assert all(text.endswith("\n") for text in stream.flushed)


def test_a_line_after_close_goes_to_stderr(capsys) -> None:
    stream = Stream()
    w = writer(stream)
    stream.close()
    w.write("late=1", logging.INFO)
    assert capsys.readouterr().err == "late=1\n"


def test_event_lines_are_rendered_as_the_formatter_renders_them() -> None:
    extra = {"decision_id": "ab12", "queue_id": None, "odd": 'x\ny="z"'}
    tail = (("outcome", "route"), ("reason", "weight 1 in pool main"), ("n", 3))
    for style in ("logfmt", "json"):
        for fields, t in ((extra, tail), ({"outcome": "twice"}, tail), ({}, ())):
            stream = Stream()
            w = writer(stream, style=style)
            w.event(logging.INFO, "smtp_balancer.decision", "decision", fields, t)
            line = stream.getvalue().rstrip("\n")
            want = Owner(style).formatter.render_event(
                0.0, "INFO", "smtp_balancer.decision", "decision", fields, t
            )
            # the same line but its time stamp (the writer reads the clock)
            strip = (
                (lambda s: s.split(" ", 1)[1]) if style == "logfmt" else (lambda s: s.split('"level"', 1)[1])
            )
            assert strip(line) == strip(want), (style, fields)


def test_an_event_follows_its_loggers_level_as_it_changes(caplog) -> None:
    # event() reads the logger's own level cache: every change must still be seen
    from smtp_balancer.observe.lines import event

    name = "test.lines.level"
    log = logging.getLogger(name)
    with caplog.at_level(logging.INFO, logger=name):
        event(log, logging.INFO, "decision", {"n": 1})
        log.setLevel(logging.WARNING)
        event(log, logging.INFO, "decision", {"n": 2})
        log.setLevel(logging.INFO)
        log.disabled = True
        event(log, logging.INFO, "decision", {"n": 3})
        log.disabled = False
        logging.disable(logging.INFO)
        try:
            event(log, logging.INFO, "decision", {"n": 4})
        finally:
            logging.disable(logging.NOTSET)
        event(log, logging.INFO, "decision", {"n": 5})
    assert [r.fields["n"] for r in caplog.records if r.name == name] == [1, 5]
