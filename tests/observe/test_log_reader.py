"""Reading our structured lines back: logfmt and JSON, and what is neither."""

from __future__ import annotations

import json
import random

from integration.log_lines import decision_lines
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.observe.log_reader import _as_written, _by_pattern, parse_fields


def test_fields_of_odd_lines() -> None:
    assert parse_fields("not a structured line") is None
    assert parse_fields("{broken json") is None
    assert parse_fields("[1, 2]") is None
    assert parse_fields('ts=x msg=decision reason="a \\"quoted\\" word"')["reason"] == 'a "quoted" word'


def test_json_values_read_as_the_logfmt_line_has_them() -> None:
    fields = parse_fields('{"msg": "decision", "degraded": false, "queue_id": null, "nrcpt": 2}')
    assert fields == {"msg": "decision", "degraded": "false", "queue_id": "", "nrcpt": "2"}


def test_quoted_values_read_back_as_they_were_written() -> None:
    """A value the writer quoted (JSON, escapes or not) reads back exactly, whichever
    way the line is read."""
    rng = random.Random(7)
    alphabet = 'ab "\\=\t\x01é\u2028'
    for _ in range(5000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        for raw in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
            line = f"ts=x msg=m k={raw} z=1"
            assert parse_fields(line)["k"] == _by_pattern(line)["k"] == value, line


def test_lines_as_written_read_as_the_pattern_reads_them() -> None:
    """The string-search reading of our writer's lines gives the pattern's fields, or
    leaves the line to the pattern: real decision lines, and 50,000 hostile variants."""
    decided = [
        (
            Facts(sender=f"a{i}@shop.test", recipients=(f"u@{d}",), queue_id=f"Q{i}"),
            Decision(outcome="route", reason=f"weight {i} in pool main", endpoint="out1", rule="all", r=0.5),
            1_790_000_000.0 + i,
        )
        for i, d in enumerate(["gmail.com", "yahoo.com", "x.test"] * 20)
    ]
    lines = decision_lines(decided)
    for line in lines:
        assert _as_written(line) == _by_pattern(line) == parse_fields(line)
        assert parse_fields(line)["reason"].startswith("weight ")
    rng = random.Random(11)
    pieces = [" ", "  ", "\t", "=", '"', '\\"', "\\", "k", "_x", "1", ".", "-", "é", "\xa0", "\x00", "a b"]
    taken = 0
    for _ in range(50_000):
        line = rng.choice(lines)
        cut = rng.randrange(len(line))
        line = line[:cut] + "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 4))) + line[cut:]
        text = line.strip()
        fast = _as_written(text)
        if fast is not None:
            taken += 1
            assert fast == _by_pattern(text), text
    assert taken > 1000  # the variants that stay well formed go the short way too
