"""Cascade attention: the prefix/block split merged by LSE equals one masked attention.

References are torch's ``scaled_dot_product_attention`` over ``[prefix | block]`` with the mask
``[prefix all True | tree mask]``, at atol = rtol = 1e-5 in float32 and 1e-12 in float64; model
logits match the same weights on ``sdpa`` at atol 1e-5. Random tree masks come from random
parents (parent < child) through ``framework.layout.ancestor_mask``.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import framework.cascade as cascade_module
from framework.attention import MaskBuilder, sliding_window_limit, tree_attention_mask
from framework.cascade import (
    CASCADE,
    attend_with_lse,
    cascade_attention,
    cascade_attention_forward,
    flash_available,
    flash_prefix_attend,
    merge_by_lse,
    register_cascade,
)
from framework.kv import cache_argument, new_cache
from framework.layout import ancestor_mask, chain_parents, step_layout
from tests.tiny_models import tiny_model


def random_tree_mask(size: int, generator: torch.Generator) -> torch.Tensor:  # [q, q] bool
    parents = [-1] + [int(torch.randint(-1, slot, (), generator=generator)) for slot in range(1, size)]
    return ancestor_mask(parents)


def random_step(prefix_len, q_len, heads, kv_heads, dim, dtype=torch.float32, batch=2, seed=0):
    """query [B, Hq, q, D], keys/values [B, Hkv, P + q, D] and the full mask [q, P + q]."""
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, heads, q_len, dim, generator=generator, dtype=dtype)
    key = torch.randn(batch, kv_heads, prefix_len + q_len, dim, generator=generator, dtype=dtype)
    value = torch.randn(batch, kv_heads, prefix_len + q_len, dim, generator=generator, dtype=dtype)
    tree = random_tree_mask(q_len, generator)
    full_mask = torch.cat([torch.ones(q_len, prefix_len, dtype=torch.bool), tree], dim=1)
    return query, key, value, full_mask


def sdpa(query, key, value, mask):  # [B, Hq, q, D]
    return torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=True)


def split_cascade(query, key, value, full_mask, **kwargs):
    prefix_len = key.shape[2] - query.shape[2]
    out, _ = cascade_attention(
        query, key[:, :, :prefix_len], value[:, :, :prefix_len], key[:, :, prefix_len:], value[:, :, prefix_len:],
        full_mask[:, prefix_len:], **kwargs,
    )
    return out


SHAPES = [  # (P, q, Hq, Hkv, D)
    (0, 1, 4, 4, 8), (0, 16, 4, 2, 64), (1, 1, 9, 3, 64), (1, 5, 4, 4, 8),
    (37, 1, 4, 2, 8), (37, 5, 9, 3, 64), (37, 16, 4, 4, 8), (37, 16, 9, 3, 64),
]


@pytest.mark.parametrize(("prefix_len", "q_len", "heads", "kv_heads", "dim"), SHAPES)
def test_cascade_equals_one_masked_sdpa(prefix_len, q_len, heads, kv_heads, dim):
    query, key, value, full_mask = random_step(prefix_len, q_len, heads, kv_heads, dim)
    expected = sdpa(query, key, value, full_mask)
    torch.testing.assert_close(split_cascade(query, key, value, full_mask), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("prefix_len", "q_len", "heads", "kv_heads", "dim"), [(37, 16, 9, 3, 64), (1, 5, 4, 2, 8)])
def test_cascade_equals_one_masked_sdpa_in_float64(prefix_len, q_len, heads, kv_heads, dim):
    query, key, value, full_mask = random_step(prefix_len, q_len, heads, kv_heads, dim, dtype=torch.float64)
    out = split_cascade(query, key, value, full_mask, scale=0.3)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=full_mask, scale=0.3, enable_gqa=True
    )
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


def test_merge_of_two_halves_equals_attention_over_both_and_a_swapped_merge_does_not():
    query, key, value, _ = random_step(prefix_len=9, q_len=4, heads=4, kv_heads=2, dim=8)
    out_a, lse_a = attend_with_lse(query, key[:, :, :3], value[:, :, :3])
    out_b, lse_b = attend_with_lse(query, key[:, :, 3:], value[:, :, 3:])
    whole_out, whole_lse = attend_with_lse(query, key, value)
    merged_out, merged_lse = merge_by_lse(out_a, lse_a, out_b, lse_b)
    torch.testing.assert_close(merged_out, sdpa(query, key, value, None), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged_out, whole_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged_lse, whole_lse, atol=1e-5, rtol=1e-5)
    swapped, _ = merge_by_lse(out_a, lse_b, out_b, lse_a)  # each half weighted by the other's share
    assert (swapped - whole_out).abs().max() > 1e-2


def test_a_part_that_sees_no_key_drops_out_of_the_merge():
    query, key, value, _ = random_step(prefix_len=3, q_len=2, heads=2, kv_heads=2, dim=8)
    out_a, lse_a = attend_with_lse(query, key[:, :, :3], value[:, :, :3])
    blind = torch.zeros(2, 2, dtype=torch.bool)
    out_b, lse_b = attend_with_lse(query, key[:, :, 3:], value[:, :, 3:], blind)
    assert torch.equal(out_b, torch.zeros_like(out_b)) and torch.isneginf(lse_b).all()
    merged, lse = merge_by_lse(out_a, lse_a, out_b, lse_b)
    torch.testing.assert_close(merged, out_a)
    nothing, _ = merge_by_lse(out_b, lse_b, out_b, lse_b)
    assert torch.equal(nothing, torch.zeros_like(nothing))


@pytest.fixture
def cascade_calls(monkeypatch) -> list:
    """One entry per ``cascade_attention`` call made through ``cascade_attention_forward``."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return cascade_attention(*args, **kwargs)

    monkeypatch.setattr(cascade_module, "cascade_attention", spy)
    return calls


