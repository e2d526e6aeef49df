"""Draft sources at the extremes, each against a brute-force reference or a hand-made case."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from framework import LookaheadConfig, LookaheadEngine
from strategies.base import FedNode, StepOutcome, lookup
from tests.tiny_models import greedy_reference, tiny_model


def source(name: str, **params):
    config = LookaheadConfig(sources=[{"name": name, **params}], ngram=3, guess_set=2)
    return lookup("source", name)(config.sources[0], config=config)


def outcome(context, committed, accepted=0, nodes=(), window=(), top=None):
    return StepOutcome(context=list(context), root=context[-len(committed) - 1], committed=tuple(committed),
                       accepted=accepted, nodes=list(nodes), window_ngrams=list(window), top_tokens=top or {})


# --------------------------------------------------------------------------------------------
# suffix


def brute_force_suffix(text: list[int], max_match: int, max_len: int) -> tuple[int, ...] | None:
    """The continuation after the most recent earlier occurrence of the longest matching suffix."""
    for k in range(min(max_match, len(text) - 1), 0, -1):
        suffix = text[-k:]
        for end in range(len(text) - 2, k - 2, -1):
            if text[end - k + 1 : end + 1] == suffix:
                return tuple(text[end + 1 : end + 1 + max_len])
    return None


@given(st.lists(st.integers(0, 3), min_size=1, max_size=30), st.integers(1, 5), st.integers(1, 6),
       st.integers(0, 29))
def test_suffix_proposes_the_longest_most_recent_match_first(text, max_match, max_len, split):
    """Indexed incrementally (prompt, then committed tokens), it finds what a rescan finds."""
    split = min(split, len(text) - 1) + 1
    src = source("suffix", max_match=max_match, max_len=max_len, branches=3)
    src.begin(text[:split])
    if split < len(text):
        src.observe(outcome(text, text[split:]))
    found = src.propose(text, max_len=99)
    expected = brute_force_suffix(text, max_match, max_len)
    assert (found[0].tokens if found else None) == expected
    assert len({c.tokens for c in found}) == len(found) <= 3
    assert all(len(c.tokens) == len(c.probs) == len(c.keys) and c.source == "suffix" for c in found)


def test_suffix_respects_the_engines_max_len_and_min_match():
    src = source("suffix", max_len=8, min_match=2)
    src.begin([1, 2, 3, 4, 5, 1, 2])
    assert [c.tokens for c in src.propose([1, 2, 3, 4, 5, 1, 2], max_len=2)] == [(3, 4)]
    src.begin([1, 2, 3, 1])  # only a 1-token match: below min_match
    assert src.propose([1, 2, 3, 1], max_len=4) == []


# --------------------------------------------------------------------------------------------
# recycling


def test_recycling_expands_the_docstring_example():
    src = source("recycling", branches=(2, 1), seed_from_prompt=False)
    src.begin([7])
    src.observe(outcome([7, 7], [7], top={7: [3, 9], 3: [5, 1], 9: [2]}))
    assert [c.tokens for c in src.propose([7], max_len=5)] == [(3, 5), (9, 2)]
    assert [c.keys for c in src.propose([7], max_len=5)][0] == ((1, 0), (2, 0))
    assert [c.tokens for c in src.propose([7], max_len=1)] == [(3,), (9,)]


def test_recycling_keeps_its_table_across_calls_unless_told_not_to():
    kept, fresh = source("recycling"), source("recycling", persist=False)
    for src in (kept, fresh):
        src.begin([1, 2])
        src.observe(outcome([1, 2, 5], [5], top={2: [5, 6]}))
        src.begin([4])
    assert kept.table[2] == [5, 6] and 2 not in fresh.table


def test_recycling_seeds_empty_entries_from_the_prompt():
    src = source("recycling", branches=(1, 1, 1))
    src.begin([4, 5, 6, 4])
    assert [c.tokens for c in src.propose([4, 5, 6, 4], max_len=3)] == [(5, 6, 4)]


# --------------------------------------------------------------------------------------------
# ngram and the shared estimates


def test_ngram_harvests_the_ngrams_that_span_the_prompt_and_the_output():
    """Keys in the prompt's last N-1 tokens continue into the output (they were once dropped)."""
    config = LookaheadConfig(ngram=3, guess_set=2, pool={"name": "unbounded", "seed_from_prompt": False})
    src = lookup("source", "ngram")(config.sources[0], config=config)
    src.begin([5, 6, 7, 8])
    src.observe(outcome([5, 6, 7, 8, 15, 53], [15, 53], accepted=1))
    assert src.pool.drafts_for(7) == [(8, 15)] and src.pool.drafts_for(8) == [(15, 53)]


def test_ngram_candidates_carry_each_tokens_depth_and_its_running_estimate():
    """An n-gram draft's keys are its tokens' depths and its probs the estimates of those depths,
    which differ once the outcomes of fed nodes differ by depth."""
    config = LookaheadConfig(ngram=4, guess_set=2, pool={"name": "unbounded", "seed_from_prompt": True})
    src = lookup("source", "ngram")(config.sources[0], config=config)
    src.begin([7, 1, 2, 3, 7, 4, 5, 6])
    nodes = [FedNode(1, 1, "ngram", 1, True)] * 3 + [FedNode(2, 2, "ngram", 2, False)] * 2
    src.observe(outcome([7, 1, 2, 3, 7, 4, 5, 6, 9], [9], nodes=nodes))
    assert src.estimate(1) > 0.5 > src.estimate(2) and src.estimate(3) == 0.5
    found = src.propose([7, 1, 2, 3, 7, 4, 5, 6, 9, 7], max_len=3)
    assert {c.tokens for c in found} == {(1, 2, 3), (4, 5, 6)}  # the prompt's two n-grams after 7
    for candidate in found:
        depths = tuple(range(1, len(candidate.tokens) + 1))
        assert candidate.keys == depths and candidate.source == "ngram"
        assert candidate.probs == tuple(src.estimate(depth) for depth in depths)


def test_estimates_follow_the_outcomes_of_the_sources_own_nodes():
    src = source("suffix")
    assert src.estimate((4, 1)) == 0.5  # the prior
    hits = [FedNode(1, 1, "suffix", (4, 1), True)] * 3 + [FedNode(1, 1, "ngram", (4, 1), False)] * 5
    src.observe(outcome([1, 1], [1], nodes=hits))
    assert src.estimate((4, 1)) > 0.75  # three hits of its own; the other source's misses don't count


def test_every_source_together_is_exact_and_attributes_every_accepted_token():
    model = tiny_model("llama")
    prompt = torch.tensor([[5, 6, 7, 8, 9] * 4 + [5, 6]])
    config = LookaheadConfig(window=3, ngram=3, guess_set=3, sources=["ngram", "suffix", "recycling"], draft_budget=12)
    out = LookaheadEngine(model, config).generate(prompt, max_new_tokens=30)
    assert torch.equal(out.sequences, greedy_reference(model, prompt, 30))
    stats = out.stats
    assert sum(stats.accepted_from.values()) == stats.new_tokens - stats.steps > 0
    assert set(stats.offered) <= {"ngram", "suffix", "recycling"} and max(stats.fed_tokens) <= config.step_tokens()
