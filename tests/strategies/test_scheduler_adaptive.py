"""The adaptive scheduler: the budget rule against hand-computed rates, the window's gain, the
exploration draw, and exactness of decoding under it (greedy here; the sampling law in
tests/framework/test_sampling_e2e.py)."""

from __future__ import annotations

import pytest
import torch

from framework import LookaheadConfig, LookaheadEngine
from framework.costs import CostModel
from strategies.base import SOURCE_LOOKAHEAD, SOURCE_NONE, StepRecord, parse_params
from strategies.scheduler_adaptive import AdaptiveScheduler, best_budget
from tests.tiny_models import ARCHITECTURES, greedy_reference, tiny_model

CPU = CostModel({1: 1.0, 2: 1.4, 8: 1.5, 64: 4.0})  # eager on a 2-core CPU, roughly
GPU = CostModel({1: 1.0, 512: 1.0})  # flat up to hundreds of tokens


def scheduler(window: int = 0, **params) -> AdaptiveScheduler:
    s = AdaptiveScheduler(parse_params("scheduler", {"name": "adaptive", **params}), window=window)
    s.reset()
    return s


def window_tokens(width: int) -> int:
    return width * 4


def test_best_budget_matches_the_docstring_example():
    costs = CostModel({1: 1.0, 2: 1.4, 8: 1.5})
    assert best_budget([0.9, 0.5, 0.1], costs) == (3, pytest.approx(2.5 / 1.5))


@pytest.mark.parametrize("values, costs, budget", [
    ([], CPU, 0),
    ([0.2, 0.1], CPU, 0),  # 1.3 / 1.5 < 1: the root alone
    ([0.45, 0.2], CPU, 2),  # 1.65 / 1.5 > 1
    ([0.2, 0.1, 0.05], GPU, 3),  # free tokens: feed everything
    ([0.9] * 10 + [0.01] * 100, CPU, 7),  # the 8-token price covers 7 nodes; more pay the 64-token price
])
def test_best_budget(values, costs, budget):
    assert best_budget(values, costs)[0] == budget


def test_the_window_is_fed_where_tokens_are_free_and_not_where_they_cost():
    assert scheduler(window=15, explore=0).plan([], [0.5, 0.3], GPU, window_tokens) == (15, 2)
    assert scheduler(window=15, explore=0).plan([], [0.5, 0.3], CPU, window_tokens) == (0, 2)
    assert scheduler(window=0, explore=0).plan([], [0.5, 0.3], GPU, window_tokens) == (0, 2)


def test_the_window_gain_learns_from_window_steps_only():
    s = scheduler(window=4, window_decay=0.5, window_prior=1.0)
    history = [StepRecord(4, 2, 3, 4, SOURCE_LOOKAHEAD, 20), StepRecord(0, 2, 3, 4, SOURCE_LOOKAHEAD, 7),
               StepRecord(4, 2, 2, 3, "prompt", 20)]
    s.plan(history, [], GPU, window_tokens)
    # prior (1, 1) -> (0.5 + 3, 0.5 + 1) = (3.5, 1.5) -> skip the W=0 step -> (1.75 + 0, 0.75 + 1)
    assert s.window_gain == pytest.approx(1.75 / 1.75)
    s.plan(history, [], GPU, window_tokens)  # nothing new: no double counting
    assert s.window_gain == pytest.approx(1.0)


def test_exploration_feeds_the_best_tree_sometimes():
    never, always = scheduler(explore=0), scheduler(explore=1)
    assert never.plan([], [0.1], CPU, window_tokens) == (0, 0)
    assert always.plan([], [0.1], CPU, window_tokens) == (0, 1)
    assert always.plan([], [], CPU, window_tokens) == (0, 0)  # nothing to explore


def test_summary_reports_what_was_chosen():
    s = scheduler(window=0, explore=0)
    s.plan([], [0.9, 0.8], CPU, window_tokens)
    s.plan([StepRecord(0, 1, 2, 3, SOURCE_NONE, 3)], [0.1], CPU, window_tokens)
    assert s.summary() == {"mean_width": 0.0, "mean_budget": 1.0, "root_only_share": 0.5, "window_gain": 1.0}


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("costs", [CPU, GPU], ids=["cpu", "gpu"])
def test_decoding_under_the_adaptive_scheduler_is_exact(arch, costs):
    model = tiny_model(arch)
    config = LookaheadConfig(window=3, ngram=3, guess_set=3, scheduler="adaptive", sources=["ngram", "suffix"])
    engine = LookaheadEngine(model, config, cost_model=costs)
    prompt = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5, 6]])
    out = engine.generate(prompt, max_new_tokens=24)
    assert out.sequences.tolist() == greedy_reference(model, prompt, 24).tolist()
    assert out.stats.scheduler["mean_budget"] > 0
