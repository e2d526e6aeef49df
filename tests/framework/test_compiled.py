"""``LookaheadEngine(compile=True)``: the fixed-shape step through ``torch.compile`` decodes the same
tokens as the eager step and plain greedy, with at most two step shapes (graphs) per config."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from framework import LookaheadConfig, LookaheadEngine
from tests.tiny_models import greedy_reference, tiny_model

CONFIGS = {
    "defaults": LookaheadConfig(),  # W=0: root-only steps (size 1) and tree steps (the full size)
    "window": LookaheadConfig(window=4, ngram=4, guess_set=4),
    "sources": LookaheadConfig(window=2, ngram=3, guess_set=2, sources=["ngram", "suffix", "recycling"], draft_budget=12),
}


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", CONFIGS)
def test_compiled_step_decodes_what_plain_greedy_does_in_at_most_two_shapes(name, fresh_dynamo):
    model = tiny_model("llama")
    engine = LookaheadEngine(model, CONFIGS[name], compile=True)
    generator = torch.Generator().manual_seed(1)
    repeated = torch.tensor([[5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]])  # drafts get accepted: tree steps
    prompts = [repeated] + [torch.randint(1, 96, (1, 6 + i), generator=generator) for i in range(3)]
    prompts.append(torch.tensor([[7]]))  # one token: no prefill, the first step allocates the cache
    for prompt in prompts:
        out = engine.generate(prompt, max_new_tokens=30)
        assert out.sequences.tolist() == greedy_reference(model, prompt, 30).tolist()
        sizes = set(out.stats.fed_tokens)
        assert sizes <= {1, CONFIGS[name].step_tokens()}, sizes  # padded to the one compiled size
    assert 1 <= graphs() <= 2


def test_compiled_and_eager_steps_agree_step_by_step(fresh_dynamo):
    model = tiny_model("gemma3")  # sliding-window layers: the per-layer-type masks over the whole cache
    config = CONFIGS["window"]
    prompt = torch.tensor([[3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8]])
    eager = LookaheadEngine(model, config).generate(prompt, max_new_tokens=40)
    compiled = LookaheadEngine(model, config, compile=True).generate(prompt, max_new_tokens=40)
    assert compiled.sequences.tolist() == eager.sequences.tolist()
    assert compiled.stats.emitted_per_step == eager.stats.emitted_per_step


def test_a_step_larger_than_the_compiled_size_is_refused():
    engine = LookaheadEngine(tiny_model("llama"), LookaheadConfig(), compile=True)
    with pytest.raises(ValueError, match="compiled step size"):
        engine.step.size(engine.step.largest + 1)
