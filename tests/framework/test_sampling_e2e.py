"""End to end: the engine's sampled output has the law of plain ``generate(do_sample=True)``.

The model is a tiny random Llama with a 12-token vocabulary whose lm_head is scaled up so that
its next-token laws are sharp (top probability ~0.5-0.97) but not deterministic, and the prompt
is the model's own greedy continuation, which loops (``1 9 0 10 9 0 10 ...``): the pool seeded
from the prompt and the window then offer drafts that the sampling verifier often accepts
(~1.4-1.6 tokens per step). Each case draws ``DRAWS`` generations of 3 new tokens from the
engine (batch 1, one seeded ``torch.Generator`` per call) and as many from plain ``generate``
(one batched call after ``torch.manual_seed``: its rows are independent draws from the same
law), and compares the joint law of the 3 tokens with a two-sample chi-square test.

Threshold: ``chi2_contingency`` p-value > 1e-6, on cells merged so that every expected count is
>= 5 (where the chi-square approximation holds), so a correct sampler fails with probability
~1e-6 per case. Every draw is seeded, so the outcome is the same on every run: never flaky.
The test has power: the same samples compared across different settings (engine at T=0.7
against generate at T=1.0) are rejected by the same test.

Also here: reproducibility, the window's own generator, greedy (do_sample=False) unchanged,
the temperature -> 0 limit, and the ``custom_generate`` path under sampling.
"""

from __future__ import annotations

import copy
from collections import Counter
from functools import lru_cache

import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

from framework import LookaheadConfig, LookaheadEngine, lookahead_generate
from framework.costs import CostModel
from strategies.base import parse_params
from tests.tiny_models import greedy_reference, tiny_model, top2_gap

scipy_stats = pytest.importorskip("scipy.stats")

VOCAB = 12
NEW = 3  # tokens per generation: the first step can verify 2-token drafts and add a bonus token
DRAWS = 1500  # generations per side and case
P_MIN = 1e-6
CONFIG = LookaheadConfig(window=4, ngram=3, guess_set=4)
# every source at once: a ragged tree (drafts of 1..2 tokens, several branches per node)
TREE_CONFIG = LookaheadConfig(window=4, ngram=3, guess_set=4, sources=[
    "ngram", {"name": "suffix", "max_len": 2, "branches": 3}, {"name": "recycling", "branches": [3, 2]}])
# the adaptive scheduler choosing per step between the root alone and the tree, on a CPU-like curve
ADAPTIVE_CONFIG = TREE_CONFIG.model_copy(update={"scheduler": parse_params("scheduler", "adaptive")})
# the tree's every node decided at once (what an accelerator runs), forced on the CPU
ONE_PASS_CONFIG = TREE_CONFIG.model_copy(update={"verifier": parse_params("verifier", {"name": "sampling", "one_pass": True})})
CONFIGS = {"ngram": CONFIG, "tree": TREE_CONFIG, "adaptive": ADAPTIVE_CONFIG, "one_pass": ONE_PASS_CONFIG}
# (case, device): the CPU runs one case (the one-pass rule is also tested against the walk on equal
# uniforms); CUDA, where present, the three that differ most
ONE_PASS_RUNS = [("t1", "cpu")] + ([("t1", "cuda"), ("t0.7", "cuda"), ("top_p", "cuda")] if torch.cuda.is_available() else [])
CPU_COSTS = CostModel({1: 1.0, 2: 1.3, 8: 1.4, 16: 1.6})

CASES = {  # name -> sampling kwargs, passed alike to the engine and to generate()
    "t1": {},  # temperature 1.0 and HF's default top_k=50 (a no-op on 12 tokens)
    "t0.7": {"temperature": 0.7},
    "top_p": {"top_p": 0.8},
    "top_k_min_p": {"temperature": 1.3, "top_k": 4, "min_p": 0.05},
}


@lru_cache(maxsize=None)
def sharp_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=None, eos_token_id=None,
        pad_token_id=None, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # init std 0.02 gives near-uniform laws; sharpen them
    model.generation_config = GenerationConfig(pad_token_id=0)  # no eos: always NEW tokens
    return model


@lru_cache(maxsize=None)
def looping_prompt() -> torch.Tensor:  # [1, 12]
    """The model's own greedy continuation of token 1: it loops, so its n-grams make good drafts."""
    return greedy_reference(sharp_model(), torch.tensor([[1]]), 11)


