"""KV-cache plumbing: the cache kwarg, a config-free prefill cache, and the engine's ``StepCache``
(load, prepare, commit compaction) checked against hand-built references on tiny models."""

from __future__ import annotations

import pytest
import torch
import transformers
from packaging.version import Version

from framework.argmax import numpy_can
from framework.attention import MaskBuilder
from framework.kv import StepCache, accepts_logits_to_keep, cache_argument, new_cache
from framework.layout import chain_parents, step_layout
from tests.tiny_models import tiny_model

PAST = 5  # cached prefix length before the step
STEP = 6  # tokens of the step: root + 5


class OldModel:
    def forward(self, input_ids, past_key_values=None, use_cache=None):  # transformers < 5.24
        pass


class NewModel:
    def forward(self, input_ids, cache=None, logits_to_keep=0, **kwargs):  # transformers >= 5.24
        pass


def filled_cache(model, tokens: int | list[int]) -> transformers.DynamicCache:
    """A cache after one plain causal forward of ``tokens`` (a count: distinct tokens 1, 2, ...)."""
    ids = list(range(1, tokens + 1)) if isinstance(tokens, int) else tokens
    cache = new_cache()
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]), **{cache_argument(model): cache}, use_cache=True)
    return cache


def snapshot(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]  # each [B, H_kv, S, D]


def test_cache_argument_follows_the_forward_signature():
    assert cache_argument(OldModel()) == "past_key_values"
    assert cache_argument(NewModel()) == "cache"
    expected = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
    assert cache_argument(tiny_model("llama")) == expected


def test_accepts_logits_to_keep():
    assert not accepts_logits_to_keep(OldModel())
    assert accepts_logits_to_keep(NewModel())
    assert accepts_logits_to_keep(tiny_model("llama"))


def test_new_cache_is_empty_and_keeps_every_position_of_sliding_layers():
    """Gemma 3's sliding layers (window 6) would keep only 6 positions in a config-built cache."""
    assert new_cache().get_seq_length() == 0
    cache = filled_cache(tiny_model("gemma3"), 10)
    assert cache.get_seq_length() == 10
    assert [layer.keys.shape[-2] for layer in cache.layers] == [10, 10]


def step_cache(model, tokens: int | list[int], capacity: int = 32, shared: bool = True) -> StepCache:
    """A step cache over a prefill; ``shared``: every layer in one block (the engine's), else each
    layer its own tensor."""
    cache = StepCache(capacity, model.config.num_hidden_layers if shared else None)
    cache.load(filled_cache(model, tokens))
    return cache


def test_step_cache_loads_a_prefill_and_returns_what_attention_may_see():
    model = tiny_model("llama")
    dynamic = filled_cache(model, PAST)
    cache = step_cache(model, PAST)
    assert cache.get_seq_length() == PAST and cache.capacity == 32
    for index, layer in enumerate(dynamic.layers):
        assert torch.equal(cache.store[index][0, :, :, :PAST], layer.keys)
        assert torch.equal(cache.store[index][1, :, :, :PAST], layer.values)
    new = torch.randn(1, 2, STEP, 8)  # [B, H_kv, q, D]
    cache.prepare(PAST, STEP, PAST + STEP, "cpu")
    keys, values = cache.update(new, -new, 0)
    assert keys.shape[-2] == PAST + STEP and torch.equal(keys[..., PAST:, :], new)
    cache.prepare(PAST, STEP, None, "cpu")  # the compiled step: the whole buffer, masked
    assert cache.update(new, -new, 0)[0].shape[-2] == 32


def test_step_cache_refuses_positions_past_its_capacity():
    cache = step_cache(tiny_model("llama"), PAST, capacity=8)
    with pytest.raises(ValueError, match="capacity 8"):
        cache.prepare(PAST, 4, None, "cpu")