def module_stub(heads: int, kv_heads: int):
    return SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True)


@pytest.mark.parametrize("window", [None, 3])
def test_forward_equals_masked_sdpa_with_and_without_a_sliding_window(window, cascade_calls):
    """Window 3 hides prefix keys from some queries: the forward must not run the cascade then."""
    layout, prefix_len = step_layout(2, 2, (-1, 0)), 5
    query, key, value, _ = random_step(prefix_len, layout.size, heads=4, kv_heads=2, dim=8)
    allowed = tree_attention_mask(layout, prefix_len)  # [q, P + q]
    if window is not None:
        allowed = sliding_window_limit(allowed, layout, prefix_len, window)
    out, weights = cascade_attention_forward(module_stub(4, 2), query, key, value, allowed[None, None])
    assert weights is None and out.shape == (2, layout.size, 4, 8)  # [B, q, Hq, D]
    torch.testing.assert_close(out, sdpa(query, key, value, allowed).transpose(1, 2), atol=1e-5, rtol=1e-5)
    assert len(cascade_calls) == (window is None)


@pytest.mark.parametrize(("q_len", "key_len"), [(1, 6), (6, 6)])
def test_forward_without_a_mask_does_what_sdpa_does(q_len, key_len):
    """transformers passes no mask when SDPA's is_causal suffices (prefill, one-token decode)."""
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(1, 4, q_len, 8, generator=generator)
    key, value = torch.randn(2, 1, 2, key_len, 8, generator=generator)
    module = module_stub(4, 2)
    expected, _ = sdpa_attention_forward(module, query, key, value, None)
    torch.testing.assert_close(cascade_attention_forward(module, query, key, value, None)[0], expected)


def prefill_and_step(model, prefix, step, layout):  # [1, P, V] and [1, q, V] logits
    cache = new_cache()
    with torch.no_grad():
        prefill = model(input_ids=prefix, **{cache_argument(model): cache}).logits
        logits = model(
            input_ids=step,
            position_ids=(prefix.shape[1] + layout.depths)[None],  # [1, q]
            attention_mask=MaskBuilder(model)(layout, prefix.shape[1]),  # the engine's own masks
            **{cache_argument(model): cache},
        ).logits
    return prefill, logits


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_registered_backend_gives_the_logits_of_sdpa(arch, cascade_calls):
    """Prefill (the model's own causal mask) then an 11-token tree step after 7 cached tokens.
    gemma3's sliding layers (window 6) take the fallback; its full layers and the others cascade."""
    register_cascade()
    layout = step_layout(3, 2, chain_parents(2, 2))  # q = 1 + 4 + 6
    generator = torch.Generator().manual_seed(2)
    prefix = torch.randint(1, 96, (1, 7), generator=generator)
    step = torch.randint(1, 96, (1, layout.size), generator=generator)
    cascade = tiny_model(arch, CASCADE)
    assert cascade.config._attn_implementation == CASCADE
    reference = prefill_and_step(tiny_model(arch), prefix, step, layout)
    for got, expected in zip(prefill_and_step(cascade, prefix, step, layout), reference):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert len(cascade_calls) >= 1  # the step really ran the cascade, not only the fallback


def test_set_attn_implementation_switches_an_sdpa_model_to_the_cascade(cascade_calls):
    register_cascade()
    model = copy.deepcopy(tiny_model("llama"))
    model.set_attn_implementation(CASCADE)
    assert model.config._attn_implementation == CASCADE
    layout = step_layout(2, 1)
    prefill_and_step(model, torch.tensor([[3, 4, 5]]), torch.tensor([[6, 7, 8]]), layout)
    assert len(cascade_calls) == model.config.num_hidden_layers


def test_flash_prefix_refuses_a_mask():
    query, key, value, mask = random_step(2, 2, 2, 2, 8)
    with pytest.raises(ValueError, match="mask=None"):
        flash_prefix_attend(query, key, value, mask)


@pytest.mark.gpu
@pytest.mark.skipif(not flash_available(), reason="needs flash-attn and CUDA")
@pytest.mark.parametrize(("heads", "kv_heads"), [(8, 8), (8, 2)])
def test_flash_prefix_matches_plain_torch_in_bf16(heads, kv_heads):
    """bf16 keeps ~3 significant digits: outputs to 2e-2, lse (fp32 on both sides) to 1e-3."""
    query, key, value, _ = random_step(300, 16, heads, kv_heads, 64, dtype=torch.bfloat16)
    query, key, value = query.cuda(), key[:, :, :300].cuda(), value[:, :, :300].cuda()
    out, lse = flash_prefix_attend(query, key, value)
    expected_out, expected_lse = attend_with_lse(query, key, value)
    assert out.dtype == torch.bfloat16 and lse.shape == expected_lse.shape
    torch.testing.assert_close(out, expected_out, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse, expected_lse, atol=1e-3, rtol=1e-3)
