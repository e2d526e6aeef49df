"""Greedy lookahead output equals plain greedy ``generate`` (the reference decoder).

Two kinds of test:
- every registered scheduler, pool and verifier, each in turn with the defaults in the other
  roles, on a repetitive prompt and a few architectures (deterministic; must accept drafts);
- one ``@given`` drawing the architecture, attention backend, W/N/G, all three strategies from
  the registry, prompt seeding, output harvesting, window realignment, prompt and length; it also
  counts the steps that accepted drafts and fails if too few did (else it proves little).

Where outputs differ the first difference must be a near-tie of the plain forward (random tiny
models have ties in fp32). Strategies are told apart only by declared capabilities:
a verifier that ``samples`` is not run by greedy calls (the engine uses the registered argmax
verifier instead); if it also ``preserves_distribution`` it is run by sampling with ``top_k=1``,
a point-mass law whose only sample is the greedy token, so its output must be greedy's too.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from framework import LookaheadConfig, LookaheadEngine
from strategies import lookup, registered
from strategies.base import ALL_ROLES, ROLES
from tests.tiny_models import ARCHITECTURES, PAD, VOCAB, assert_same_or_near_tie, greedy_reference, tiny_model

LOOPING = torch.tensor([[5, 6, 7, 8, 9] * 4 + [5, 6]])
# plain RoPE, sliding-window layers with per-layer-type masks, learned positions
SOME_ARCHITECTURES = ("llama", "gemma3", "gpt2")
# every registered strategy, read at collection time
STRATEGIES = [(role, name) for role in ALL_ROLES for name in sorted(registered(role))]


def decoding_for(verifier: str, seed: int = 0) -> dict | None:
    """``generate`` kwargs under which the engine runs ``verifier`` itself and greedy is the only
    correct output; None if there are none (a sampler that does not preserve the law)."""
    cls = lookup("verifier", verifier)
    if not cls.samples:
        return {"do_sample": False}
    if cls.preserves_distribution:  # top_k=1: the law is a point mass on the argmax
        return {"do_sample": True, "top_k": 1, "generator": torch.Generator().manual_seed(seed)}
    return None


def count_verifier_calls(engine: LookaheadEngine) -> Counter:
    """Count calls to the engine's configured verifier instance (to prove it is the one that ran)."""
    calls = Counter()
    verifier = engine.verifier
    for method in ("verify", "verify_tree"):
        bound = getattr(verifier, method)

        def counted(*args, _bound=bound, _method=method, **kwargs):
            calls[_method] += 1
            return _bound(*args, **kwargs)

        setattr(verifier, method, counted)  # instance attribute: shadows the class's method
    return calls


def repeats_itself(tokens: list[int], start: int = LOOPING.shape[1]) -> bool:
    """True if some bigram of the output occurred earlier in the text: something to copy."""
    return any(tuple(tokens[i - 1 : i + 1]) in {tuple(tokens[j - 1 : j + 1]) for j in range(1, i)}
               for i in range(start + 1, len(tokens)))


@pytest.mark.parametrize("arch", SOME_ARCHITECTURES)
@pytest.mark.parametrize(("role", "name"), STRATEGIES, ids=[f"{r}-{n}" for r, n in STRATEGIES])
def test_every_registered_strategy_is_exact_and_accepts_drafts(role, name, arch):
    """The strategy under test in its role, defaults elsewhere; 40 tokens after a looping prompt."""
    decoding = decoding_for(name) if role == "verifier" else {"do_sample": False}
    if decoding is None:
        pytest.skip(f"verifier {name!r} samples without preserving the law: no call runs it with a known output")
    model = tiny_model(arch)
    block = {"sources": [{"name": name}]} if role == "source" else {role: {"name": name}}
    engine = LookaheadEngine(model, LookaheadConfig(window=4, ngram=4, guess_set=4, **block))
    calls = count_verifier_calls(engine)
    out = engine.generate(LOOPING, max_new_tokens=40, **decoding)
    assert_same_or_near_tie(model, greedy_reference(model, LOOPING, 40), out.sequences)
    assert out.stats.new_tokens == 40
    if role == "source" and not repeats_itself(out.sequences[0].tolist()):
        assert sum(out.stats.fed.values()) > 0, f"source {name!r} on {arch}: never proposed anything"
        return  # e.g. a copying source where the output copies nothing: exact, nothing to accept
    assert out.stats.steps < out.stats.new_tokens, f"{role} {name!r} on {arch}: no multi-token step"
    if role == "verifier":
        assert sum(calls.values()) == out.stats.steps, f"verifier {name!r} was not the one that ran"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_accepts_drafts_and_stays_exact(arch):
    """Default strategies on every architecture, both attention backends."""
    config = LookaheadConfig(window=4, ngram=4, guess_set=4)
    for attn in ("sdpa", "eager"):
        model = tiny_model(arch, attn)
        reference = greedy_reference(model, LOOPING, 40)
        out = LookaheadEngine(model, config).generate(LOOPING, max_new_tokens=40)
        assert_same_or_near_tie(model, reference, out.sequences)
        assert out.stats.steps < out.stats.new_tokens, f"{arch}/{attn}: no multi-token step"


