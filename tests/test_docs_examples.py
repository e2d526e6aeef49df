"""docs/strategies.md's example is real code: it is imported from docs/examples/, shown verbatim
in the doc, registered, validated by the config and run through the engine."""

import importlib.util
from pathlib import Path

import torch

from framework import LookaheadConfig, LookaheadEngine
from tests.tiny_models import greedy_reference, tiny_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "pool_prompt_overlap.py"


def load_example():
    spec = importlib.util.spec_from_file_location("pool_prompt_overlap", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_strategies_doc_shows_the_example_verbatim():
    doc = (ROOT / "docs" / "strategies.md").read_text()
    assert EXAMPLE.read_text().strip() in doc


def test_example_pool_runs_through_the_engine_and_evicts_by_prompt_overlap():
    module = load_example()
    config = LookaheadConfig(window=4, ngram=3, guess_set=3, pool={"name": "prompt_overlap", "min_overlap": 1})
    assert isinstance(config.pool, module.PromptOverlapPool.Params)
    model = tiny_model("llama")
    prompt = torch.tensor([[5, 6, 7, 8, 9] * 4 + [5, 6]])
    engine = LookaheadEngine(model, config)
    out = engine.generate(prompt, max_new_tokens=30)
    assert torch.equal(out.sequences, greedy_reference(model, prompt, 30))

    pool = engine.pool
    pool.reset()
    pool.begin([1, 2, 3])
    for draft in [(1, 2), (40, 41), (3, 50)]:
        pool.add(9, draft, "lookahead")
    pool.add(9, (60, 61), "lookahead")  # full (capacity = G = 3): (40, 41) shares nothing with the prompt
    assert set(pool.drafts_for(9)) == {(1, 2), (3, 50), (60, 61)}
    assert [d for d, _ in pool.offer(9, 3)][:2] == [(3, 50), (1, 2)]
