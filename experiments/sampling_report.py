"""Acceptance and speed of lookahead decoding under sampling, next to greedy, on Spec-Bench prompts.

    python -m experiments.sampling_report --limit 1 --max-new-tokens 64 --threads 1

For every prompt (``--limit`` per Spec-Bench category, seeded sample) and every setting below,
the lookahead engine and plain ``model.generate`` decode the prompt with the same settings, one
right after the other (the order alternates from prompt to prompt), after a warm-up, so both
see the same machine load. Settings:

    greedy        do_sample=False
    T=0.7 p=0.9   do_sample=True, temperature=0.7, top_p=0.9 (top_k: HF's default 50)
    T=1.0         do_sample=True, temperature=1.0, top_k=0, top_p=1.0: the model's full law

Columns: ``tokens/step`` is the lookahead engine's new tokens over its decoding steps (mean
tokens committed per forward pass: accepted draft tokens + 1); ``tok/s`` is new tokens over wall
time (prefill included) for each method; ``speedup`` is the ratio of the two tok/s (under
sampling the two methods draw different texts, of different lengths when EOS comes first, so
rates are compared, not times). ``same`` counts prompts whose greedy output equals plain
greedy's (expected: all). A second table gives tokens/step per category.

Sampling seeds: the engine gets ``torch.Generator().manual_seed(seed)`` and plain generate
``torch.manual_seed(seed)`` with ``seed = --seed + prompt index``; the two never draw the same
tokens (only the same law), see docs/sampling.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from experiments import datasets
from experiments.cli import (
    add_config_arguments, add_model_arguments, command_line, int_at_least, load_model_from_args, run_command,
    set_threads, single_config,
)
from framework import LookaheadConfig, LookaheadEngine
from framework.models import DEFAULT_MODEL
from framework.processors import eos_token_ids

SETTINGS: dict[str, dict[str, Any]] = {
    "greedy": {"do_sample": False},
    "T=0.7 p=0.9": {"do_sample": True, "temperature": 0.7, "top_p": 0.9},
    "T=1.0": {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0},
}


@dataclass
class Totals:
    """Sums over prompts for one setting (or one setting and category)."""

    prompts: int = 0
    lookahead_tokens: int = 0
    lookahead_steps: int = 0
    lookahead_seconds: float = 0.0
    plain_tokens: int = 0
    plain_seconds: float = 0.0
    same: int = 0  # greedy only: outputs equal to plain greedy's
    per_prompt: list[float] = field(default_factory=list)  # tokens/step of each prompt

    @property
    def tokens_per_step(self) -> float:
        return self.lookahead_tokens / self.lookahead_steps if self.lookahead_steps else float("nan")

    @property
    def lookahead_rate(self) -> float:
        return self.lookahead_tokens / self.lookahead_seconds if self.lookahead_seconds else float("nan")

    @property
    def plain_rate(self) -> float:
        return self.plain_tokens / self.plain_seconds if self.plain_seconds else float("nan")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.sampling_report", description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int_at_least(1), default=1, help="Spec-Bench prompts per category")
    parser.add_argument("--max-new-tokens", type=int_at_least(1), default=64)
    parser.add_argument("--seed", type=int, default=0, help="prompt sample and sampling seeds")
    add_model_arguments(parser)
    add_config_arguments(parser)
    return parser


def lookahead_run(engine, input_ids, max_new_tokens, eos, settings, seed) -> tuple[torch.Tensor, int, int, float]:
    generator = torch.Generator().manual_seed(seed) if settings["do_sample"] else None
    out = engine.generate(input_ids, max_new_tokens=max_new_tokens, eos_token_id=eos, generator=generator, **settings)
    return out.sequences, out.stats.new_tokens, out.stats.steps, out.stats.wall_seconds


@torch.inference_mode()
def plain_run(model, input_ids, max_new_tokens, eos, settings, seed) -> tuple[torch.Tensor, int, float]:
    if settings["do_sample"]:
        torch.manual_seed(seed)  # HF samples from the global RNG
    start = time.perf_counter()
    sequences = model.generate(
        input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens, min_new_tokens=0,
        eos_token_id=eos, num_beams=1, **settings,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    return sequences, sequences.shape[1] - input_ids.shape[1], seconds


def measure(model, tokenizer, prompts, config: LookaheadConfig, max_new_tokens: int, seed: int,
            compile: bool = False):
    """Totals per setting and per (setting, category)."""
    eos = eos_token_ids(model.generation_config)
    engine = LookaheadEngine(model, config, compile=compile)
    # warm-up: both methods once on the first prompt (first-call costs, weights paging in)
    warm = datasets.encode(tokenizer, prompts[0]).to(model.device)
    lookahead_run(engine, warm, 8, eos, SETTINGS["T=1.0"], seed)
    plain_run(model, warm, 8, eos, SETTINGS["T=1.0"], seed)
    overall: dict[str, Totals] = defaultdict(Totals)
    by_category: dict[tuple[str, str], Totals] = defaultdict(Totals)
    for index, prompt in enumerate(prompts):
        input_ids = datasets.encode(tokenizer, prompt).to(model.device)
        for name, settings in SETTINGS.items():
            run_seed = seed + index
            plain_first = index % 2 == 1
            if plain_first:
                plain = plain_run(model, input_ids, max_new_tokens, eos, settings, run_seed)
            look = lookahead_run(engine, input_ids, max_new_tokens, eos, settings, run_seed)
            if not plain_first:
                plain = plain_run(model, input_ids, max_new_tokens, eos, settings, run_seed)
            for totals in (overall[name], by_category[name, prompt.category]):
                totals.prompts += 1
                totals.lookahead_tokens += look[1]
                totals.lookahead_steps += look[2]
                totals.lookahead_seconds += look[3]
                totals.plain_tokens += plain[1]
                totals.plain_seconds += plain[2]
                totals.per_prompt.append(look[1] / look[2] if look[2] else float("nan"))
                if not settings["do_sample"]:
                    totals.same += int(torch.equal(look[0].cpu(), plain[0].cpu()))
            print(
                f"[{index + 1}/{len(prompts)}] {prompt.category:<26} {name:<12} "
                f"tokens/step={look[1] / max(look[2], 1):.2f} lookahead {look[1]} tok {look[3]:.2f}s | "
                f"plain {plain[1]} tok {plain[2]:.2f}s",
                file=sys.stderr, flush=True,
            )  # fmt: skip
    return overall, by_category


def render(overall, by_category, categories: list[str]) -> str:
    lines = [
        "| setting | prompts | new tokens (lookahead / plain) | tokens/step | lookahead tok/s | plain tok/s "
        "| speedup | same as plain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, settings in SETTINGS.items():
        t = overall[name]
        same = f"{t.same}/{t.prompts}" if not settings["do_sample"] else "n/a (sampling)"
        lines.append(
            f"| {name} | {t.prompts} | {t.lookahead_tokens} / {t.plain_tokens} | {t.tokens_per_step:.2f} "
            f"| {t.lookahead_rate:.1f} | {t.plain_rate:.1f} | {t.lookahead_rate / t.plain_rate:.2f}x | {same} |"
        )
    lines += ["", "tokens/step by category:", "", "| category | " + " | ".join(SETTINGS) + " |"]
    lines.append("| --- |" + " --- |" * len(SETTINGS))
    for category in categories:
        cells = [f"{by_category[name, category].tokens_per_step:.2f}" for name in SETTINGS]
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, report)


def report(args: argparse.Namespace) -> int:
    config = single_config(args)
    threads = set_threads(args.threads)
    prompts = datasets.load_dataset("spec_bench", limit_per_category=args.limit, seed=args.seed)
    model, tokenizer = load_model_from_args(args)
    print(
        f"[{args.model or DEFAULT_MODEL}] W={config.window} N={config.ngram} G={config.guess_set} | {len(prompts)} "
        f"prompts, max_new_tokens={args.max_new_tokens}, {threads}, device={model.device}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    overall, by_category = measure(model, tokenizer, prompts, config, args.max_new_tokens, args.seed, args.compile)
    categories = list(dict.fromkeys(p.category for p in prompts))
    print(render(overall, by_category, categories))
    print(f"\n({time.perf_counter() - start:.0f} s; command: {command_line('python -m experiments.sampling_report', args.argv)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
