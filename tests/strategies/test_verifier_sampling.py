"""The ``sampling`` verifier and the HF-identical warpers of ``framework.sampling``.

How the checks chain:
    1. exact law: a pure-Python reference of the decision rule (below), run over every
       accept/reject branch in exact fractions, emits each token with exactly the target
       probability (first token; and first two tokens jointly for drafts of length 2);
    2. same uniforms: the tensor implementation and that reference, fed the same uniforms
       table, commit identical verdicts on many random cases;
    3. Monte Carlo: the implementation's batched position decision (the code ``verify`` runs)
       matches the target law within a bound a correct sampler misses with probability
       <= 1e-6, and deliberately wrong samplers are rejected by the same bound;
    4. residual guard: rounding that empties the residual never yields NaN or an invalid token.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from framework.sampling import build_warpers, resolve_sampling
from strategies.base import Verdict, lookup
from strategies.verifier_sampling import SamplingVerifier, decide_position, sample_excluding

try:  # tests/conftest.py registers and loads the shared profiles ("ci": derandomized)
    settings.get_profile("ci")
except InvalidArgument:  # imported without that conftest: behave as under "ci"
    settings.register_profile("ci", derandomize=True, deadline=None)
    settings.load_profile("ci")

F64 = torch.float64

# --------------------------------------------------------------------------------------------
# The pure-Python reference of the decision rule, with its randomness behind two primitives:
#   coin(t, j, p, mass): True with probability p / mass (the j-th distinct candidate at t)
#   pick(t, weights):    index i with probability weights[i] / sum(weights)


def reference_verify(probs_at, drafts, length, draw) -> tuple[tuple[int, ...], int | None, int]:
    """(tokens, row, accepted); ``probs_at(row, t)`` is the target law after ``row``'s first t
    draft tokens (``row`` None at t = 0)."""
    alive = list(range(len(drafts)))
    prefix: list[int] = []
    for t in range(length + 1):
        probs = probs_at(alive[0] if prefix else None, t)
        tried: list[int] = []
        spent = 0 * probs[0]  # 0 of the right number type
        accepted = None
        for i in alive if t < length else ():
            x = drafts[i][t]
            if x in tried:  # already rejected at this position
                continue
            tried.append(x)
            if draw.coin(t, len(tried) - 1, probs[x], 1 - spent):
                accepted = x
                break
            spent = spent + probs[x]
        if accepted is None:
            residual = [0 * p if y in tried else p for y, p in enumerate(probs)]
            if not sum(residual) > 0:  # only reachable through rounding
                residual = probs
            token = draw.pick(t, residual)
            return tuple(prefix + [token]), (alive[0] if prefix else None), len(prefix)
        prefix.append(accepted)
        alive = [i for i in alive if drafts[i][t] == accepted]
    raise AssertionError("unreachable")


class FromUniforms:
    """The primitives on the verifier's uniforms table: [t][j] for coins, [t][-1] for picks."""

    def __init__(self, table: list[list[float]]) -> None:
        self.table = table

    def coin(self, t, j, p, mass):
        return p > 0 and self.table[t][j] * max(mass, 0.0) < p

    def pick(self, t, weights):
        cdf = list(itertools.accumulate(weights))
        total = cdf[-1]
        v = min(self.table[t][-1] * total, math.nextafter(total, 0.0))
        return bisect.bisect_right(cdf, v)


class Branches:
    """Plays one path of the decision tree (the choices in ``script``, then option 0),
    multiplying the exact probability of each choice into ``weight``."""

    def __init__(self, script: tuple[int, ...]) -> None:
        self.script, self.depth, self.weight, self.fanout = script, 0, Fraction(1), []

    def _choose(self, options):  # [(value, probability > 0)]
        if self.depth < len(self.script):
            k = self.script[self.depth]
        else:
            k = 0
            self.fanout.append(len(options))
        self.depth += 1
        value, prob = options[k]
        self.weight *= prob
        return value

    def coin(self, t, j, p, mass):
        if p <= 0:
            return False
        q = p / mass  # mass >= p > 0 in exact arithmetic
        return self._choose([(v, w) for v, w in ((True, q), (False, 1 - q)) if w > 0])

    def pick(self, t, weights):
        total = sum(weights)
        return self._choose([(i, w / total) for i, w in enumerate(weights) if w > 0])


