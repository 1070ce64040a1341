"""Structured log lines: escaping that no value can break, in both formats."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time

import pytest

from smtp_balancer.observe.logs import BufferedStderrHandler, StructuredFormatter, configure, fields


def record(_exc: bool = False, **values: object) -> logging.LogRecord:
    exc_info = None
    if _exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    rec = logging.LogRecord("smtp_balancer.decision", logging.INFO, __file__, 1, "decision", (), exc_info)
    rec.fields = values  # what extra=fields(...) does
    return rec


def test_logfmt_bare_and_quoted_values():
    line = StructuredFormatter("logfmt").format(
        record(queue_id="4XyZ1", endpoint="out2", degraded=False, nrcpt=3, pool=None, reason="weight 2 of 4")
    )
    assert line.startswith("ts=") and " level=info logger=smtp_balancer.decision msg=decision " in line
    assert ' queue_id=4XyZ1 endpoint=out2 degraded=false nrcpt=3 pool="" ' in line
    assert line.endswith('reason="weight 2 of 4"')


@pytest.mark.parametrize(
    "hostile",
    ['421 "quoted" reply', "two\nlines", "cr\rhere", "tab\there", "a=b c=d", "back\\slash", "", "\x00nul"],
)
def test_logfmt_no_value_breaks_the_line_or_forges_a_field(hostile: str):
    line = StructuredFormatter("logfmt").format(record(reason=hostile, endpoint="out1"))
    assert "\n" not in line and "\r" not in line
    # the value decodes back exactly, and the next field is still its own
    value = line.split(" reason=", 1)[1].rsplit(" endpoint=", 1)[0]
    assert json.loads(value) == hostile
    assert line.endswith(" endpoint=out1")


def test_logfmt_key_junk_is_replaced():
    line = StructuredFormatter("logfmt").format(record(**{"bad key=x": "v"}))
    assert " bad_key_x=v" in line


def test_json_lines_parse_and_fields_cannot_overwrite_the_envelope():
    line = StructuredFormatter("json").format(record(level="forged", msg="forged", endpoint="out3", nrcpt=2))
    data = json.loads(line)
    assert data["level"] == "info" and data["msg"] == "decision"
    assert data["field_level"] == "forged" and data["field_msg"] == "forged"
    assert data["endpoint"] == "out3" and data["nrcpt"] == 2
    assert "\n" not in line


def test_exception_is_one_escaped_field():
    line = StructuredFormatter("logfmt").format(record(_exc=True))
    assert "\n" not in line and "ValueError: boom" in line


def test_configure_replaces_handlers_and_sets_level(capsys):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure("json", "warning")
        assert len(root.handlers) == 1 and root.level == logging.WARNING
        logging.getLogger("smtp_balancer.test").warning("odd value", extra=fields(key="{sb}:x"))
        data = json.loads(capsys.readouterr().err.strip())
        assert data["msg"] == "odd value" and data["key"] == "{sb}:x" and data["level"] == "warning"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_timestamp_is_utc_iso8601_with_milliseconds_across_seconds():
    formatter = StructuredFormatter("logfmt")
    for created, expected in (
        (1795000000.25, "2026-11-18T11:06:40.250+00:00"),
        (1795000000.999, "2026-11-18T11:06:40.999+00:00"),
        (1795000001.0, "2026-11-18T11:06:41.000+00:00"),  # the next second: prefix renewed
    ):
        rec = record()
        rec.created = created
        assert formatter.format(rec).startswith(f"ts={expected} "), created


SCRIPT = """
import logging, sys, time
from smtp_balancer.observe.logs import configure, fields
configure("logfmt", "info", flush_interval_s=float(sys.argv[1]))
log = logging.getLogger("t")
log.info("decision", extra=fields(n=0))  # the first line is written at once
time.sleep(0.1)
for i in (1, 2):
    log.info("decision", extra=fields(n=i))
print("emitted", flush=True)
if sys.argv[2] == "warn":
    log.warning("odd")
time.sleep(30)
"""


def _stderr_after(seconds: float, interval: str, warn: str) -> list[str]:
    """stderr of SCRIPT, SIGTERMed (no logging shutdown) ``seconds`` after its lines."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, interval, warn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "emitted\n"
        time.sleep(seconds)
        proc.terminate()
        return proc.communicate(timeout=10)[1].splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_buffered_lines_reach_stderr_within_the_interval_without_exiting():
    lines = _stderr_after(1.0, "0.2", "no")
    assert [line.split(" n=")[1] for line in lines] == ["0", "1", "2"], lines


def test_lines_wait_in_the_buffer_until_the_interval():
    # the control for the test above: with a 30 s interval only the first line is out
    lines = _stderr_after(1.0, "30", "no")
    assert [line.split(" n=")[1] for line in lines] == ["0"], lines


def test_a_warning_goes_out_at_once_with_what_came_before():
    lines = _stderr_after(0.5, "30", "warn")
    assert len(lines) == 4 and "msg=odd" in lines[3] and "level=warning" in lines[3], lines


