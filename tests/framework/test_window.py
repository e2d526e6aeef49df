"""The lookahead window: resize (grow/shrink/zero), shift, and advance with its harvest."""

from __future__ import annotations

import torch

from framework.window import Window

CONTEXT = torch.tensor([11, 12, 13, 14, 15])


def window(ngram: int, *levels, seed: int = 0) -> Window:
    """A window with the given levels (oldest first), each a list of tokens."""
    w = Window(ngram, torch.Generator().manual_seed(seed))
    w.levels = [list(level) for level in levels]
    return w


def rows(w: Window) -> list[list[int]]:
    return w.levels


def test_a_new_window_is_empty():
    w = Window(3, torch.Generator())
    assert w.width == 0 and not w.full and w.levels == []
    assert w.token_list() == []


def test_resize_from_empty_draws_one_level_from_the_context():
    w = Window(4, torch.Generator().manual_seed(0))
    w.resize(6, CONTEXT)
    assert w.width == 6 and len(w.levels) == 1
    assert set(w.levels[0]) <= set(CONTEXT.tolist())


def test_resize_draws_are_reproducible_and_depend_on_the_seed():
    def draw(seed):
        w = Window(4, torch.Generator().manual_seed(seed))
        w.resize(16, CONTEXT)
        return w.levels[0]

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)  # 16 draws out of 5 tokens: equal only with probability 5**-16


def test_resize_shrink_drops_columns_on_the_right_of_every_level():
    w = window(4, [1, 2, 3], [4, 5, 6])
    w.resize(2, CONTEXT)
    assert rows(w) == [[1, 2], [4, 5]]


def test_resize_grow_keeps_columns_and_fills_the_right_of_every_level():
    w = window(4, [1, 2], [3, 4])
    w.resize(4, torch.tensor([9]))  # a one-token context: every fresh column is 9
    assert rows(w) == [[1, 2, 9, 9], [3, 4, 9, 9]]


def test_resize_to_zero_empties_and_same_width_is_a_no_op():
    w = window(4, [1, 2], [3, 4])
    first = w.levels[0]
    w.resize(2, torch.tensor([9]))
    assert w.levels[0] is first  # untouched, nothing drawn
    w.resize(0, CONTEXT)
    assert w.levels == [] and w.width == 0 and w.token_list() == []


def test_tokens_are_level_major():
    w = window(4, [1, 2, 3], [4, 5, 6])
    assert w.token_list() == [1, 2, 3, 4, 5, 6]  # levels * W tokens


def test_shift_drops_left_columns_and_refills_on_the_right():
    w = window(4, [1, 2, 3], [4, 5, 6])
    w.shift(1, torch.tensor([9]))
    assert rows(w) == [[2, 3, 9], [5, 6, 9]]


def test_shift_by_more_than_the_width_refills_everything_and_keeps_the_width():
    w = window(4, [1, 2], [3, 4])
    w.shift(5, torch.tensor([9]))
    assert rows(w) == [[9, 9], [9, 9]]


def test_shift_by_zero_or_of_an_empty_window_does_nothing():
    w = window(4, [1, 2])
    w.shift(0, torch.tensor([9]))
    assert rows(w) == [[1, 2]]
    empty = Window(4, torch.Generator())
    empty.shift(3, CONTEXT)
    assert empty.levels == []


def test_advance_docstring_example_n3_w2():
    """start [[a, b]]; step 1 adds [c, d]; step 2 harvests (a; c, e), (b; d, f)."""
    a, b, c, d, e, f = 1, 2, 3, 4, 5, 6
    w = window(3, [a, b])
    assert not w.full
    assert w.advance([c, d]) is None  # warm-up: N-1 = 2 levels now
    assert w.full and rows(w) == [[a, b], [c, d]]
    assert w.advance([e, f]) == [(a, (c, e)), (b, (d, f))]  # (key, draft) per column
    assert rows(w) == [[c, d], [e, f]]


def test_advance_n2_harvests_from_the_first_step():
    w = window(2, [1, 2, 3])
    assert w.full
    assert w.advance([4, 5, 6]) == [(1, (4,)), (2, (5,)), (3, (6,))]
    assert rows(w) == [[4, 5, 6]]


def test_advance_n5_warms_up_for_three_steps_then_harvests_every_step():
    w = window(5, [0, 0])
    harvests = [w.advance([step, 10 + step]) for step in range(1, 6)]
    assert harvests[:3] == [None, None, None]
    assert harvests[3] == [(0, (1, 2, 3, 4)), (0, (11, 12, 13, 14))]
    assert harvests[4] == [(1, (2, 3, 4, 5)), (11, (12, 13, 14, 15))]
    assert len(w.levels) == 4
