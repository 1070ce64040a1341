import pytest

from smtp_balancer.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800)]
)
def test_parse(text: str, seconds: int):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1x", "h1", "1h 2m", "-5m"])
def test_reject(text: str):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_bare_number_is_refused_where_a_unit_is_required():
    with pytest.raises(ValueError, match="give a unit: '90'"):
        parse_duration("90", unit_required=True)
    assert parse_duration("90s", unit_required=True) == 90


def test_format():
    assert (
        format_duration(5400) == "1h30m"
        and format_duration(59) == "59s"
        and format_duration(-1) == "no expiry"
    )