def exact_law(run) -> dict:
    """outcome -> exact probability, over every branch of ``run(draw)``."""
    law: dict = defaultdict(Fraction)
    pending = [()]
    while pending:
        script = pending.pop()
        draw = Branches(script)
        law[run(draw)] += draw.weight
        for depth, options in enumerate(draw.fanout):  # new choices took option 0: queue the rest
            pending.extend(script + (0,) * depth + (k,) for k in range(1, options))
    return law


# --------------------------------------------------------------------------------------------
# 1. exact law


def distributions(size: int):
    """Exact laws over ``size`` tokens with zeros and ties (small integer weights)."""
    weights = st.lists(st.integers(0, 4), min_size=size, max_size=size).filter(any)
    return weights.map(lambda w: [Fraction(x, sum(w)) for x in w])


def point_mass(size: int) -> list[Fraction]:
    return [Fraction(1)] + [Fraction(0)] * (size - 1)


@st.composite
def first_token_cases(draw):
    size = draw(st.integers(2, 8))
    target = draw(distributions(size))
    candidates = draw(st.lists(st.integers(0, size - 1), max_size=6))  # duplicates, zeros, empty
    return target, candidates


@settings(max_examples=300)  # ~1 s: exact enumeration is cheap
@given(first_token_cases())
def test_first_token_law_is_exactly_the_target(case):
    target, candidates = case
    drafts = [[x] for x in candidates]
    bonus = point_mass(len(target))  # the token after the draft: irrelevant here, one branch
    law = exact_law(lambda draw: reference_verify(lambda row, t: bonus if t else target, drafts, 1, draw))
    first = defaultdict(Fraction)
    for (tokens, row, accepted), prob in law.items():
        first[tokens[0]] += prob
        assert (row is None) == (accepted == 0)
        assert accepted == 0 or drafts[row][0] == tokens[0]
    assert sum(law.values()) == 1
    assert [first[y] for y in range(len(target))] == target


@st.composite
def two_token_cases(draw):
    size = draw(st.integers(2, 5))
    root = draw(distributions(size))
    after = [draw(distributions(size)) for _ in range(size)]  # after[x]: the law after token x
    drafts = draw(st.lists(st.lists(st.integers(0, size - 1), min_size=2, max_size=2), max_size=4))
    return root, after, drafts


@settings(max_examples=150)
@given(two_token_cases())
def test_first_two_tokens_are_exactly_autoregressive(case):
    """Joint law of the first two output tokens; a step that commits one token is continued by
    the next step, whose first token follows ``after[y1]`` (the test above)."""
    root, after, drafts = case
    size = len(root)

    def probs_at(row, t):  # each row's own context: its target depends on its first token
        return root if t == 0 else after[drafts[row][0]] if t == 1 else point_mass(size)

    law = exact_law(lambda draw: reference_verify(probs_at, drafts, 2, draw))
    for (tokens, row, accepted), prob in law.items():
        assert accepted == 0 or drafts[row][:accepted] == list(tokens[:accepted])
    assert_first_two_autoregressive([(tokens, p) for (tokens, _, _), p in law.items()], root, after)


def assert_first_two_autoregressive(law: list, root, after) -> None:
    """The joint law of the first two output tokens (a one-token step continued by the next
    step, which draws from ``after[y1]``) is exactly ``root[y1] * after[y1][y2]``."""
    size = len(root)
    joint = defaultdict(Fraction)
    for tokens, prob in law:  # (output tokens, probability) of every branch
        if len(tokens) >= 2:
            joint[tokens[:2]] += prob
        else:
            for y2 in range(size):
                joint[tokens[0], y2] += prob * after[tokens[0]][y2]
    for y1, y2 in itertools.product(range(size), repeat=2):
        assert joint[y1, y2] == root[y1] * after[y1][y2], (y1, y2)


