"""What one sweep trial measures, with the benchmark harness (experiments/harness.py).

Glossary:
    sweep prompts    a fixed, seeded sample (``limit`` per category) that every trial decodes, run
                     shortest first so that pruning decides after the cheap prompts.
    held-out prompts a second seeded sample that excludes the sweep prompts; only the best config
                     meets them, interleaved with plain greedy (a best-of-N on a noisy machine is
                     partly luck: the held-out speedup is the number to report).
    baseline         plain greedy ``generate`` on each sweep prompt, timed in the same process once
                     at the start of a run and once at the end (their ratio is the drift: how much
                     the machine's speed moved while the trials ran). Its outputs are the reference
                     every trial's outputs are compared with.
    near-tie         an output that first differs from the baseline's where the plain forward's two
                     best logits are closer than ``tie_tolerance`` (batched and one-token forwards
                     may round such a tie either way); kept feasible, counted apart.
    mismatch         any other difference: the trial is infeasible (``trial.set_constraint``) and
                     stops at once.

Example (6 prompts, 64 new tokens each, baseline 10 s in all): a trial decodes the 384 tokens in
8 s -> tokens_per_second = 48, speedup = the median over prompts of baseline wall / trial wall
(~1.25), tokens_per_step = accepted tokens pooled over all decoding steps: the overall row of
``harness.summarize``, the same aggregation as the bench's tables.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from experiments import datasets
from experiments.harness import (
    BASELINE, OVERALL, GreedyMethod, LookaheadMethod, PromptInput, Record, dump_config, measure, run_interleaved,
    summarize, warm_up,
)
from experiments.runinfo import loadavg
from experiments.sweep_space import SweepSpec
from framework.config import LookaheadConfig


# --------------------------------------------------------------------------------------------
# Prompts


def sweep_prompts(spec: SweepSpec, tokenizer) -> list[PromptInput]:
    """The trial prompts: ``limit`` per category, seeded, shortest first."""
    prompts = datasets.load_dataset(spec.dataset, limit_per_category=spec.limit, seed=spec.seed)
    inputs = [PromptInput(p.id, p.category, datasets.encode(tokenizer, p, 0)) for p in prompts]
    return sorted(inputs, key=lambda item: item.input_ids.shape[1])


def heldout_prompts(spec: SweepSpec, tokenizer, exclude: set[str]) -> list[PromptInput]:
    """``heldout.limit`` per category from a sample seeded by ``heldout.seed``, never one of ``exclude``."""
    limit = spec.heldout.limit + (spec.limit or 0)
    sample = datasets.load_dataset(spec.dataset, limit_per_category=limit, seed=spec.heldout.seed)
    kept: list[datasets.Prompt] = []
    for prompt in sample:
        if prompt.id not in exclude and sum(p.category == prompt.category for p in kept) < spec.heldout.limit:
            kept.append(prompt)
    return [PromptInput(p.id, p.category, datasets.encode(tokenizer, p, 0)) for p in kept]


# --------------------------------------------------------------------------------------------
# The baseline


@dataclass
class Baseline:
    """Plain greedy on each sweep prompt, timed once: outputs and wall times by prompt id."""

    records: dict[str, Record]

    @property
    def tokens_per_second(self) -> float:
        seconds = sum(r.wall_seconds for r in self.records.values())
        return sum(r.new_tokens for r in self.records.values()) / seconds if seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"tokens_per_second": self.tokens_per_second,
                "wall_seconds": {pid: r.wall_seconds for pid, r in self.records.items()}}


def time_baseline(model, prompts: Sequence[PromptInput], max_new_tokens: int, warmup_tokens: int = 0) -> Baseline:
    """Plain greedy on every prompt, after ``warmup_tokens`` unrecorded tokens on the first."""
    methods = [GreedyMethod()]
    if warmup_tokens and prompts:
        warm_up(model, methods, prompts[0].input_ids, warmup_tokens)
    records = run_interleaved(model, methods, prompts, max_new_tokens, warmup=0)
    return Baseline({r.prompt_id: r for r in records})


def drift(start: Baseline, end: Baseline) -> dict[str, float]:
    """How the machine's speed moved during the trials: the median over prompts of end/start
    wall time (1.10 = greedy got 10% slower), and greedy's tokens/s at both ends."""
    ratios = [end.records[p].wall_seconds / r.wall_seconds for p, r in start.records.items()
              if p in end.records and r.wall_seconds > 0]
    return {"wall_ratio": statistics.median(ratios) if ratios else float("nan"),
            "tokens_per_second_start": start.tokens_per_second, "tokens_per_second_end": end.tokens_per_second}


# --------------------------------------------------------------------------------------------
# One trial


