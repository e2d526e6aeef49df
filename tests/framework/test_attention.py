"""Step attention masks: the tree mask over the prefix, the sliding-window limit, and the form
``MaskBuilder`` gives each backend, checked against hand-written masks and real forwards."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from framework.attention import MaskBuilder, sliding_window_limit, tree_attention_mask
from framework.kv import cache_argument, new_cache
from framework.layout import step_layout
from tests.tiny_models import tiny_model

PAST = 3
# root, one 2-token draft (a, b), a 2x2 window: slots r a b w00 w01 w10 w11, depths 0 1 2 1 2 2 3
LAYOUT = step_layout(2, 2, (-1, 0))
#           prefix | r a b w00 w01 w10 w11
TREE = [
    "111 1000000",  # root
    "111 1100000",  # a
    "111 1110000",  # b
    "111 1001000",  # w00: child of the root
    "111 1001100",  # w01: chain along level 0
    "111 1001010",  # w10: above w00
    "111 1001101",  # w11: above w01
]
# the same, hiding keys 3 or more positions behind the query (positions: prefix 0-2, then 3 + depth)
SLIDING_3 = [
    "011 1000000",  # root at 3 sees 1, 2, 3
    "001 1100000",  # a at 4
    "000 1110000",  # b at 5
    "001 1001000",  # w00 at 4
    "000 1001100",  # w01 at 5
    "000 1001010",  # w10 at 5
    "000 0001101",  # w11 at 6: the root (3) is out of its window
]


def bools(rows: list[str]) -> torch.Tensor:  # [q, past + q]
    return torch.tensor([[c == "1" for c in row.replace(" ", "")] for row in rows])


def stub(backend="sdpa", layer_types=None, sliding_window=None, dtype=torch.float32):
    config = SimpleNamespace(_attn_implementation=backend, layer_types=layer_types, sliding_window=sliding_window)
    return SimpleNamespace(config=config, dtype=dtype, device=torch.device("cpu"))


def test_tree_mask_covers_the_prefix_and_ancestors():
    assert LAYOUT.depths.tolist() == [0, 1, 2, 1, 2, 2, 3]
    assert torch.equal(tree_attention_mask(LAYOUT, PAST), bools(TREE))


def test_tree_mask_without_a_prefix_and_of_a_lone_root():
    assert torch.equal(tree_attention_mask(LAYOUT, 0), bools([row[4:] for row in TREE]))
    assert torch.equal(tree_attention_mask(step_layout(0, 0), 2), torch.ones(1, 3, dtype=torch.bool))


def test_sliding_window_limit_hides_far_keys():
    limited = sliding_window_limit(tree_attention_mask(LAYOUT, PAST), LAYOUT, PAST, window=3)
    assert torch.equal(limited, bools(SLIDING_3))


def test_a_window_longer_than_the_sequence_changes_nothing():
    allowed = tree_attention_mask(LAYOUT, PAST)
    assert torch.equal(sliding_window_limit(allowed, LAYOUT, PAST, window=7), allowed)


def test_sdpa_gets_the_bool_mask_with_batch_and_head_dims():
    mask = MaskBuilder(stub("sdpa"))(LAYOUT, PAST)
    assert mask.dtype == torch.bool and mask.shape == (1, 1, 7, PAST + 7)  # [B, 1, q, past + q]
    assert torch.equal(mask[0, 0], bools(TREE))


@pytest.mark.parametrize("backend", ["eager", None])  # no backend named: eager
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_eager_gets_an_additive_mask_in_the_model_dtype(backend, dtype):
    mask = MaskBuilder(stub(backend, dtype=dtype))(LAYOUT, PAST)
    expected = torch.where(bools(TREE), 0.0, torch.finfo(dtype).min).to(dtype)
    assert mask.dtype == dtype
    assert torch.equal(mask[0, 0], expected)


def test_per_layer_type_masks_for_sliding_layers():
    masks = MaskBuilder(stub(layer_types=["sliding_attention", "full_attention"], sliding_window=3))(LAYOUT, PAST)
    assert set(masks) == {"full_attention", "sliding_attention"}
    assert torch.equal(masks["full_attention"][0, 0], bools(TREE))
    assert torch.equal(masks["sliding_attention"][0, 0], bools(SLIDING_3))


def test_one_sliding_window_for_every_layer_when_no_layer_types():
    """Mistral-style: a ``sliding_window`` and no ``layer_types`` limits every layer."""
    mask = MaskBuilder(stub(sliding_window=3))(LAYOUT, PAST)
    assert torch.equal(mask[0, 0], bools(SLIDING_3))


def test_a_sliding_window_is_ignored_when_every_layer_is_full():
    """Qwen2-style: ``sliding_window`` set but all layers full attention."""
    mask = MaskBuilder(stub(layer_types=["full_attention"] * 2, sliding_window=3))(LAYOUT, PAST)
    assert torch.equal(mask[0, 0], bools(TREE))


def test_unsupported_backend_and_layer_type_are_refused():
    with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
        MaskBuilder(stub("flash_attention_2"))
    with pytest.raises(ValueError, match="chunked_attention"):
        MaskBuilder(stub(layer_types=["chunked_attention", "full_attention"]))


@pytest.mark.parametrize(
    ("arch", "attn"), [("llama", "sdpa"), ("llama", "eager"), ("gemma3", "sdpa"), ("mistral", "eager")]
)
def test_step_logits_equal_plain_forwards_of_each_path(arch, attn):
    """Every slot of one masked forward predicts what a causal forward of its own path predicts
    (gemma3 / mistral: window 6 < 10 positions, so the sliding masks matter)."""
    model = tiny_model(arch, attn)
    prefix = [3, 4, 5, 6, 7, 8]
    step = torch.tensor([9, 10, 11, 12, 13, 14, 15])  # [q]: tokens of slots r a b w00 w01 w10 w11
    cache = new_cache()
    with torch.no_grad():
        model(input_ids=torch.tensor([prefix]), **{cache_argument(model): cache})
        logits = model(
            input_ids=step[None],
            position_ids=(len(prefix) + LAYOUT.depths)[None],  # [1, q]
            attention_mask=MaskBuilder(model)(LAYOUT, len(prefix)),
            **{cache_argument(model): cache},
        ).logits[0]  # [q, V]
        for slot in range(LAYOUT.size):
            path = prefix + step[LAYOUT.tree_mask[slot]].tolist()  # ancestors in depth order
            plain = model(input_ids=torch.tensor([path])).logits[0, -1]  # [V]
            torch.testing.assert_close(logits[slot], plain, atol=1e-4, rtol=1e-4, msg=f"slot {slot}")
