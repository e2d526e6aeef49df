"""``RowHead``: the engine's projection of a few rows equals the head module's (to float rounding),
through a [H, V] copy for one row on CPU, as a chunked [V, k] product for up to MAX_ROWS and
through the module for more;
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


@pytest.mark.parametrize("chunk", [7, 40, 96, 4096])  # chunks that divide 96, leave a remainder, span it
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # transposed by NumPy, by torch
def test_the_chunked_block_equals_the_module_for_every_row_count(chunk, bias, dtype):
    head = linear(96, hidden=16, bias=bias, seed=3).to(dtype)
    row_head = RowHead(head, chunk=chunk)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    for rows in range(1, RowHead.MAX_ROWS + 3):
        hidden = torch.randn(rows, 16, generator=torch.Generator().manual_seed(rows)).to(dtype)
        with torch.no_grad():
            got = row_head(hidden)
            assert got.shape == (rows, 96) and got.is_contiguous() and got.dtype == dtype
            torch.testing.assert_close(got, head(hidden), atol=tolerance, rtol=tolerance)


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


@pytest.mark.parametrize("as_array", [False, True])  # hidden states as a tensor, as the engine's NumPy view
def test_step_outputs_project_once_and_keep_logits_and_choices(as_array):
    """Slots projected together are read back without another head call; loose slots are
    projected when read; choices equal the argmax of the logits either way."""
    head = linear(96)
    calls = []
    row_head = RowHead(head)
    hidden = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    outputs = StepOutputs(hidden.numpy() if as_array else hidden, None,
                          lambda rows: calls.append(rows.shape[0]) or row_head(rows))
    with torch.no_grad():
        outputs.project([0, 7, 8, 9])
        assert outputs.choices([0, 9]) == head(hidden[[0, 9]]).argmax(dim=-1).tolist()
        torch.testing.assert_close(outputs.logits([7, 8, 9]), head(hidden[7:10]), atol=1e-5, rtol=1e-5)
        assert calls == [4]
        assert outputs.choices([3]) == [int(head(hidden[3]).argmax())]
        assert calls == [4, 1]


class CountingHead:
    """A RowHead that records the rows of each call (free_rows as the real one's)."""

    def __init__(self, head) -> None:
        self.row_head, self.calls = RowHead(head), []
        self.free_rows = self.row_head.free_rows

    def __call__(self, rows):
        self.calls.append(rows.shape[0])
        return self.row_head(rows)


def test_a_loose_row_brings_its_companions_up_to_the_free_rows():
    """Reading slot 2 alone projects it with the first three companions not yet kept (the call's
    free rows); reading those afterwards costs no call; a loose slot's logits come back alone."""
    head = linear(96)
    counting = CountingHead(head)
    assert counting.free_rows == RowHead.FREE_ROWS == 4
    hidden = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    asked = []
    likely = {2: [5, 2, 6, 7, 8], 9: [6, 8, 7, 3]}
    outputs = StepOutputs(hidden, None, counting, companions=lambda slot, count: asked.append((slot, count)) or
                          likely[slot][:count])
    with torch.no_grad():
        outputs.project([0, 1])
        assert outputs.choices([2]) == [int(head(hidden[2]).argmax())]
        assert counting.calls == [2, 4] and asked == [(2, 4)]  # 2 + companions 5, 6, 7 (2 itself skipped)
        assert outputs.choices([5, 6, 7]) == head(hidden[[5, 6, 7]]).argmax(dim=-1).tolist()
        assert counting.calls == [2, 4]
        rows = outputs.logits([9])
        assert rows.shape == (1, 96) and counting.calls == [2, 4, 3]  # 9 + 8 and 3 (6 and 7 are kept)
        torch.testing.assert_close(rows, head(hidden[[9]]), atol=1e-5, rtol=1e-5)


def test_without_spare_rows_no_companion_is_asked():
    head = torch.nn.Sequential(torch.nn.Linear(8, 12))  # not a plain linear: one row is one row
    assert RowHead(head).free_rows == 1
    outputs = StepOutputs(torch.randn(4, 8), None, RowHead(head), companions=lambda *_: pytest.fail("asked"))
    with torch.no_grad():
        outputs.choices([1])
