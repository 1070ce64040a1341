"""The buffered stderr handler's per-line work: when lines are written, and event
lines rendered as the handler's formatter renders them."""

from __future__ import annotations

import io
import logging
import threading

from smtp_balancer.observe.lines import PIPE_BUF, Deferred, LineWriter
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


class Line(Deferred):
    """A deferred line (lines.Deferred) with fixed fields; ``bad`` raises instead."""

    def __init__(self, n: int, bad: bool = False) -> None:
        self.n, self.bad = n, bad

    def event(self):  # type: ignore[no-untyped-def]
        if self.bad:
            raise ValueError("a broken line")
        return logging.INFO, "smtp_balancer.decision", "decision", {"n": self.n}, (), None


def test_deferred_lines_render_as_events_do_in_order_with_the_others() -> None:
    for style in ("logfmt", "json"):
        deferred, direct = Stream(), Stream()
        a, b = writer(deferred, style=style), writer(direct, style=style)
        a.write("first", logging.INFO)
        b.write("first", logging.INFO)
        for n in range(3):
            a.defer(Line(n))
            b.event(*Line(n).event())
        assert deferred.getvalue() == "first\n"  # not rendered yet
        a.write("w=1", logging.WARNING)  # another line: those before it go first
        b.write("w=1", logging.WARNING)
        strip = (
            (lambda s: s.split(" ", 1)[-1]) if style == "logfmt" else (lambda s: s.split('"level"', 1)[-1])
        )
        got, want = deferred.getvalue().splitlines(), direct.getvalue().splitlines()
        assert [strip(line) for line in got] == [strip(line) for line in want], style
        assert len(got) == 5 and got[-1] == "w=1" and deferred.flushed[-1] == deferred.getvalue()


def test_deferred_lines_keep_the_time_they_were_deferred(monkeypatch) -> None:
    from smtp_balancer.observe import lines

    clock = [1_700_000_000.25]
    monkeypatch.setattr(lines.time, "time", lambda: clock[0])
    stream = Stream()
    w = writer(stream)
    w.defer(Line(1))
    clock[0] += 5.5  # rendered later than made
    w.flush()
    assert stream.getvalue().startswith("ts=2023-11-14T22:13:20.250+00:00 level=info")


def test_a_full_batch_of_deferred_lines_is_rendered_and_a_flush_renders_the_rest() -> None:
    from smtp_balancer.observe.lines import DEFER_MAX

    stream = Stream()
    w = writer(stream)
    for n in range(DEFER_MAX - 1):
        w.defer(Line(n))
    assert stream.getvalue() == ""
    w.defer(Line(DEFER_MAX - 1))  # the batch is full: rendered
    assert len(stream.getvalue().splitlines()) == DEFER_MAX and w.deferred == []
    w.defer(Line(-1))
    w.flush()  # the handler's thread does this every interval
    assert stream.flushed[-1].splitlines()[-1].endswith(" n=-1")


def test_a_deferred_line_that_fails_to_render_is_reported_and_the_others_written() -> None:
    reported: list[logging.LogRecord] = []

    class Reporting(Owner):
        def handleError(self, record: logging.LogRecord) -> None:
            reported.append(record)

    stream = Stream()
    w = LineWriter(stream, 3600.0, threading.RLock(), Reporting())
    for line in (Line(1), Line(2, bad=True), Line(3)):
        w.defer(line)
    w.flush()
    assert [line.split(" n=")[1] for line in stream.getvalue().splitlines()] == ["1", "3"]
    assert len(reported) == 1
