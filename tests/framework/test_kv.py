"""KV-cache plumbing: the cache kwarg, a config-free cache, and ``keep_slots`` compaction checked
against hand-built references on real ``DynamicCache``s of tiny models."""

from __future__ import annotations

import pytest
import torch
import transformers
from packaging.version import Version

from framework.attention import MaskBuilder
from framework.kv import accepts_logits_to_keep, cache_argument, cache_length, keep_slots, new_cache
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
    assert cache_length(new_cache()) == 0
    cache = filled_cache(tiny_model("gemma3"), 10)
    assert cache_length(cache) == 10
    assert [layer.keys.shape[-2] for layer in cache.layers] == [10, 10]


@pytest.mark.parametrize(
    "slots",
    [
        [],  # nothing accepted: only the root stays
        [1, 2],  # already packed: a crop only
        [3, 4],  # moved down by two
        [2, 5],  # a path with a gap
        [1, 2, 3, 4, 5],  # everything kept: nothing moves, nothing dropped
    ],
)
def test_keep_slots_packs_the_root_and_the_kept_slots_after_the_prefix(slots):
    cache = filled_cache(tiny_model("llama"), PAST + STEP)
    before = snapshot(cache)
    keep_slots(cache, PAST, slots)
    positions = list(range(PAST + 1)) + [PAST + s for s in slots]  # prefix, root, kept slots
    assert cache_length(cache) == len(positions)
    for layer, (keys, values) in zip(cache.layers, before):
        assert torch.equal(layer.keys, keys[..., positions, :])
        assert torch.equal(layer.values, values[..., positions, :])


def test_keep_slots_on_a_short_cache_drops_nothing():
    """A step that appended only the root: nothing to move or crop."""
    cache = filled_cache(tiny_model("llama"), PAST + 1)
    before = snapshot(cache)
    keep_slots(cache, PAST, [])
    assert cache_length(cache) == PAST + 1
    assert all(torch.equal(layer.keys, k) for layer, (k, _) in zip(cache.layers, before))


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_kept_draft_equals_the_cache_of_a_plain_forward(arch):
    """Step = root + two 2-token drafts under the tree mask; keeping the second draft must leave
    the cache a plain causal forward over prefix + root + that draft would have built."""
    model = tiny_model(arch)
    arg = cache_argument(model)
    prefix, root, drafts = [3, 4, 5, 6, 7], 8, [(9, 10), (11, 12)]
    layout = step_layout(0, 0, chain_parents(2, 2))  # slots: root, 9, 10, 11, 12
    cache = new_cache()
    with torch.no_grad():
        model(input_ids=torch.tensor([prefix]), **{arg: cache}, use_cache=True)
        model(
            input_ids=torch.tensor([[root, *drafts[0], *drafts[1]]]),
            position_ids=(len(prefix) + layout.depths)[None],  # [1, q]
            attention_mask=MaskBuilder(model)(layout, len(prefix)),
            **{arg: cache},
            use_cache=True,
        )
        keep_slots(cache, len(prefix), [layout.node_slot(2), layout.node_slot(3)])  # slots 3, 4
    reference = filled_cache(model, prefix + [root, *drafts[1]])
    assert cache_length(cache) == cache_length(reference) == len(prefix) + 3
    for layer, ref in zip(cache.layers, reference.layers):
        torch.testing.assert_close(layer.keys, ref.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer.values, ref.values, atol=1e-5, rtol=1e-5)

