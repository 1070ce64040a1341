"""Reading our structured lines back: logfmt and JSON, and what is neither."""

from __future__ import annotations

from smtp_balancer.observe.log_reader import parse_fields


def test_fields_of_odd_lines() -> None:
    assert parse_fields("not a structured line") is None
    assert parse_fields("{broken json") is None
    assert parse_fields("[1, 2]") is None
    assert parse_fields('ts=x msg=decision reason="a \\"quoted\\" word"')["reason"] == 'a "quoted" word'


def test_json_values_read_as_the_logfmt_line_has_them() -> None:
    fields = parse_fields('{"msg": "decision", "degraded": false, "queue_id": null, "nrcpt": 2}')
    assert fields == {"msg": "decision", "degraded": "false", "queue_id": "", "nrcpt": "2"}