# --------------------------------------------------------------------------------------------
# 2. same uniforms: implementation == reference


def random_case(gen: torch.Generator):
    """Scores with -inf holes and peaks, drafts that share prefixes and follow likely tokens."""
    size = [5, 12, 40][int(torch.randint(3, (), generator=gen))]
    rows, length = int(torch.randint(0, 7, (), generator=gen)), int(torch.randint(0, 5, (), generator=gen))
    scale = [0.5, 3.0, 8.0][int(torch.randint(3, (), generator=gen))]
    scores = torch.randn(1 + rows * length, size, generator=gen, dtype=torch.float32) * scale
    holes = torch.rand(scores.shape, generator=gen) < 0.3
    holes[:, 0] = False  # keep one finite score per row
    scores[holes] = -math.inf
    drafts = torch.zeros(rows, length, dtype=torch.long)
    likely = scores.topk(min(3, size), dim=-1).indices  # [1 + g*L, 3]
    for i in range(rows):
        share = int(torch.randint(0, length + 1, (), generator=gen)) if i else 0
        drafts[i, :share] = drafts[int(torch.randint(0, i, (), generator=gen)), :share] if i else 0
        for t in range(share, length):
            source = 0 if t == 0 else 1 + i * length + t - 1  # the score row predicting position t
            drafts[i, t] = likely[source, int(torch.randint(0, likely.shape[1], (), generator=gen))]
    return scores[0], drafts, scores[1:].reshape(rows, length, size)


def reference_on(root_scores, draft_tokens, draft_scores, seed) -> Verdict:
    rows, length = draft_tokens.shape
    table = torch.rand((length + 1, rows + 1), generator=torch.Generator().manual_seed(seed), dtype=F64)

    def probs_at(row, t):
        scores = root_scores if t == 0 else draft_scores[row, t - 1]
        return torch.softmax(scores.to(F64), -1).tolist()

    draw = FromUniforms(table.tolist())
    tokens, row, accepted = reference_verify(probs_at, draft_tokens.tolist(), length, draw)
    return Verdict(tokens=tokens, row=row, accepted=accepted)


def test_verify_matches_reference_on_same_uniforms():
    verifier = SamplingVerifier(SamplingVerifier.Params())
    gen = torch.Generator().manual_seed(1234)
    seen = defaultdict(int)
    for seed in range(400):
        root, drafts, draft_scores = random_case(gen)
        got = verifier.verify(root, drafts, draft_scores, torch.Generator().manual_seed(seed))
        assert got == reference_on(root, drafts, draft_scores, seed), seed
        assert len(got.tokens) == got.accepted + 1 and (got.row is None) == (got.accepted == 0)
        if got.accepted:
            assert drafts[got.row, : got.accepted].tolist() == list(got.tokens[: got.accepted])
        length = drafts.shape[1]
        seen["none" if got.accepted == 0 else "all" if got.accepted == length else "some"] += 1
        seen["recovered_with_drafts"] += got.accepted < length and drafts.shape[0] > 0
    # the cases reach every branch: none, some and all of a draft accepted
    assert min(seen["none"], seen["some"], seen["all"], seen["recovered_with_drafts"]) >= 20, dict(seen)


def test_batched_decision_matches_reference_row_by_row():
    gen = torch.Generator().manual_seed(7)
    for _ in range(20):
        root, _, _ = random_case(gen)
        probs = torch.softmax(root.to(F64), -1)
        drawn = torch.randint(0, len(probs), (4,), generator=gen).tolist()
        candidates = torch.tensor(list(dict.fromkeys(drawn)))  # distinct, in order
        uniforms = torch.rand(50, len(candidates) + 1, generator=gen, dtype=F64)
        tokens, hit = decide_position(probs, candidates, uniforms[:, :-1], uniforms[:, -1])
        drafts = [[x] for x in candidates.tolist()]
        for n in range(len(uniforms)):
            table = [uniforms[n].tolist(), [0.0] * len(drafts) + [0.5]]
            want, _, accepted = reference_verify(lambda r, t: probs.tolist(), drafts, 1, FromUniforms(table))
            assert (int(tokens[n]), bool(hit[n])) == (want[0], accepted == 1)


