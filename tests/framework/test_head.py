"""``RowHead``: the engine's projection of a few rows equals the head module's (to float rounding),
through a [H, V] copy for one or two rows on CPU and through the module for more."""

from __future__ import annotations

import torch

from framework.head import RowHead
from tests.tiny_models import tiny_model


def test_row_head_matches_the_module_and_uses_the_copy_for_few_rows():
    head = tiny_model("llama").get_output_embeddings()
    row_head = RowHead(head)
    assert row_head.weight_t is not None and row_head.weight_t.shape == head.weight.shape[::-1]
    for rows in (1, 2, 5):
        hidden = torch.randn(rows, head.weight.shape[1], generator=torch.Generator().manual_seed(rows))
        torch.testing.assert_close(row_head(hidden), head(hidden), atol=1e-5, rtol=1e-5)
    calls = []
    handle = head.register_forward_hook(lambda *_: calls.append(1))
    row_head(torch.randn(2, head.weight.shape[1]))
    row_head(torch.randn(RowHead.MAX_ROWS + 1, head.weight.shape[1]))
    handle.remove()
    assert calls == [1]  # only the larger call went through the module


def test_a_head_that_is_not_a_plain_linear_runs_as_it_is():
    head = torch.nn.Sequential(torch.nn.Linear(4, 6))
    assert RowHead(head).weight_t is None
    hidden = torch.randn(1, 4)
    assert torch.equal(RowHead(head)(hidden), head(hidden))