@lru_cache(maxsize=None)
def engine_draws(case: str, config: str = "ngram", device: str = "cpu") -> tuple[Counter, int, int, Counter]:
    """(joint counts of the NEW tokens, new tokens, steps, tokens emitted per step) over DRAWS calls
    (on ``device``: the model is copied there and each call's generator lives there)."""
    model, prompt = sharp_model(), looping_prompt()
    if device != "cpu":
        model = copy.deepcopy(model).to(device)
    engine = LookaheadEngine(model, CONFIGS[config], cost_model=CPU_COSTS)
    counts, emitted = Counter(), Counter()
    tokens = steps = 0
    for seed in range(DRAWS):
        out = engine.generate(
            prompt, max_new_tokens=NEW, do_sample=True, generator=torch.Generator(device).manual_seed(seed),
            **CASES[case],
        )
        counts[tuple(out.sequences[0, -NEW:].tolist())] += 1
        tokens += out.stats.new_tokens
        steps += out.stats.steps
        emitted.update(out.stats.emitted_per_step)
    return counts, tokens, steps, emitted


@lru_cache(maxsize=None)
def hf_draws(case: str) -> Counter:
    """Joint counts of the NEW tokens of DRAWS independent rows of one plain generate() call."""
    model, prompt = sharp_model(), looping_prompt()
    batch = prompt.repeat(DRAWS, 1)  # [DRAWS, T]: the same prompt, no padding
    torch.manual_seed(1234)
    with torch.inference_mode():
        out = model.generate(
            batch, attention_mask=torch.ones_like(batch), do_sample=True, max_new_tokens=NEW, min_new_tokens=0,
            **CASES[case],
        )  # fmt: skip
    assert out.shape == (DRAWS, prompt.shape[1] + NEW)
    return Counter(map(tuple, out[:, -NEW:].tolist()))


def merged_table(a: Counter, b: Counter, min_expected: float = 5.0) -> list[list[int]]:
    """2 x K contingency table of ``a`` and ``b``; cells with an expected count < ``min_expected``
    in either row are merged into one cell (itself merged into the smallest kept cell if still
    too small). Expected count of cell k in row r: pooled_k * n_r / (n_a + n_b)."""
    n_a, n_b = sum(a.values()), sum(b.values())
    scale = min(n_a, n_b) / (n_a + n_b)
    outcomes = sorted(set(a) | set(b), key=lambda o: -(a[o] + b[o]))
    kept = [o for o in outcomes if (a[o] + b[o]) * scale >= min_expected]
    rare = [o for o in outcomes if (a[o] + b[o]) * scale < min_expected]
    cells = [[o] for o in kept]
    if rare:
        if sum(a[o] + b[o] for o in rare) * scale >= min_expected or not cells:
            cells.append(rare)
        else:
            cells[-1].extend(rare)
    return [[sum(a[o] for o in cell) for cell in cells], [sum(b[o] for o in cell) for cell in cells]]


def p_value(a: Counter, b: Counter) -> tuple[float, int]:
    table = merged_table(a, b)
    assert len(table[0]) >= 5, f"too few cells for a meaningful test: {table}"
    return float(scipy_stats.chi2_contingency(table).pvalue), len(table[0])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread is fastest, and much faster on a busy shared CPU (~5 vs ~25 ms a call)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# the law of the output


def test_merged_table_keeps_expected_counts_at_least_five():
    a = Counter({"x": 50, "y": 40, "r1": 4, "r2": 3})
    b = Counter({"x": 50, "y": 40, "r3": 5})
    assert merged_table(a, b) == [[50, 40, 7], [50, 40, 5]]  # r1-r3 pooled 12 -> expected ~5.9: one cell
    a, b = Counter({"x": 50, "y": 40, "r1": 2}), Counter({"x": 45, "y": 50, "r3": 3})
    assert merged_table(a, b) == [[50, 42], [45, 53]]  # r1, r3 pooled 5 -> expected ~2.5: into y
    assert merged_table(Counter({"x": 10, "r": 1}), Counter({"x": 10})) == [[11], [10]]  # merged into x


@pytest.mark.parametrize("case, config", [(case, "ngram") for case in CASES] + [("t1", "tree"), ("top_p", "tree"), ("t1", "adaptive"), ("t0.7", "adaptive")])
def test_joint_law_of_three_tokens_matches_plain_generate(case, config):
    counts, tokens, steps, emitted = engine_draws(case, config)
    reference = hf_draws(case)
    p, cells = p_value(counts, reference)
    print(f"{case}: p={p:.3g} cells={cells} tokens/step={tokens / steps:.3f} emitted={dict(emitted)}")
    assert p > P_MIN, (
        f"{case}: chi-square p={p:.3g} over {cells} cells: "
        f"engine {counts.most_common(8)} vs generate {reference.most_common(8)}"
    )
    # drafts were verified and accepted, including whole drafts plus their bonus token
    assert tokens / steps > 1.2, f"{case}: only {tokens / steps:.3f} tokens per step"
    assert emitted[NEW] > 0, f"{case}: no step accepted a whole draft: {emitted}"


