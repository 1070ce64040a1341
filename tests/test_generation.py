"""The rendered files' generation marker, as the policy daemon reads it."""

from __future__ import annotations

import pytest

from smtp_balancer.generation import GENERATION, MARKER, generation_of


def test_this_release_reads_its_own_marker() -> None:
    assert generation_of(MARKER) == GENERATION >= 2


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "smtp-balancer",
        "smtp-balancer/",
        "smtp-balancer/x",
        "other/5",
        "smtp-balancer/\u0663",
        "smtp-balancer/1234567",
        " smtp-balancer/2",
        "smtp-balancer/2\x00",
    ],
)
def test_no_marker_of_ours_is_the_first_generation(value: str | None) -> None:
    assert generation_of(value) == 1


def test_a_newer_marker_is_read_as_newer() -> None:
    assert generation_of(f"smtp-balancer/{GENERATION + 1}") == GENERATION + 1
