"""``RowHead``: the engine's projection of a few rows equals the head module's (to float rounding),
through a [H, V] copy for one or two rows on CPU and through the module for more;
``StepOutputs`` projects a block once, keeps it and its argmaxes (equal to ``torch.argmax``)."""

from __future__ import annotations

import pytest
import torch

from framework.head import RowHead, StepOutputs
from tests.tiny_models import tiny_model


def linear(vocab: int, hidden: int = 8, bias: bool = False, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(hidden, vocab, bias=bias)


@pytest.mark.parametrize("rows", [1, 2, 5])
@pytest.mark.parametrize("bias", [False, True])
def test_logits_and_choices_match_the_module(rows, bias):
    head = linear(96, bias=bias)
    hidden = torch.randn(rows, 8, generator=torch.Generator().manual_seed(rows))
    with torch.no_grad():
        expected = head(hidden)
        torch.testing.assert_close(RowHead(head)(hidden), expected, atol=1e-5, rtol=1e-5)
        outputs = StepOutputs(hidden, None, RowHead(head))
        assert outputs.choices(range(rows)) == expected.argmax(dim=-1).tolist()


def test_the_copy_serves_few_rows_and_the_module_more():
    head = tiny_model("llama").get_output_embeddings()
    row_head = RowHead(head)
    assert row_head.weight_t is not None and row_head.weight_t.shape == head.weight.shape[::-1]
    calls = []
    handle = head.register_forward_hook(lambda *_: calls.append(1))
    row_head(torch.randn(RowHead.MAX_ROWS, head.weight.shape[1]))
    row_head(torch.randn(RowHead.MAX_ROWS + 1, head.weight.shape[1]))
    handle.remove()
    assert calls == [1]  # only the larger call went through the module


def test_a_head_that_is_not_a_plain_linear_runs_as_it_is():
    head = torch.nn.Sequential(torch.nn.Linear(4, 6))
    assert RowHead(head).weight_t is None
    hidden = torch.randn(2, 4)
    assert torch.equal(RowHead(head)(hidden), head(hidden))


def test_step_outputs_project_once_and_keep_logits_and_choices():
    """Slots projected together are read back without another head call; loose slots are
    projected when read; choices equal the argmax of the logits either way."""
    head = linear(96)
    calls = []
    row_head = RowHead(head)
    hidden = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    outputs = StepOutputs(hidden, None, lambda rows: calls.append(rows.shape[0]) or row_head(rows))
    with torch.no_grad():
        outputs.project([0, 7, 8, 9])
        assert outputs.choices([0, 9]) == head(hidden[[0, 9]]).argmax(dim=-1).tolist()
        torch.testing.assert_close(outputs.logits([7, 8, 9]), head(hidden[7:10]), atol=1e-5, rtol=1e-5)
        assert calls == [4]
        assert outputs.choices([3]) == [int(head(hidden[3]).argmax())]
        assert calls == [4, 1]