@pytest.mark.parametrize(
    "slots",
    [
        [],  # nothing accepted: only the root stays
        [1, 2],  # already packed: nothing moves
        [3, 4],  # moved down by two (one run: one copy)
        [2, 3, 4],  # one run moved down by one: source and target overlap
        [2, 5],  # a path with a gap (a gather)
        [1, 2, 3, 4, 5],  # everything kept: nothing moves
    ],
)
@pytest.mark.parametrize("shared", [True, False])
def test_commit_packs_the_root_and_the_kept_slots_after_the_prefix(slots, shared):
    cache = step_cache(tiny_model("llama"), PAST, shared=shared)
    assert (cache.block is not None) == shared
    step = torch.randn(1, 2, STEP, 8)
    cache.prepare(PAST, STEP, None, "cpu")
    for layer in list(cache.store):
        cache.update(step + layer, -step, layer)
    before = {layer: store.clone() for layer, store in cache.store.items()}
    cache.commit(PAST, slots)
    positions = list(range(PAST + 1)) + [PAST + s for s in slots]  # prefix, root, kept slots
    assert cache.get_seq_length() == len(positions)
    for layer, store in cache.store.items():
        assert torch.equal(store[..., : len(positions), :], before[layer][..., positions, :])


@pytest.mark.parametrize("slots", [[], [3, 4], [2, 3, 4], [2, 5]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # NumPy's compaction, torch's
@pytest.mark.parametrize("layers", [2, None])  # one shared block, a tensor per layer
def test_commit_compacts_alike_in_numpy_and_in_torch(slots, dtype, layers):
    cache = StepCache(16, layers)
    states = torch.randn(1, 2, PAST + STEP, 8).to(dtype)  # [B, H_kv, prefix + step, D]
    cache.prepare(0, PAST + STEP, None, "cpu")
    for layer in range(2):
        cache.update(states + layer, -states, layer)
    assert numpy_can(cache.store[0]) == (dtype == torch.float32)
    before = {layer: store.clone() for layer, store in cache.store.items()}
    cache.commit(PAST, slots)
    positions = list(range(PAST + 1)) + [PAST + s for s in slots]
    for layer, store in cache.store.items():
        assert torch.equal(store[..., : len(positions), :], before[layer][..., positions, :])


def test_a_layer_of_another_shape_gets_its_own_tensor_and_is_compacted_too():
    cache = StepCache(16, layers=3)
    states = [torch.randn(1, 2, STEP, 8), torch.randn(1, 2, STEP, 8), torch.randn(1, 1, STEP, 4)]  # [B, H, q, D]
    cache.prepare(0, STEP, None, "cpu")
    for layer, new in enumerate(states):
        cache.update(new, -new, layer)
    assert cache.mixed and cache.store[2].shape == (2, 1, 1, 16, 4) and cache.store[1]._base is cache.block
    cache.commit(0, [3])
    for layer, new in enumerate(states):
        assert torch.equal(cache.store[layer][0, :, :, :2], new[:, :, [0, 3]])
        assert torch.equal(cache.store[layer][1, :, :, :2], -new[:, :, [0, 3]])
    assert cache.get_seq_length() == 2


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_kept_draft_equals_the_cache_of_a_plain_forward(arch):
    """Step = root + two 2-token drafts under the tree mask; keeping the second draft must leave
    the cache a plain causal forward over prefix + root + that draft would have built."""
    model = tiny_model(arch)
    arg = cache_argument(model)
    prefix, root, drafts = [3, 4, 5, 6, 7], 8, [(9, 10), (11, 12)]
    layout = step_layout(0, 0, chain_parents(2, 2))  # slots: root, 9, 10, 11, 12
    cache = step_cache(model, prefix)
    with torch.no_grad():
        cache.prepare(len(prefix), layout.size, len(prefix) + layout.size, "cpu")
        model(
            input_ids=torch.tensor([[root, *drafts[0], *drafts[1]]]),
            position_ids=(len(prefix) + layout.depths)[None],  # [1, q]
            attention_mask=MaskBuilder(model)(layout, len(prefix)),
            **{arg: cache},
            use_cache=True,
        )
        cache.commit(len(prefix), [layout.node_slot(2), layout.node_slot(3)])  # slots 3, 4
    reference = filled_cache(model, prefix + [root, *drafts[1]])
    assert cache.get_seq_length() == reference.get_seq_length() == len(prefix) + 3
    for index, ref in enumerate(reference.layers):
        torch.testing.assert_close(cache.store[index][0, :, :, :8], ref.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cache.store[index][1, :, :, :8], ref.values, atol=1e-5, rtol=1e-5)
