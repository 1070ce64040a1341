"""logfmt rendering: its caches are bounded and change nothing they render."""

from __future__ import annotations

import random

from smtp_balancer.observe import logfmt


def test_rendered_text_cache_is_bounded_and_renders_the_same():
    first = logfmt.logfmt_value('say "hi"\n')
    for i in range(logfmt.TEXTS_MAX + 100):
        logfmt.logfmt_value(f"id-{i}")
    assert len(logfmt._texts) <= logfmt.TEXTS_MAX
    assert logfmt.logfmt_value('say "hi"\n') == first == '"say \\"hi\\"\\n"'


def test_the_tail_cache_is_bounded():
    for i in range(logfmt.TAILS_MAX + 100):
        assert (
            logfmt.event_line("t", "info", "x", "m", {}, (("n", i),))
            == f"ts=t level=info logger=x msg=m n={i}"
        )
    assert 0 < len(logfmt._tails) <= logfmt.TAILS_MAX


def test_a_line_with_a_key_twice_or_a_head_key_is_left_to_the_formatter():
    tail = (("outcome", "route"),)
    assert logfmt.event_line("t", "info", "x", "m", {"outcome": "mine"}, tail) is None
    assert logfmt.event_line("t", "info", "x", "m", {"level": "x"}, tail) is None
    assert logfmt.event_line("t", "info", "x", "m", {}, (("msg", "tail's"),)) is None
    assert (
        logfmt.event_line("t", "info", "x", "m", {"id": 1}, tail)
        == "ts=t level=info logger=x msg=m id=1 outcome=route"
    )


def test_the_stamp_is_utc_with_milliseconds_across_a_second():
    stamper = logfmt.Stamper()
    assert stamper.stamp(0.0015) == "1970-01-01T00:00:00.001+00:00"
    assert stamper.stamp(1.25) == "1970-01-01T00:00:01.250+00:00"
    assert stamper.stamp(0.999) == "1970-01-01T00:00:00.999+00:00"  # back to an earlier second


def test_the_short_paths_render_as_the_escaping_does() -> None:
    """Numbers and alphanumeric texts skip the patterns and the cache: they must come
    out as render_text (the full escaping) makes them."""
    rng = random.Random(27)
    floats = [0.0, -0.5, 1e-05, 1.5e20, float("inf"), -float("inf"), float("nan"), 0.7999]
    floats += [rng.random() * 10 ** rng.randint(-8, 8) for _ in range(2000)]
    for value in floats:
        assert logfmt.logfmt_value(value) == logfmt.render_text(str(value)), value
    alphabet = 'aZ09_.:-=" \\\n\té²٣'
    texts = ["", "Q00000ABC", "90e4c76ca0dde7a4", "²", "٣", "é", "a b"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(5000)]
    for text in texts:
        assert logfmt.logfmt_text(text) == logfmt.render_text(text), text
        assert logfmt.logfmt_value(text) == logfmt.render_text(text), text
