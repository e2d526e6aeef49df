"""``argmax_rows`` (and ``argmax_list``, its list) equals ``torch.argmax`` (the first maximal index): random rows of several
lengths and dtypes, ties, an infinite or NaN entry, one row and batched shapes."""

from __future__ import annotations

import pytest
import torch

from framework.argmax import argmax_list, argmax_rows


@pytest.mark.parametrize("vocab", [1, 10, 4096, 49152, 49152 + 77])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_random_rows(vocab, dtype):
    generator = torch.Generator().manual_seed(vocab)
    scores = torch.randn(7, vocab, generator=generator).to(dtype)
    assert torch.equal(argmax_rows(scores), scores.argmax(dim=-1))
    assert argmax_list(scores) == scores.argmax(dim=-1).tolist()
    assert torch.equal(argmax_rows(scores[3]), scores[3].argmax())
    assert torch.equal(argmax_rows(scores.reshape(7, 1, vocab)), scores.argmax(dim=-1).reshape(7, 1))
    assert torch.equal(argmax_rows(scores[:, ::2]), scores[:, ::2].argmax(dim=-1))  # a strided view
    assert argmax_rows(scores).dtype == torch.long
    assert argmax_list(scores) == scores.argmax(dim=-1).tolist()
    assert argmax_list(scores[:, ::2]) == scores[:, ::2].argmax(dim=-1).tolist()


@pytest.mark.parametrize("positions, expected", [
    ([5, 3000], 5),  # a tie far apart: the first
    ([1030, 1025], 1025),  # a tie close together: the first
    ([49000, 17], 17),
    ([49151], 49151),  # the last entry
])
def test_ties_take_the_first(positions, expected):
    scores = torch.zeros(2, 49152)
    scores[:, positions] = 3.0
    assert argmax_rows(scores).tolist() == [expected, expected] == scores.argmax(dim=-1).tolist()
    assert argmax_list(scores) == [expected, expected]


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_entries_as_torch(value):
    scores = torch.randn(3, 4096, generator=torch.Generator().manual_seed(0))
    scores[1, 100] = value
    scores[1, 200] = value
    assert torch.equal(argmax_rows(scores), scores.argmax(dim=-1))
    assert argmax_list(scores) == scores.argmax(dim=-1).tolist()