@dataclass
class TrialRecords:
    """The records of one config on the sweep prompts (fewer if it stopped early)."""

    records: list[Record] = field(default_factory=list)
    near_ties: dict[str, float] = field(default_factory=dict)  # prompt id -> top-2 logit gap
    mismatches: dict[str, int] = field(default_factory=dict)  # prompt id -> first differing index

    def metrics(self, baseline: Baseline) -> dict[str, float]:
        """The trial's overall row of ``harness.summarize`` (tokens/s, speedup vs the baseline,
        tokens/step, peak memory) and the output checks."""
        rows = summarize(self.records + list(baseline.records.values()))
        row = next((r for r in rows if r.category == OVERALL and r.method != BASELINE), None)
        return {
            "tokens_per_second": row.tokens_per_second if row else 0.0,
            "speedup": (row.speedup or 0.0) if row else 0.0,
            "tokens_per_step": row.tokens_per_step if row else 0.0,
            "peak_memory_mb": (row.peak_memory_mb or 0.0) if row else 0.0,
            "prompts": len(self.records), "new_tokens": sum(r.new_tokens for r in self.records),
            "wall_seconds": sum(r.wall_seconds for r in self.records),
            "identical": sum(bool(r.identical) for r in self.records),
            "near_ties": len(self.near_ties), "mismatches": len(self.mismatches),
        }

    def per_prompt(self, baseline: Baseline) -> list[dict[str, Any]]:
        return [{"prompt_id": r.prompt_id, "category": r.category, "new_tokens": r.new_tokens,
                 "tokens_per_second": r.tokens_per_second, "tokens_per_step": r.tokens_per_step,
                 "speedup": baseline.records[r.prompt_id].wall_seconds / r.wall_seconds if r.wall_seconds else 0.0,
                 "identical": r.identical, "mismatch_at": r.mismatch_at} for r in self.records]


def measure_config(
    model,
    config: LookaheadConfig,
    prompts: Sequence[PromptInput],
    baseline: Baseline,
    spec: SweepSpec,
    *,
    name: str,
    after_prompt: Callable[[int, TrialRecords], None] | None = None,
) -> TrialRecords:
    """Decode every sweep prompt with ``config`` after a short warm-up, comparing each output with
    the baseline's. ``after_prompt(index, so_far)`` runs after each prompt (pruning raises there);
    a mismatch beyond a near-tie stops the trial."""
    method = LookaheadMethod(config, name=name, compile=spec.compile)
    if spec.warmup_tokens and prompts:
        warm_up(model, [method], prompts[0].input_ids, spec.warmup_tokens)
    done = TrialRecords()
    for index, prompt in enumerate(prompts):
        reference = baseline.records[prompt.prompt_id]
        record = measure(model, method, prompt.input_ids, spec.max_new_tokens, baseline_ids=reference.output_ids,
                         prompt_id=prompt.prompt_id, category=prompt.category)
        done.records.append(record)
        if not record.identical:
            _classify(model, prompt, reference, record, spec.tie_tolerance, done)
        if done.mismatches:
            break
        if after_prompt is not None:
            after_prompt(index, done)
    return done


def _classify(model, prompt: PromptInput, reference: Record, record: Record, tolerance: float,
              done: TrialRecords) -> None:
    at = record.mismatch_at if record.mismatch_at is not None else 0
    gap = top2_gap(model, prompt.input_ids, reference.output_ids or [], at)
    if gap is not None and gap < tolerance:
        done.near_ties[record.prompt_id] = gap
    else:
        done.mismatches[record.prompt_id] = at


@torch.inference_mode()
def top2_gap(model, input_ids: torch.Tensor, output: Sequence[int], at: int) -> float | None:
    """The gap between the two best next-token logits of a plain forward over the prompt and the
    baseline's first ``at`` new tokens; None where the outputs differ only in length."""
    if at >= len(output):
        return None
    prefix = torch.cat([input_ids, torch.tensor([list(output[:at])], dtype=input_ids.dtype)], dim=1)  # [1, T + at]
    logits = model(prefix.to(model.device)).logits[0, -1].float()  # [V]
    top = logits.topk(2).values
    return float(top[0] - top[1])


# --------------------------------------------------------------------------------------------
# The held-out check


def measure_heldout(model, config: LookaheadConfig, prompts: Sequence[PromptInput], spec: SweepSpec,
                    name: str) -> dict[str, Any]:
    """The best config against plain greedy, interleaved per prompt (warm-up first), on held-out
    prompts: the overall and per-category rows of ``harness.summarize``."""
    methods = [GreedyMethod(), LookaheadMethod(config, name=name, compile=spec.compile)]
    if spec.warmup_tokens and prompts:
        warm_up(model, methods, prompts[0].input_ids, spec.warmup_tokens)
    records = run_interleaved(model, methods, prompts, spec.max_new_tokens, warmup=0, repeats=spec.heldout.repeats)
    rows = summarize(records)
    overall = {row.method: row for row in rows if row.category == OVERALL}
    best, greedy = overall.get(name), overall.get(BASELINE)
    return {
        "prompts": len(prompts),
        "speedup": best.speedup if best else None,
        "identical": best.identical if best else None,
        "tokens_per_step": best.tokens_per_step if best else None,
        "tokens_per_second": best.tokens_per_second if best else None,
        "greedy_tokens_per_second": greedy.tokens_per_second if greedy else None,
        "by_category": {row.category: row.speedup for row in rows if row.method == name and row.category != OVERALL},
        "loadavg": loadavg(),
        "config": dump_config(config),
    }