def test_same_generator_state_same_verdict_and_registry():
    assert lookup("verifier", "sampling") is SamplingVerifier
    assert SamplingVerifier.preserves_distribution and SamplingVerifier.samples
    root, drafts, draft_scores = random_case(torch.Generator().manual_seed(3))
    verifier = SamplingVerifier(SamplingVerifier.Params())
    runs = [verifier.verify(root, drafts, draft_scores, torch.Generator().manual_seed(9)) for _ in range(2)]
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="torch.Generator"):
        verifier.verify(root, drafts, draft_scores, None)


# --------------------------------------------------------------------------------------------
# 3. Monte Carlo on the position decision


DRAWS = 400_000
DELTA = 1e-6


def tv_bound(size: int, draws: int = DRAWS, delta: float = DELTA) -> float:
    """E[TV] <= 0.5 * sqrt(K/n) (Cauchy-Schwarz), and TV moves by <= 1/n per draw, so by
    McDiarmid P(TV > E[TV] + sqrt(ln(1/delta)/(2n))) <= delta: a correct sampler fails with
    probability <= delta, whatever the seed."""
    return 0.5 * math.sqrt(size / draws) + math.sqrt(math.log(1 / delta) / (2 * draws))


def wrong_no_renormalise(probs, candidates, accept_u, sample_u):  # accepts with p, not p/mass
    accept = accept_u < probs[candidates]  # [n, k]
    first = accept.to(torch.uint8).argmax(dim=1)
    recovered = sample_excluding(probs, candidates, sample_u)
    return torch.where(accept.any(dim=1), candidates[first], recovered), None


def wrong_target_on_reject(probs, candidates, accept_u, sample_u):  # rejection ignores the residual
    tokens, hit = decide_position(probs, candidates, accept_u, sample_u)
    return torch.where(hit, tokens, sample_excluding(probs, candidates[:0], sample_u)), None


def wrong_always_accept(probs, candidates, accept_u, sample_u):
    return decide_position(probs, candidates, torch.zeros_like(accept_u), sample_u)


MC_CASES = {  # name: (target law, candidates in try order; duplicates and a zero-mass one)
    "k8": ([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02], [1, 0, 1, 7, 5]),
    "k16": ([18, 14, 12, 10, 8, 7, 6, 5, 5, 4, 3, 3, 2, 2, 1, 0], [3, 15, 0, 3, 8, 2]),
}


def empirical_tv(decide, case: str, seed: int) -> tuple[float, int]:
    weights, candidates = MC_CASES[case]
    probs = torch.tensor(weights, dtype=F64) / sum(weights)
    tried = torch.tensor(list(dict.fromkeys(candidates)))  # the verifier tries each token once
    gen = torch.Generator().manual_seed(seed)
    uniforms = torch.rand(DRAWS, len(tried) + 1, generator=gen, dtype=F64)
    tokens, _ = decide(probs, tried, uniforms[:, :-1], uniforms[:, -1])
    counts = torch.bincount(tokens, minlength=len(probs)).to(F64)
    return 0.5 * float((counts / DRAWS - probs).abs().sum()), len(probs)


