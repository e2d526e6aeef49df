"""Pure n-gram harvesting: ``sequence_ngrams`` (prompt/output) and ``column_ngrams`` (window)."""

from __future__ import annotations

import pytest

from framework.ngrams import column_ngrams, sequence_ngrams


def test_sequence_ngrams_docstring_example():
    assert sequence_ngrams([5, 6, 7, 8], 3) == [(5, (6, 7)), (6, (7, 8))]  # (key, the N-1 tokens after it)


def test_sequence_ngrams_bigrams_cover_every_adjacent_pair():
    assert sequence_ngrams([1, 2, 2, 3], 2) == [(1, (2,)), (2, (2,)), (2, (3,))]


@pytest.mark.parametrize(
    ("start", "keys", "drafts"),
    [
        (0, [5, 6, 7], [(6, 7), (7, 8), (8, 9)]),
        (1, [6, 7], [(7, 8), (8, 9)]),
        (2, [7], [(8, 9)]),  # the last key whose n-gram fits
        (3, [], []),  # key 8 has only one token after it
        (9, [], []),  # start past the end
    ],
)
def test_sequence_ngrams_start_keeps_keys_at_or_after_it(start, keys, drafts):
    assert sequence_ngrams((5, 6, 7, 8, 9), 3, start=start) == list(zip(keys, drafts))


@pytest.mark.parametrize("tokens", [[], [5], [5, 6]])
def test_sequence_ngrams_too_short_gives_none(tokens):
    assert sequence_ngrams(tokens, 3) == []


def test_sequence_ngrams_exactly_n_tokens_gives_one():
    assert sequence_ngrams([4, 3, 2, 1], 4) == [(4, (3, 2, 1))]


def test_column_ngrams_docstring_example():
    # levels 0..: the key from level 0, the draft from levels 1.. then the new token
    assert column_ngrams([[1, 2], [3, 4]], [5, 6]) == [(1, (3, 5)), (2, (4, 6))]


def test_column_ngrams_n2_has_one_level_and_one_token_drafts():
    assert column_ngrams([[7, 8, 9]], [1, 2, 3]) == [(7, (1,)), (8, (2,)), (9, (3,))]


def test_column_ngrams_n4_keeps_level_order_per_column():
    levels = [[10, 20], [11, 21], [12, 22]]  # oldest first
    assert column_ngrams(levels, [13, 23]) == [(10, (11, 12, 13)), (20, (21, 22, 23))]


def test_column_ngrams_width_zero():
    assert column_ngrams([[], []], []) == []