def test_event_bypasses_log_records_but_formats_the_same():
    # a real stderr (not pytest's capture), so configure() installs the buffered handler
    code = (
        "import logging\n"
        "from smtp_balancer.observe import lines, logs\n"
        "logs.configure('logfmt', 'info')\n"
        "assert lines.direct_writer() is not None\n"
        "log = logging.getLogger('smtp_balancer.decision')\n"
        "extra = {'decision_id': 'ab12', 'reason': 'weight 1 in pool main', 'odd': 'x\\ny=\"z\"', 'n': 3}\n"
        "lines.event(log, logging.INFO, 'decision', extra)\n"
        "log.info('decision', extra=logs.fields(**extra))\n"
        "lines.event(log, logging.DEBUG, 'not shown', extra)\n"
        "head = {'decision_id': extra.pop('decision_id')}\n"
        "lines.event(log, logging.INFO, 'decision', head, tuple(extra.items()))\n"
        "lines.event(log, logging.INFO, 'decision', head, tuple(extra.items()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    lines = [line.split(" ", 1)[1] for line in out.splitlines()]  # drop ts
    assert len(lines) == 4 and lines[0] == lines[1] == lines[2] == lines[3]
    assert 'reason="weight 1 in pool main"' in lines[0]
    assert 'odd="x\\ny=\\"z\\""' in lines[0]


def test_a_cached_tail_renders_as_the_same_fields_would_without_it():
    from smtp_balancer.observe import logs

    tail = (("outcome", "route"), ("reason", 'weight 1 "x"\nin pool main'), ("n", 3), ("degraded", False))
    cases = [
        ({"decision_id": "ab12", "queue_id": None}, tail),
        ({}, tail),
        ({"decision_id": "ab12"}, ()),
        ({"outcome": "mine"}, tail),  # a key twice: the tail's value, as a dict merge gives
        ({"level": "x"}, tail),  # a head key in the fields: renamed field_level
        ({"id": 1}, (("msg", "tail's"),)),  # and in the tail
        ({"odd key=": "v"}, (("also odd\n", 1),)),
    ]
    for style in logs.LOG_FORMATS:
        formatter = logs.StructuredFormatter(style)
        for extra, t in cases:
            for _ in range(2):  # rendered, then from the cache
                got = formatter.render_event(1.5, "INFO", "smtp_balancer.decision", "decision", extra, t)
                want = formatter.render(
                    formatter.event_fields(
                        1.5, "INFO", "smtp_balancer.decision", "decision", {**extra, **dict(t)}
                    )
                )
                assert got == want, (style, extra, t)


def test_a_tail_with_an_unhashable_value_renders_uncached():
    from smtp_balancer.observe import logs

    formatter = logs.StructuredFormatter("logfmt")
    got = formatter.render_event(1.5, "INFO", "x", "m", {"id": 1}, (("ids", [1, 2]),))
    assert got == formatter.render(formatter.event_fields(1.5, "INFO", "x", "m", {"id": 1, "ids": [1, 2]}))


WRITER = """
import logging, sys
from smtp_balancer.observe.logs import configure, fields
configure("logfmt", "info", flush_interval_s=30)
log = logging.getLogger("t")
name = sys.argv[1]
for i in range(10000):
    pad = ("é" if i % 7 == 0 else "x") * (40 + i % 200)
    log.info("line", extra=fields(p=name, n=i, pad=pad))
logging.shutdown()
"""


def test_processes_sharing_a_stderr_pipe_never_split_a_line():
    # policyd.workers: several processes write to one pipe; writes of at most
    # PIPE_BUF bytes stay whole, so no line has another's bytes inside it
    read, write = os.pipe()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, name], stderr=write, stdout=subprocess.DEVNULL)
        for name in ("a", "b", "c")
    ]
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    for proc in procs:
        assert proc.wait(timeout=30) == 0
    seen: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    for line in text.splitlines():
        m = re.fullmatch(r'ts=\S+ level=info logger=t msg=line p=([abc]) n=(\d+) pad=(x+|"é+")', line)
        assert m, line[:200]
        n = int(m[2])
        assert len(m[3].strip('"')) == 40 + n % 200
        seen[m[1]].append(n)
    assert all(ns == list(range(10000)) for ns in seen.values())


def test_the_buffered_handler_closes_twice_quietly():
    # logging.shutdown at exit closes a handler configure() already replaced and closed;
    # logging.Handler.close sets its own _closed, which once overwrote our flusher's Event
    handler = BufferedStderrHandler(0.05)
    handler.close()
    handler.close()  # raised AttributeError: 'bool' object has no attribute 'set'
    assert handler.stream.closed


def test_deferred_lines_are_written_when_the_handler_closes():
    # configure() closes the handler it replaces without flushing it first
    code = (
        "import logging\n"
        "from smtp_balancer.observe import lines, logs\n"
        "logs.configure('logfmt', 'info', flush_interval_s=3600)\n"
        "class Line(lines.Deferred):\n"
        "    def event(self):\n"
        "        return logging.INFO, 'smtp_balancer.decision', 'decision', {'n': 7}, (), None\n"
        "old = lines.direct_writer()\n"
        "old.defer(Line())\n"
        "logs.configure('logfmt', 'info')\n"
        "assert old.deferred == [], 'left for logging.shutdown'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert [line.split(" ", 1)[1] for line in out.splitlines()] == [
        "level=info logger=smtp_balancer.decision msg=decision n=7"
    ], out
