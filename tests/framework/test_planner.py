"""framework.planner: candidates from several sources -> one budgeted token tree."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from framework.layout import build_draft_tree, step_layout
from framework.planner import plan_tree
from strategies.base import Candidate


def cand(tokens, probs, source="s"):
    return Candidate(tuple(tokens), tuple(probs), tuple(range(1, len(tokens) + 1)), source)


def paths(tree) -> set[tuple[int, ...]]:
    """Every root-to-node token path of the tree."""
    out = set()
    for node in range(tree.size):
        path, n = [], node
        while n >= 0:
            path.append(tree.tokens[n])
            n = tree.parents[n]
        out.add(tuple(reversed(path)))
    return out


def test_the_docstring_example():
    tree = plan_tree([cand((5, 6), (0.8, 0.5)), cand((5, 9), (0.6, 0.6), "t")], budget=2)
    assert tree.tokens == (5, 6) and tree.parents == (-1, 0) and tree.sources == ("s", "s")


def test_without_a_budget_equal_candidates_give_the_trie_in_order():
    drafts = [(5, 6, 7), (5, 6, 9), (8, 1, 2)]
    tree = plan_tree([cand(d, (0.5, 0.5, 0.5)) for d in drafts], budget=None)
    reference = build_draft_tree(drafts)
    assert (tree.tokens, tree.parents) == (reference.tokens, reference.parents)
    assert torch.equal(tree.draft_nodes, reference.draft_nodes)


def test_shared_prefix_keeps_the_best_value_and_its_source():
    tree = plan_tree([cand((5, 6), (0.2, 0.9), "low"), cand((5, 7), (0.9, 0.1), "high")], budget=None)
    assert tree.tokens == (5, 6, 7) and tree.sources == ("high", "low", "high")


def test_min_score_drops_unlikely_nodes_and_their_subtrees():
    tree = plan_tree([cand((1, 2, 3), (0.9, 0.3, 0.9)), cand((4,), (0.5,))], budget=None, min_score=0.4)
    assert paths(tree) == {(1,), (4,)}
    assert plan_tree([cand((1,), (0.1,))], budget=None, min_score=0.5).size == 0


def test_max_len_cuts_candidates_and_zero_budget_feeds_nothing():
    assert paths(plan_tree([cand((1, 2, 3), (1, 1, 1))], budget=None, max_len=2)) == {(1,), (1, 2)}
    assert plan_tree([cand((1, 2), (1, 1))], budget=0).size == 0


def test_leaf_paths_of_different_lengths_are_padded():
    tree = plan_tree([cand((1, 2, 3), (1, 1, 1)), cand((4,), (1,))], budget=None)
    assert tree.draft_nodes.tolist() == [[0, 1, 2], [3, -1, -1]]
    assert step_layout(0, 0, tree.parents).depths[1:].tolist() == [1, 2, 3, 1]


CANDIDATES = st.lists(
    st.integers(1, 6).flatmap(lambda n: st.tuples(
        st.lists(st.integers(0, 4), min_size=n, max_size=n), st.lists(st.floats(0, 1), min_size=n, max_size=n))),
    max_size=8,
)


@given(CANDIDATES, st.none() | st.integers(0, 30), st.sampled_from([0.0, 0.3]))
def test_the_plan_is_a_tree_of_the_best_nodes_within_budget(raw, budget, min_score):
    candidates = [cand(t, p) for t, p in raw]
    tree = plan_tree(candidates, budget, min_score)
    assert budget is None or tree.size <= budget
    assert all(p < n for n, p in enumerate(tree.parents))  # parents first: a tree
    assert len(paths(tree)) == tree.size  # shared prefixes fed once
    every = {tuple(t[: d + 1]) for t, _ in raw for d in range(len(t))}
    assert paths(tree) <= every  # only proposed continuations
    if budget is None and min_score == 0.0:
        assert paths(tree) == every