@pytest.mark.parametrize("case", sorted(MC_CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_monte_carlo_law_matches_target(case, seed):
    tv, size = empirical_tv(decide_position, case, seed)
    assert tv <= tv_bound(size), (tv, tv_bound(size))


@pytest.mark.parametrize("wrong", [wrong_no_renormalise, wrong_target_on_reject, wrong_always_accept])
@pytest.mark.parametrize("case", sorted(MC_CASES))
def test_monte_carlo_rejects_wrong_samplers(case, wrong):
    tv, size = empirical_tv(wrong, case, seed=0)
    assert tv > tv_bound(size), (tv, tv_bound(size))


# --------------------------------------------------------------------------------------------
# 4. residual guard

ALMOST_ONE = 1.0 - 2.0**-53  # the largest float64 below 1


def test_empty_residual_after_rounding_falls_back_to_a_valid_token():
    """Find laws whose candidates hold all the mass but, by rounding, 1 - spent stays above the
    last candidate's probability: u near 1 rejects it and leaves an all-zero residual."""
    gen = torch.Generator().manual_seed(0)
    exercised = 0
    for _ in range(300):
        probs = torch.rand(6, generator=gen, dtype=F64)
        probs[torch.rand(6, generator=gen) < 0.3] = 0.0
        probs[0] += 1e-3
        probs /= probs.sum()
        candidates = torch.nonzero(probs).flatten()  # every token with mass, all tried
        accept_u = torch.full((1, len(candidates)), ALMOST_ONE, dtype=F64)
        token, hit = decide_position(probs, candidates, accept_u, torch.tensor([ALMOST_ONE], dtype=F64))
        assert probs[int(token[0])] > 0
        exercised += not bool(hit[0])  # all rejected: the residual was all zero
    assert exercised >= 10, exercised


def test_extreme_uniforms_on_nearly_normalised_laws_give_valid_tokens():
    """Laws a few ulps off 1 either way (as softmax gives), candidates covering all the mass
    with zero-mass ones interleaved, uniforms at 0 and just below 1: never NaN, never a
    zero-mass token, and the accept threshold never exceeds a zero-mass candidate."""
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        probs = torch.rand(7, generator=gen, dtype=F64)
        probs[torch.rand(7, generator=gen) < 0.4] = 0.0
        probs[3] = 0.0
        probs[6] += 1e-3
        probs /= probs.sum()
        ulps = int(torch.randint(-4, 5, (), generator=gen))
        probs[6] = probs[6] + ulps * 2.0**-53  # total now 1 +- a few ulps
        candidates = torch.randperm(7, generator=gen)  # every token, zero-mass ones included
        for u in (0.0, ALMOST_ONE):
            accept_u = torch.full((1, 7), u, dtype=F64)
            token, hit = decide_position(probs, candidates, accept_u, torch.tensor([u], dtype=F64))
            assert probs[int(token[0])] > 0
        for trial in range(20):  # mixed extremes
            accept_u = torch.where(torch.rand(1, 7, generator=gen) < 0.5, 0.0, ALMOST_ONE).to(F64)
            token, hit = decide_position(probs, candidates, accept_u, accept_u[:, 0])
            assert probs[int(token[0])] > 0


def test_verify_with_all_mass_on_candidates_never_fails():
    verifier = SamplingVerifier(SamplingVerifier.Params())
    root = torch.full((8,), -math.inf)
    root[[2, 5]] = torch.tensor([0.3, -1.2])
    drafts = torch.tensor([[5, 1], [2, 3], [5, 4]])
    draft_scores = torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(0))
    for seed in range(200):
        got = verifier.verify(root, drafts, draft_scores, torch.Generator().manual_seed(seed))
        assert got.accepted >= 1 and got.tokens[0] in (2, 5)
    with pytest.raises(ValueError, match="no mass"):
        verifier.verify(torch.full((8,), -math.inf), drafts, draft_scores, torch.Generator())


# --------------------------------------------------------------------------------------------
# framework.sampling: the warpers generate() builds, resolved the same way


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def hf_built(model, config_fields: dict, kwargs: dict):
    """(logits processors, generation config) exactly as generate() hands them on."""
    from transformers import GenerationConfig

    captured = {}

    def capture(model, input_ids, logits_processor=None, generation_config=None, **_):
        captured.update(processors=logits_processor, config=generation_config)
        return input_ids

    model.generation_config = GenerationConfig(**config_fields)
    model.generate(torch.tensor([[1, 2, 3]]), custom_generate=capture, max_new_tokens=1, **kwargs)
    return captured["processors"], captured["config"]


WARPER_CASES = [  # (model.generation_config fields, generate() kwargs); None kwargs omitted
    ({}, {"do_sample": True}),  # HF default top_k=50 applies
    ({}, {"do_sample": True, "temperature": 0.7, "top_p": 0.9}),
    ({}, {"do_sample": True, "top_k": 0, "min_p": 0.1, "temperature": 1.0}),
    ({"do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95}, {}),
    ({"do_sample": True, "top_k": 20, "min_p": 0.05}, {"top_k": 5, "temperature": 1.3, "top_p": 0.8}),
    ({"do_sample": True, "top_k": 3}, {"top_k": 1, "min_p": 0.0}),
    ({"temperature": 0.5}, {}),  # greedy: no warpers
]


@pytest.mark.parametrize("config_fields, kwargs", WARPER_CASES)
def test_warpers_equal_the_ones_generate_builds(tiny_model, config_fields, kwargs):
    hf_processors, hf_config = hf_built(tiny_model, config_fields, kwargs)
    resolved = resolve_sampling(tiny_model.generation_config, **kwargs)
    for field in ("do_sample", "temperature", "top_k", "top_p", "min_p"):
        assert getattr(resolved, field) == getattr(hf_config, field), field
    ours = resolved.warpers()
    assert [type(w) for w in ours] == [type(p) for p in hf_processors]
    ids = torch.tensor([[1, 2, 3]])
    scores = torch.randn(4, 96, generator=torch.Generator().manual_seed(0)) * 2
    scores[1, :10] = 1.5  # ties at the cut-offs
    scores[2, 5:] = -math.inf
    assert torch.equal(ours(ids, scores.clone()), hf_processors(ids, scores.clone()))


def test_build_warpers_conditions_and_unsupported_settings():
    assert len(build_warpers(temperature=1.0, top_k=0, top_p=1.0)) == 0
    assert len(build_warpers(min_p=0.0)) == 1  # HF adds min-p whenever it is set
    from transformers import GenerationConfig

    with pytest.raises(NotImplementedError, match="typical_p"):
        resolve_sampling(GenerationConfig(typical_p=0.9), do_sample=True)
    assert not resolve_sampling(GenerationConfig(typical_p=0.9)).do_sample  # greedy: irrelevant


# --------------------------------------------------------------------------------------------
# 5. trees of any shape: the same rule at every node over its distinct children


def reference_tree(probs_at, children, draw) -> tuple[tuple[int, ...], int]:
    """(tokens, accepted) of the rule on a token tree: ``children[path]`` lists the distinct
    child tokens of the node reached by ``path`` in try order; ``probs_at(path)`` is the law there."""
    path: tuple[int, ...] = ()
    while True:
        probs = probs_at(path)
        tried, spent, accepted = [], 0 * probs[0], None
        for x in children.get(path, []):
            tried.append(x)
            if draw.coin(len(path), len(tried) - 1, probs[x], 1 - spent):
                accepted = x
                break
            spent = spent + probs[x]
        if accepted is None:
            residual = [0 * p if y in tried else p for y, p in enumerate(probs)]
            if not sum(residual) > 0:
                residual = probs
            return path + (draw.pick(len(path), residual),), len(path)
        path = path + (accepted,)


def tree_children(tree) -> dict[tuple[int, ...], list[int]]:
    """path -> child tokens in creation order, for a ``DraftTree``."""
    paths: dict[int, tuple[int, ...]] = {-1: ()}
    table: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for node, (token, parent) in enumerate(zip(tree.tokens, tree.parents)):
        paths[node] = paths[parent] + (token,)
        table[paths[parent]].append(token)
    return table


@st.composite
def tree_cases(draw):
    """A law at the root and after each first token, and drafts of lengths 1..3 (a ragged tree)."""
    size = draw(st.integers(2, 4))
    root = draw(distributions(size))
    after = [draw(distributions(size)) for _ in range(size)]
    drafts = draw(st.lists(st.lists(st.integers(0, size - 1), min_size=1, max_size=3), max_size=4))
    return root, after, drafts


@settings(max_examples=150)
@given(tree_cases())
def test_on_ragged_trees_the_first_two_tokens_are_exactly_autoregressive(case):
    from framework.layout import build_draft_tree

    root, after, drafts = case
    size = len(root)
    children = tree_children(build_draft_tree([tuple(d) for d in dict.fromkeys(map(tuple, drafts))]))

    def probs_at(path):
        return root if not path else after[path[0]] if len(path) == 1 else point_mass(size)

    law = exact_law(lambda draw: reference_tree(probs_at, children, draw))
    for (tokens, accepted), prob in law.items():
        assert accepted == 0 or tokens[accepted - 1] in children[tokens[: accepted - 1]]  # a path of the tree
    assert_first_two_autoregressive([(tokens, p) for (tokens, _), p in law.items()], root, after)


def random_tree_step(seed: int, vocab: int, max_drafts: int):
    """A random ragged tree (0..max_drafts distinct drafts of 1..3 tokens), scores [1 + n, V] for
    the root and each node, and a uniforms table of the verifier's shape."""
    from framework.layout import build_draft_tree

    gen = torch.Generator().manual_seed(seed)
    drafts = list(dict.fromkeys(
        tuple(torch.randint(vocab, (int(torch.randint(1, 4, (1,), generator=gen)),), generator=gen).tolist())
        for _ in range(int(torch.randint(0, max_drafts + 1, (1,), generator=gen)))))
    tree = build_draft_tree(drafts)
    scores = torch.randn(1 + tree.size, vocab, generator=gen, dtype=F64) * 2  # [1 + n, V]
    leaves, depth = tree.draft_nodes.shape
    return tree, scores, torch.rand(depth + 1, leaves + 1, generator=gen, dtype=F64)


@settings(max_examples=60)
@given(st.integers(0, 2**31 - 1))
def test_walk_tree_matches_the_reference_on_the_same_uniforms(seed):
    """The tensor implementation on random ragged trees, fed the reference's uniforms table."""
    from strategies.verifier_sampling import walk_tree

    tree, scores, uniforms = random_tree_step(seed, vocab=5, max_drafts=4)
    verdict = walk_tree(scores[0], tree, lambda nodes: scores[[1 + n for n in nodes]], uniforms)

    node_of = {(): -1}
    for node, (token, parent) in enumerate(zip(tree.tokens, tree.parents)):
        node_of[next(p for p, n in node_of.items() if n == parent) + (token,)] = node
    probs_at = lambda path: torch.softmax(scores[1 + node_of[path]], -1).tolist()
    table = [[float(u) for u in row] for row in uniforms]
    tokens, accepted = reference_tree(probs_at, tree_children(tree), FromUniforms(table))
    assert verdict.tokens == tokens and verdict.accepted == accepted
    assert [tree.tokens[n] for n in verdict.path] == list(tokens[:accepted])


def test_on_equal_length_drafts_the_tree_walk_draws_what_verify_draws():
    """Same generator state, same drafts: ``verify_tree`` on their trie == ``verify`` on the rows."""
    from framework.layout import build_draft_tree

    verifier = SamplingVerifier(SamplingVerifier.Params())
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        root_scores, draft_tokens, draft_scores = random_case(gen)
        drafts = [tuple(d) for d in draft_tokens.tolist()]
        if len(set(drafts)) != len(drafts) or not drafts or not drafts[0]:
            continue  # the engine never feeds the same draft twice
        tree = build_draft_tree(drafts)
        rows: dict[int, torch.Tensor] = {}
        for i in range(len(drafts)):  # a shared node reads the first row through it, as ``verify`` does
            for t in range(draft_tokens.shape[1]):
                rows.setdefault(int(tree.draft_nodes[i, t]), draft_scores[i, t])
        flat = verifier.verify(root_scores, draft_tokens, draft_scores, torch.Generator().manual_seed(seed))
        walked = verifier.verify_tree(root_scores, tree, lambda nodes: torch.stack([rows[n] for n in nodes]),
                                      torch.Generator().manual_seed(seed))
        assert (walked.tokens, walked.accepted) == (flat.tokens, flat.accepted)


# --------------------------------------------------------------------------------------------
# 6. every node decided at once (the accelerator's one-pass walk)


def test_decide_rows_equals_decide_position_row_by_row():
    """Each row of the batched decision is the one-position decision on that row's law and
    candidates: token 0 among the candidates (the padding index), rows without candidates, laws
    whose candidates hold all the mass (the residual guard) and uniforms at the extremes."""
    from strategies.verifier_sampling import decide_rows

    gen = torch.Generator().manual_seed(11)
    for trial in range(40):
        n, vocab = int(torch.randint(1, 7, (), generator=gen)), 6
        probs = torch.softmax(torch.randn(n, vocab, generator=gen, dtype=F64) * 3, -1)
        probs[0, 3:] = 0.0  # row 0: mass on tokens 0-2 only, which may all be candidates
        probs[0] /= probs[0].sum()
        rows = [torch.randperm(vocab, generator=gen)[: int(torch.randint(0, 4, (), generator=gen))].tolist()
                for _ in range(n)]
        rows[0] = [0, 1, 2][: int(torch.randint(0, 4, (), generator=gen))]
        width = max(len(r) for r in rows)
        children = torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long).reshape(n, width)
        uniforms = torch.rand(n, width + 1, generator=gen, dtype=F64)
        if trial % 5 == 0:
            uniforms = torch.where(uniforms < 0.5, 0.0, ALMOST_ONE).to(F64)
        choice, drawn, empty = decide_rows(probs, children, uniforms[:, :width], uniforms[:, width])
        assert not empty.any()
        for r in range(n):
            token, hit = decide_position(probs[r], torch.tensor(rows[r], dtype=torch.long),
                                         uniforms[r, None, : len(rows[r])], uniforms[r, width, None])
            got = rows[r][int(choice[r])] if int(choice[r]) >= 0 else int(drawn[r])
            assert (got, int(choice[r]) >= 0) == (int(token[0]), bool(hit[0])), (trial, r)


def test_decide_rows_flags_a_law_without_mass():
    from strategies.verifier_sampling import decide_rows

    probs = torch.softmax(torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]], dtype=F64), -1)  # row 1: NaN
    choice, _, empty = decide_rows(probs, torch.tensor([[1], [-1]]), torch.zeros(2, 1, dtype=F64),
                                   torch.full((2,), 0.5, dtype=F64))
    assert empty.tolist() == [False, True] and int(choice[0]) == 0


