"""FlexAttention backend: the step's mask as a BlockMask gives what one masked SDPA call gives.

Tolerances: attention outputs atol = rtol = 1e-5 in float32 and 1e-12 in float64; model logits
1e-5 against the same weights on ``sdpa``; decoding token-identical to plain greedy.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

import framework.flex as flex_module
from framework import LookaheadConfig, LookaheadEngine
from framework.attention import tree_attention_mask
from framework.flex import FLEX, block_mask, flex_attention_forward, flex_step_attention, register_flex
from framework.layout import chain_parents, step_layout
from tests.framework.test_cascade import prefill_and_step, random_step, sdpa
from tests.tiny_models import greedy_reference, tiny_model

SHAPES = [  # (P, q, Hq, Hkv, D): GQA 9/3 as the default model; keys across several 128-blocks
    (0, 1, 4, 4, 8), (0, 16, 4, 2, 64), (1, 5, 4, 4, 8), (37, 16, 9, 3, 64), (250, 121, 9, 3, 64), (300, 7, 4, 2, 8),
]


@pytest.mark.parametrize(("prefix_len", "q_len", "heads", "kv_heads", "dim"), SHAPES)
def test_flex_over_the_block_mask_equals_one_masked_sdpa(prefix_len, q_len, heads, kv_heads, dim):
    query, key, value, full_mask = random_step(prefix_len, q_len, heads, kv_heads, dim)
    out = flex_step_attention(query, key, value, block_mask(full_mask))
    torch.testing.assert_close(out, sdpa(query, key, value, full_mask), atol=1e-5, rtol=1e-5)


def test_flex_equals_sdpa_in_float64_with_a_scale():
    query, key, value, full_mask = random_step(37, 16, 9, 3, 64, dtype=torch.float64)
    out = flex_step_attention(query, key, value, block_mask(full_mask), scale=0.3)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=full_mask, enable_gqa=True, scale=0.3)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


def test_the_block_mask_skips_the_hidden_tail_of_a_preallocated_cache():
    """A step of 5 tokens after 130 (300) cached ones in a 512-slot cache: keys from 135 (305)
    on are hidden, so only the first two (three) of four key blocks of 128 are visited."""
    layout = step_layout(0, 0, (-1, 0, 1, 2))  # the root and a chain of 4 draft tokens
    for past, visited in ((130, 2), (300, 3)):
        mask = block_mask(tree_attention_mask(layout, past, columns=512))
        assert mask.shape == (1, 1, 5, 512)
        assert int(mask.kv_num_blocks + mask.full_kv_num_blocks) == visited
        assert mask.kv_indices[0, 0, 0, :visited].tolist() == list(range(visited))


@pytest.mark.parametrize("arch", ["llama", "gemma3", "mistral"])
def test_registered_backend_gives_the_logits_of_sdpa(arch):
    """Prefill (transformers' own causal mask: the SDPA fallback) then an 11-token tree step after
    7 cached tokens through flex; gemma3 and mistral (window 6) also get sliding BlockMasks."""
    register_flex()
    layout = step_layout(3, 2, chain_parents(2, 2))  # q = 1 + 4 + 6
    generator = torch.Generator().manual_seed(2)
    prefix = torch.randint(1, 96, (1, 7), generator=generator)
    step = torch.randint(1, 96, (1, layout.size), generator=generator)
    flex = tiny_model(arch, FLEX)
    assert flex.config._attn_implementation == FLEX
    reference = prefill_and_step(tiny_model(arch), prefix, step, layout)
    for got, expected in zip(prefill_and_step(flex, prefix, step, layout), reference):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_step_really_runs_flex(monkeypatch):
    """One flex call per layer in the step; the prefill (a tensor mask) none."""
    register_flex()
    calls = []
    real = flex_module.flex_step_attention
    monkeypatch.setattr(flex_module, "flex_step_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = copy.deepcopy(tiny_model("llama"))
    model.set_attn_implementation(FLEX)
    prefill_and_step(model, torch.tensor([[3, 4, 5]]), torch.tensor([[6, 7, 8]]), step_layout(2, 1))
    assert len(calls) == model.config.num_hidden_layers


def test_a_mask_of_the_wrong_size_is_refused():
    query, key, value, full_mask = random_step(4, 3, 2, 2, 8, batch=1)
    with pytest.raises(ValueError, match="BlockMask covers"):
        flex_attention_forward(torch.nn.Module(), query, key, value, block_mask(full_mask[:, 1:]))


def test_a_model_without_flex_support_is_refused_before_decoding():
    register_flex()
    model = copy.deepcopy(tiny_model("gpt2"))  # its code reads mask.ndim: no BlockMask there
    model.config._attn_implementation = FLEX
    with pytest.raises(ValueError, match="_supports_flex_attn"):
        LookaheadEngine(model, LookaheadConfig())


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2"])
@pytest.mark.parametrize("config", [LookaheadConfig(), LookaheadConfig(window=4, ngram=3, guess_set=4)],
                         ids=["defaults", "window"])
def test_flex_decoding_equals_plain_greedy(arch, config):
    register_flex()
    prompt = torch.tensor([[5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]])
    out = LookaheadEngine(tiny_model(arch, FLEX), config).generate(prompt, max_new_tokens=30)
    assert out.sequences.tolist() == greedy_reference(tiny_model(arch), prompt, 30).tolist()
    assert out.stats.steps < 30


@pytest.mark.slow
def test_compiled_flex_step_decodes_what_plain_greedy_does():
    """The fixed-shape step with flex inside torch.compile (the GPU configuration; ~25 s on CPU)."""
    register_flex()
    torch._dynamo.reset()
    counters.clear()
    try:
        prompt = torch.tensor([[5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]])
        config = LookaheadConfig(window=4, ngram=3, guess_set=4)
        out = LookaheadEngine(tiny_model("llama", FLEX), config, compile=True).generate(prompt, max_new_tokens=30)
        assert out.sequences.tolist() == greedy_reference(tiny_model("llama"), prompt, 30).tolist()
        assert set(out.stats.fed_tokens) <= {1, config.step_tokens()}
        assert 1 <= counters["stats"]["unique_graphs"] <= 2
    finally:
        torch._dynamo.reset()
