"""Greedy lookahead output equals plain greedy ``generate`` (the reference decoder).

One ``@given`` draws the architecture, attention backend, W/N/G, pool policy, prompt seeding,
output harvesting, window realignment, prompt and length. Where outputs differ the first
difference must be a near-tie of the plain forward (random tiny models have ties in fp32).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from framework import LookaheadConfig, LookaheadEngine
from strategies import lookup, registered
from tests.tiny_models import ARCHITECTURES, PAD, VOCAB, assert_same_or_near_tie, greedy_reference, tiny_model

# steps and multi-token steps seen by the property test, checked by the test after it
EXERCISED = {"examples": 0, "steps": 0, "multi_token_steps": 0, "draft_wins": 0}


@st.composite
def prompts(draw) -> torch.Tensor:
    """Prompts with repeats (so seeded pools find matches) and a random tail, never the pad id."""
    token = st.integers(min_value=PAD + 1, max_value=VOCAB - 1)
    motif = draw(st.lists(token, min_size=1, max_size=6))
    repeats = draw(st.integers(min_value=1, max_value=4))
    tail = draw(st.lists(token, max_size=8))
    ids = (motif * repeats + tail)[:48]
    return torch.tensor([ids], dtype=torch.long)


@st.composite
def configs(draw) -> LookaheadConfig:
    pool = draw(st.sampled_from(sorted(registered("pool"))))
    capacity = draw(st.none() | st.integers(1, 8))
    if lookup("pool", pool).Params.model_fields["capacity"].annotation is type(None):
        capacity = None  # e.g. unbounded: no capacity at all
    return LookaheadConfig(
        window=draw(st.integers(0, 6)),
        ngram=draw(st.integers(2, 5)),
        guess_set=draw(st.integers(0, 6)),
        pool={
            "name": pool,
            "capacity": capacity,
            "seed_from_prompt": draw(st.booleans()),
        },
        harvest_output=draw(st.booleans()),
        realign=draw(st.sampled_from(["keep", "shift"])),
        window_seed=draw(st.integers(0, 3)),
        lazy_logits=draw(st.booleans()),
    )


@given(
    arch=st.sampled_from(ARCHITECTURES),
    attn=st.sampled_from(["sdpa", "eager"]),
    config=configs(),
    prompt=prompts(),
    max_new_tokens=st.integers(1, 32),
)
def test_greedy_lookahead_equals_plain_greedy(arch, attn, config, prompt, max_new_tokens):
    model = tiny_model(arch, attn)
    reference = greedy_reference(model, prompt, max_new_tokens)
    out = LookaheadEngine(model, config).generate(prompt, max_new_tokens=max_new_tokens)
    assert_same_or_near_tie(model, reference, out.sequences)
    stats = out.stats
    assert stats.new_tokens == out.sequences.shape[1] - prompt.shape[1]
    assert sum(stats.accepted_per_step) == stats.new_tokens
    assert all(1 <= k <= config.ngram for k in stats.accepted_per_step)
    if config.guess_set == 0:
        assert stats.steps == stats.new_tokens
    EXERCISED["examples"] += 1
    EXERCISED["steps"] += stats.steps
    EXERCISED["multi_token_steps"] += sum(k > 1 for k in stats.accepted_per_step)
    EXERCISED["draft_wins"] += sum(s != "none" for s in stats.sources)


def test_property_exercised_multi_token_steps():
    """The property above proves nothing unless drafts were really accepted."""
    if EXERCISED["examples"] == 0:
        pytest.skip("run together with test_greedy_lookahead_equals_plain_greedy")
    assert EXERCISED["multi_token_steps"] >= 0.05 * EXERCISED["steps"], EXERCISED
    assert EXERCISED["draft_wins"] > 0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_accepts_drafts_and_stays_exact(arch):
    """Deterministic companion: a repetitive prompt on every architecture, both backends."""
    prompt = torch.tensor([[5, 6, 7, 8, 9] * 4 + [5, 6]])
    config = LookaheadConfig(window=4, ngram=4, guess_set=4)
    for attn in ("sdpa", "eager"):
        model = tiny_model(arch, attn)
        reference = greedy_reference(model, prompt, 40)
        out = LookaheadEngine(model, config).generate(prompt, max_new_tokens=40)
        assert_same_or_near_tie(model, reference, out.sequences)
        assert out.stats.steps < out.stats.new_tokens, f"{arch}/{attn}: no multi-token step"