# --------------------------------------------------------------------------------------------
# the property


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
    """Any registered scheduler, pool and verifier (drawn when the test runs), any W/N/G."""
    pool = draw(st.sampled_from(sorted(registered("pool"))))
    capacity = draw(st.none() | st.integers(1, 8))
    if lookup("pool", pool).Params.model_fields["capacity"].annotation is type(None):
        capacity = None  # e.g. unbounded: no capacity at all
    return LookaheadConfig(
        window=draw(st.integers(0, 6)),
        ngram=draw(st.integers(2, 5)),
        guess_set=draw(st.integers(0, 6)),
        scheduler={"name": draw(st.sampled_from(sorted(registered("scheduler"))))},
        pool={"name": pool, "capacity": capacity, "seed_from_prompt": draw(st.booleans())},
        verifier={"name": draw(st.sampled_from(sorted(registered("verifier"))))},
        sources=draw(st.lists(st.sampled_from(sorted(registered("source"))), min_size=1, unique=True)),
        draft_budget=draw(st.none() | st.integers(0, 24)),
        min_score=draw(st.sampled_from([0.0, 0.0, 0.2])),
        harvest_output=draw(st.booleans()),
        realign=draw(st.sampled_from(["keep", "shift"])),
        window_seed=draw(st.integers(0, 3)),
        lazy_logits=draw(st.booleans()),
    )


@st.composite
def decodings(draw, verifier: str) -> dict:
    """Greedy, or point-mass sampling when the verifier would run under it (see module doc)."""
    point_mass = decoding_for(verifier, seed=draw(st.integers(0, 3)))
    if point_mass is not None and point_mass["do_sample"] and draw(st.booleans()):
        return point_mass
    return {"do_sample": False}


def test_greedy_lookahead_equals_plain_greedy_and_accepts_drafts():
    """The property over every drawn example, then: did the examples really accept drafts?

    The counters live in this test, so it proves the same thing alone or in any order."""
    exercised = Counter()

    @given(
        arch=st.sampled_from(ARCHITECTURES),
        attn=st.sampled_from(["sdpa", "eager"]),
        config=configs(),
        prompt=prompts(),
        max_new_tokens=st.integers(1, 32),
        data=st.data(),
    )
    def greedy_equals_plain_greedy(arch, attn, config, prompt, max_new_tokens, data):
        decoding = data.draw(decodings(config.verifier.name), label="decoding")
        model = tiny_model(arch, attn)
        reference = greedy_reference(model, prompt, max_new_tokens)
        out = LookaheadEngine(model, config).generate(prompt, max_new_tokens=max_new_tokens, **decoding)
        assert_same_or_near_tie(model, reference, out.sequences)
        stats = out.stats
        assert stats.new_tokens == out.sequences.shape[1] - prompt.shape[1]
        assert sum(stats.emitted_per_step) == stats.new_tokens
        assert all(k >= 1 for k in stats.emitted_per_step)
        if [b.name for b in config.sources] == ["ngram"]:  # the paper's branch alone: drafts of N-1
            assert all(k <= config.ngram for k in stats.emitted_per_step)
            if config.guess_set == 0:
                assert stats.steps == stats.new_tokens
        if config.draft_budget == 0:
            assert stats.steps == stats.new_tokens
        assert sum(stats.accepted_from.values()) == stats.new_tokens - stats.steps  # every accepted token attributed
        exercised["examples"] += 1
        exercised["sampled"] += decoding["do_sample"]
        exercised["steps"] += stats.steps
        exercised["multi_token_steps"] += sum(k > 1 for k in stats.emitted_per_step)
        exercised["draft_wins"] += sum(s != "none" for s in stats.sources)

    greedy_equals_plain_greedy()
    assert exercised["steps"] > 0, dict(exercised)
    assert exercised["multi_token_steps"] >= 0.05 * exercised["steps"], dict(exercised)
    assert exercised["draft_wins"] > 0, dict(exercised)
