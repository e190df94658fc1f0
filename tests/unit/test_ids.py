"""Automatic host id ranges (apply/ids.py): the lowest free aligned block, found in one sweep,
agrees with the definition (the lowest block that overlaps no taken span) on any spans."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandman.apply.ids import AUTO_FIRST, AUTO_SIZE, ID_LIMIT, allocate


def lowest_free_block(taken: list[tuple[int, int]]) -> int:
    """The definition, block by block (slow; for the test only)."""
    start = AUTO_FIRST
    while start + AUTO_SIZE <= ID_LIMIT:
        if not any(s < start + AUTO_SIZE and start < s + n for s, n in taken):
            return start
        start += AUTO_SIZE
    raise ValueError("none")


near = st.integers(min_value=0, max_value=AUTO_FIRST + 40 * AUTO_SIZE)
span = st.tuples(near, st.integers(min_value=1, max_value=5 * AUTO_SIZE))


@settings(max_examples=300, deadline=None)
@given(st.lists(span, max_size=30))
def test_the_sweep_finds_the_lowest_free_block(taken: list[tuple[int, int]]) -> None:
    assert allocate(taken) == lowest_free_block(taken)


def test_a_thousand_packed_ranges_give_the_next_block() -> None:
    taken = [(AUTO_FIRST + i * AUTO_SIZE, AUTO_SIZE) for i in range(1000)]
    assert allocate(reversed(taken)) == AUTO_FIRST + 1000 * AUTO_SIZE
    # A hole is found, whatever the order the spans come in.
    del taken[417]
    assert allocate(taken[::-1]) == AUTO_FIRST + 417 * AUTO_SIZE


def test_a_long_span_from_below_pushes_past_its_end() -> None:
    assert allocate([(0, AUTO_FIRST + 3 * AUTO_SIZE + 5), (AUTO_FIRST, 10)]) == (
        AUTO_FIRST + 4 * AUTO_SIZE
    )


def test_no_room_is_an_error() -> None:
    with pytest.raises(ValueError, match="no free range"):
        allocate([(0, ID_LIMIT)])


@settings(max_examples=200, deadline=None)
@given(st.lists(span, max_size=20), st.integers(min_value=1, max_value=12))
def test_starting_at_the_last_answer_gives_what_a_whole_sweep_gives(
    taken: list[tuple[int, int]], count: int
) -> None:
    """An apply hands out blocks one after the other and gives none back: each search may start
    where the last answer ended, and finds what a sweep from the first block finds."""
    whole, hinted, lowest = list(taken), list(taken), AUTO_FIRST
    for _ in range(count):
        expected = allocate(whole)
        found = allocate(hinted, lowest=lowest)
        assert found == expected
        whole.append((expected, AUTO_SIZE))
        hinted.append((found, AUTO_SIZE))
        lowest = found + AUTO_SIZE