@settings(max_examples=60)
@given(st.integers(0, 2**31 - 1))
def test_the_one_pass_walk_gives_the_walks_verdict_on_the_same_uniforms(seed):
    """Random ragged trees (the empty one included), token 0 among the children."""
    from strategies.verifier_sampling import walk_tree, walk_tree_at_once

    tree, scores, uniforms = random_tree_step(seed, vocab=4, max_drafts=5)
    calls = []

    def node_scores(nodes):
        calls.append(list(nodes))
        return scores[[1 + n for n in nodes]]

    walked = walk_tree(scores[0], tree, lambda nodes: scores[[1 + n for n in nodes]], uniforms)
    at_once = walk_tree_at_once(scores[0], tree, node_scores, uniforms)
    assert at_once == walked
    assert calls == ([list(range(tree.size))] if tree.size else [])  # every node's row, read once


def test_the_verifier_takes_one_pass_when_asked_and_raises_on_a_law_without_mass():
    from framework.layout import build_draft_tree

    tree = build_draft_tree([(1, 2), (1, 3), (0,)])
    scores = torch.randn(1 + tree.size, 5, generator=torch.Generator().manual_seed(0))
    node_scores = lambda nodes: scores[[1 + n for n in nodes]]  # noqa: E731
    walk = SamplingVerifier(SamplingVerifier.Params())
    once = SamplingVerifier(SamplingVerifier.Params(one_pass=True))
    for seed in range(30):
        expected = walk.verify_tree(scores[0], tree, node_scores, torch.Generator().manual_seed(seed))
        assert once.verify_tree(scores[0], tree, node_scores, torch.Generator().manual_seed(seed)) == expected
    dead = torch.full((5,), -math.inf)
    with pytest.raises(ValueError, match="no mass"):
        once.verify_tree(dead, tree, node_scores, torch.Generator())
