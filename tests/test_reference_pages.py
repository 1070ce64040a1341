"""The reference pages' generated tables (tools/reference.py) are what the code says
now: a metric, key, command, option, log field or config key added, removed or
reworded in the code without `make reference` fails here, and so does a hand edit
of a generated table."""

from __future__ import annotations

import pytest

from tools.reference import BEGIN, GENERATORS, PAGES, ROOT, fill


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_generated_tables_of_the_page_are_the_codes(page: str) -> None:
    text = (ROOT / page).read_text()
    for name in PAGES[page]:
        assert BEGIN.format(name=name) in text, f"{page} lost its marker for {name}"
    assert fill(text) == text, f"{page} differs from the code: run `make reference`"


def test_every_generator_has_a_page() -> None:
    assert {name for names in PAGES.values() for name in names} == set(GENERATORS)


def test_a_hand_edit_of_a_generated_table_is_caught() -> None:
    text = (ROOT / "docs/reference/logs.md").read_text()
    edited = text.replace("| `via` |", "| `via_edited` |")
    assert edited != text and fill(edited) == text