@pytest.mark.parametrize("case, device", ONE_PASS_RUNS)
def test_the_one_pass_decision_has_the_law_of_plain_generate(case, device):
    """Every tree node decided at once (one transfer), on the CPU and, where present, on CUDA
    with the generator there too; against plain generate() on the CPU."""
    counts, tokens, steps, emitted = engine_draws(case, "one_pass", device)
    p, cells = p_value(counts, hf_draws(case))
    assert p > P_MIN, f"{case} on {device}: chi-square p={p:.3g} over {cells} cells"
    assert tokens / steps > 1.2 and emitted[NEW] > 0, (tokens / steps, emitted)


def test_the_chi_square_test_rejects_a_different_law():
    """Power: the same samples, engine at T=0.7 or top_p=0.8 against generate at T=1.0."""
    for case in ("t0.7", "top_p"):
        p, cells = p_value(engine_draws(case)[0], hf_draws("t1"))
        print(f"{case} vs t1: p={p:.3g} cells={cells}")
        assert p < P_MIN, f"{case} vs t1 not rejected: p={p:.3g} over {cells} cells"


# --------------------------------------------------------------------------------------------
# randomness: the sampling generator only


def first_window(engine: LookaheadEngine, prompt, **kwargs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(sequences, window tokens the model saw in each step)`` of one generate() call."""
    seen, forward = [], engine._forward

    def spy(run, *args, **kwargs):
        seen.append(torch.tensor(run.window.token_list()))
        return forward(run, *args, **kwargs)

    engine._forward = spy
    try:
        out = engine.generate(prompt, **kwargs)
    finally:
        del engine._forward
    return out.sequences, seen


def test_same_seed_same_tokens_and_the_seed_matters():
    model, prompt = sharp_model(), looping_prompt()

    def sample(seed, engine=None):
        engine = engine or LookaheadEngine(model, CONFIG)
        out = engine.generate(
            prompt, max_new_tokens=16, do_sample=True, temperature=1.2, generator=torch.Generator().manual_seed(seed)
        )
        return out.sequences, out.stats.emitted_per_step

    engine = LookaheadEngine(model, CONFIG)
    first = sample(7, engine)
    for again in (sample(7, engine), sample(7)):  # the same engine again, a fresh engine
        assert torch.equal(again[0], first[0]) and again[1] == first[1]
    others = {tuple(sample(seed)[0][0].tolist()) for seed in range(6)}
    assert len(others) > 1, "six sampling seeds gave the same output"


def test_no_generator_draws_its_seed_from_torch_global_rng():
    engine, prompt = LookaheadEngine(sharp_model(), CONFIG), looping_prompt()
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        outputs.append(engine.generate(prompt, max_new_tokens=12, do_sample=True, temperature=1.2).sequences)
    assert torch.equal(*outputs)


def test_sampling_seed_does_not_change_the_window():
    model, prompt = sharp_model(), looping_prompt()
    engine = LookaheadEngine(model, CONFIG)
    runs = [
        first_window(engine, prompt, max_new_tokens=8, do_sample=True, generator=torch.Generator().manual_seed(seed))
        for seed in range(5)
    ]
    assert len({tuple(seq[0].tolist()) for seq, _ in runs}) > 1, "the seeds did not change the samples"
    initial = runs[0][1][0]
    assert initial.numel() == CONFIG.window  # one level of W tokens drawn from the prompt
    for _, windows in runs:
        assert torch.equal(windows[0], initial)
    greedy = first_window(engine, prompt, max_new_tokens=8, do_sample=False)[1]
    assert torch.equal(greedy[0], initial)  # the same window whether sampling or not
    # the window does follow config.window_seed (so the check above is not vacuous)
    reseeded = LookaheadEngine(model, CONFIG.model_copy(update={"window_seed": 1}))
    _, windows = first_window(
        reseeded, prompt, max_new_tokens=8, do_sample=True, generator=torch.Generator().manual_seed(0)
    )
    assert not torch.equal(windows[0], initial)


# --------------------------------------------------------------------------------------------
# greedy is unchanged


@pytest.mark.parametrize("verifier", ["greedy", "sampling"])
def test_do_sample_false_is_plain_greedy(verifier):
    """Whatever verifier is configured and whatever warper settings are passed (HF ignores them
    when not sampling), do_sample=False gives greedy generate()'s tokens and draws nothing."""
    model = tiny_model("llama")
    prompt = torch.tensor([[5, 6, 7, 8, 9] * 4 + [5, 6]])
    engine = LookaheadEngine(model, LookaheadConfig(window=4, ngram=4, guess_set=4, verifier={"name": verifier}))
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    out = engine.generate(
        prompt, max_new_tokens=30, do_sample=False, temperature=0.7, top_k=3, top_p=0.5, generator=generator
    )
    assert torch.equal(out.sequences, greedy_reference(model, prompt, 30))
    assert torch.equal(generator.get_state(), state)
    assert out.stats.steps < out.stats.new_tokens  # lookahead did accept drafts


def test_generation_config_do_sample_is_honoured_and_overridden():
    """``do_sample=None`` takes the model's generation_config (as in HF); an explicit False wins."""
    model, prompt = sharp_model(), looping_prompt()
    engine = LookaheadEngine(model, CONFIG)
    greedy = greedy_reference(model, prompt, 16)
    saved = model.generation_config
    model.generation_config = GenerationConfig(pad_token_id=0, do_sample=True, temperature=1.5)
    try:
        sampled = set()
        for seed in range(4):
            out = engine.generate(prompt, max_new_tokens=16, generator=torch.Generator().manual_seed(seed))
            sampled.add(tuple(out.sequences[0].tolist()))
        forced = engine.generate(prompt, max_new_tokens=16, do_sample=False).sequences
    finally:
        model.generation_config = saved
    assert len(sampled) > 1
    assert torch.equal(forced, greedy)


def test_temperature_to_zero_is_greedy():
    """At T=0.01 every greedy choice here leads by >= 0.7 logits, so sampling anything else has
    probability < 30 * 11 * exp(-70): the sampled output is the greedy one."""
    model, prompt = sharp_model(), looping_prompt()
    greedy = greedy_reference(model, prompt, 30)
    temperature = 0.01
    gap = min(top2_gap(model, greedy[:, :i]) for i in range(prompt.shape[1], greedy.shape[1]))
    assert gap / temperature > 50, f"the model has a near-tie (gap {gap:.3g}) on its greedy path"
    engine = LookaheadEngine(model, CONFIG)
    for seed in range(3):
        out = engine.generate(
            prompt, max_new_tokens=30, do_sample=True, temperature=temperature,
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        assert torch.equal(out.sequences, greedy)
        assert out.stats.steps < out.stats.new_tokens


# --------------------------------------------------------------------------------------------
# custom_generate


def hf_lookahead(model, prompt, **kwargs):
    return model.generate(
        prompt, attention_mask=torch.ones_like(prompt),  # token 0 is in the prompt and is the pad id
        custom_generate=lookahead_generate, window=4, ngram=3, guess_set=4, max_new_tokens=10, **kwargs,
    )  # fmt: skip


def test_custom_generate_samples_reproducibly():
    model, prompt = sharp_model(), looping_prompt()
    settings = dict(do_sample=True, temperature=1.2, top_p=0.95, top_k=8)
    outputs = [hf_lookahead(model, prompt, generator=torch.Generator().manual_seed(s), **settings) for s in range(6)]
    for out in outputs:
        assert out.shape == (1, prompt.shape[1] + 10)
        assert torch.equal(out[:, : prompt.shape[1]], prompt)
        assert 0 <= int(out.min()) and int(out.max()) < VOCAB
    assert len({tuple(out[0].tolist()) for out in outputs}) > 1, "six seeds gave the same output: not sampling"
    again = hf_lookahead(model, prompt, generator=torch.Generator().manual_seed(0), **settings)
    assert torch.equal(again, outputs[0])
    # the engine called directly with the same settings and generator gives the same tokens
    direct = LookaheadEngine(model, CONFIG).generate(
        prompt, max_new_tokens=10, generator=torch.Generator().manual_seed(0), **settings
    )
    assert torch.equal(direct.sequences, outputs[0])


def test_custom_generate_refuses_a_custom_logits_processor_when_sampling():
    class Boost(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, 3] += 5.0
            return scores

    model, prompt = sharp_model(), looping_prompt()
    with pytest.raises(NotImplementedError, match="Boost"):
        hf_lookahead(
            model, prompt, do_sample=True, temperature=0.7, generator=torch.Generator().manual_seed(0),
            logits_processor=LogitsProcessorList([Boost()]),
        )  # fmt: skip


def test_custom_generate_refuses_a_warper_it_does_not_build():
    model, prompt = sharp_model(), looping_prompt()
    with pytest.raises(NotImplementedError, match="typical_p"):
        hf_lookahead(model, prompt, do_sample=True, typical_p=0.9, generator=torch.Generator().manual_seed(0))
