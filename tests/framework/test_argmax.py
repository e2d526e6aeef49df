"""``argmax_rows`` equals ``torch.argmax`` (first maximal index) on random rows, ties across and
inside blocks, a maximum in the tail, and short rows."""

from __future__ import annotations

import pytest
import torch

from framework.argmax import BLOCK, argmax_rows


@pytest.mark.parametrize("vocab", [10, 4 * BLOCK, 49152, 49152 + 77, 5 * BLOCK + 1])
def test_random_rows(vocab):
    generator = torch.Generator().manual_seed(vocab)
    scores = torch.randn(7, vocab, generator=generator)
    assert torch.equal(argmax_rows(scores), scores.argmax(dim=-1))
    assert torch.equal(argmax_rows(scores[3]), scores[3].argmax())
    assert torch.equal(argmax_rows(scores.reshape(7, 1, vocab)), scores.argmax(dim=-1).reshape(7, 1))


@pytest.mark.parametrize("positions, expected", [
    ([5, 3000], 5),  # a tie across blocks: the first
    ([1030, 1025], 1025),  # a tie inside one block: the first
    ([4 * BLOCK + 40, 17], 17),  # a tie between the tail and a block: the block (earlier)
    ([4 * BLOCK + 40], 4 * BLOCK + 40),  # the maximum in the tail alone
])
def test_ties_and_the_tail(positions, expected):
    scores = torch.zeros(2, 4 * BLOCK + 50)
    scores[:, positions] = 3.0
    assert argmax_rows(scores).tolist() == [expected, expected] == scores.argmax(dim=-1).tolist()
