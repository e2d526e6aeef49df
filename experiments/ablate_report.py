"""Tables, plots and W&B logs of an ablation run (``python -m experiments.ablate``).

One row per arm, over the prompts every arm finished (a killed run's report compares like with
like). Columns (docs/ablations.md):

    Tokens/step [95% CI]  accepted tokens per decoding step, pooled over the prompts (harness.summarize's
                          rule), with a bootstrap interval over prompts
    Δ vs ref [95% CI]     minus the reference arm's, paired by prompt (bootstrap)
    p (Holm)              Wilcoxon signed-rank over per-prompt tokens per step against the reference,
                          and in brackets Holm-adjusted over the arms; * when that is below 0.05
    Accepting steps       share of decoding steps that accepted at least one draft token
    Fed/step, GFLOP/step  tokens fed per decoding step; ~2 x parameters x fed tokens
    Speedup               only in timing mode: median over prompts of greedy's wall / the arm's
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from experiments import ablate_stats as stats
from experiments.bench import _pyplot, atomic_write
from experiments.cli import flatten
from experiments.harness import OVERALL, Record, Summary, config_label, summarize
from framework.config import LookaheadConfig

TABLE, BARS_PNG, SCALING_PNG = "table.md", "tokens_per_step.png", "scaling_law.png"
SIGNIFICANT = 0.05


@dataclass
class Cell:
    """One arm over the compared prompts, in the run's prompt order."""

    arm: Any  # ablate_suite.Arm
    records: list[Record]
    accepted: np.ndarray  # [P] tokens accepted over each prompt's decoding steps
    steps: np.ndarray  # [P]
    fed: np.ndarray  # [P] tokens fed by each prompt's decoding steps

    @property
    def per_prompt(self) -> np.ndarray:  # [P]
        return np.divide(self.accepted, self.steps, out=np.zeros_like(self.accepted), where=self.steps > 0)

    @property
    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        return self.accepted, self.steps

    @property
    def tokens_per_step(self) -> float:  # pooled over the prompts
        return float(self.accepted.sum() / self.steps.sum()) if self.steps.sum() else 0.0


@dataclass
class ArmRow:
    arm: Any
    label: str
    summary: Summary
    tokens_per_step: stats.Interval
    accepting_steps: float
    fed_per_step: float
    gflop_per_step: float | None
    delta: stats.Interval | None = None
    p: float | None = None
    p_holm: float | None = None


@dataclass
class Report:
    rows: list[ArmRow]
    categories: dict[tuple[str, str], float]  # (category, arm) -> tokens per step
    # per group: (its `by` value, the fit on log2(x), (intercept, slope, R²) on log2(fed tokens per step))
    fits: list[tuple[Any, stats.Fit, tuple[float, float, float]]] = field(default_factory=list)
    prompts: int = 0
    left_out: int = 0  # records of prompts not every arm finished


def cells(suite, records: Sequence[Record]) -> tuple[list[Cell], int]:
    """One cell per arm over the prompts every arm finished; also how many records were left out."""
    by_arm: dict[str, dict[tuple[str, int], Record]] = {arm.name: {} for arm in suite.arms}
    for record in records:
        if record.method in by_arm:
            by_arm[record.method][(record.prompt_id, record.turn)] = record
    order = list(dict.fromkeys((r.prompt_id, r.turn) for r in records))
    common = [key for key in order if all(key in done for done in by_arm.values())]
    result = []
    for arm in suite.arms:
        chosen = [by_arm[arm.name][key] for key in common]
        result.append(Cell(
            arm, chosen,
            accepted=np.array([sum(r.emitted_per_step) for r in chosen], float),
            steps=np.array([len(r.emitted_per_step) for r in chosen], float),
            fed=np.array([getattr(r, "decode_fed_tokens", 0) for r in chosen], float),
        ))
    kept = len(common) * len(suite.arms)
    return result, sum(len(done) for done in by_arm.values()) - kept


def build_report(suite, header: dict[str, Any], records: Sequence[Record], baseline: str) -> Report:
    """Every number of the report from the records (no model needed)."""
    arm_cells, left_out = cells(suite, records)
    prompts = len(arm_cells[0].records)
    draws = stats.resample_indices(max(prompts, 1), header.get("seed") or 0)
    compared = [r for cell in arm_cells for r in cell.records]
    keys = {(r.prompt_id, r.turn) for r in arm_cells[0].records}
    hidden = [] if baseline in {cell.arm.name for cell in arm_cells} else [  # the identity check's greedy run
        r for r in records if r.method == baseline and (r.prompt_id, r.turn) in keys]
    summaries = summarize(compared + hidden, baseline=baseline)
    overall = {s.method: s for s in summaries if s.category == OVERALL}
    parameters = header.get("parameters")
    rows = [arm_row(cell, overall[cell.arm.name], draws, parameters) for cell in arm_cells] if prompts else []
    if rows:
        compare_with_reference(rows, arm_cells, suite.reference, draws)
    categories = {(s.category, s.method): s.tokens_per_step for s in summaries if s.category != OVERALL}
    report = Report(rows, categories, prompts=prompts, left_out=left_out)
    if suite.scaling is not None and prompts:
        report.fits = scaling_fits(suite.scaling, arm_cells, draws)
    return report


def arm_row(cell: Cell, summary: Summary, draws: np.ndarray, parameters: int | None) -> ArmRow:
    steps = [a for r in cell.records for a in r.emitted_per_step]
    fed_per_step = cell.fed.sum() / cell.steps.sum() if cell.steps.sum() else 0.0
    return ArmRow(
        arm=cell.arm, label=arm_label(cell.arm), summary=summary,
        tokens_per_step=stats.ratio_interval(cell.accepted, cell.steps, draws),
        accepting_steps=sum(a > 1 for a in steps) / len(steps) if steps else 0.0,
        fed_per_step=float(fed_per_step),
        gflop_per_step=2 * parameters * fed_per_step / 1e9 if parameters else None,
    )


def compare_with_reference(rows: list[ArmRow], arm_cells: list[Cell], reference: str, draws: np.ndarray) -> None:
    """Δ and Wilcoxon p of every arm against the reference; Holm over the arms compared."""
    base = next(cell for cell in arm_cells if cell.arm.name == reference)
    for row, cell in zip(rows, arm_cells):
        if cell is not base:
            row.delta = stats.difference_interval(cell.pair, base.pair, draws)
            row.p = stats.wilcoxon_p(cell.per_prompt, base.per_prompt)
    for row, adjusted in zip(rows, stats.holm([row.p for row in rows])):
        row.p_holm = adjusted


def scaling_fits(scaling, arm_cells: list[Cell], draws: np.ndarray):
    """Per value of ``scaling.by``: tokens per step on log2(x) (with the slope's interval), and on
    log2(fed tokens per step), the paper's FLOPs axis."""
    groups: dict[Any, list[tuple[float, Cell]]] = {}
    for cell in arm_cells:
        if cell.arm.method == "lookahead":
            values = flatten(cell.arm.config)
            groups.setdefault(values[scaling.by], []).append((values[scaling.x], cell))
    fits = []
    for group, members in sorted(groups.items()):
        members.sort(key=lambda item: item[0])
        xs = [x for x, _ in members]
        if len(set(xs)) < 2:
            continue
        fit = stats.fit_with_interval(xs, [cell.pair for _, cell in members], draws)
        fed = [cell.fed.sum() / cell.steps.sum() for _, cell in members]
        fits.append((group, fit, stats.log2_fit(fed, [cell.tokens_per_step for _, cell in members])))
    return fits


def arm_label(arm) -> str:
    """What the arm runs, in a few words: ``W=15 N=5 G=15``, ``pld(10, 2)``, ``... T=0.7 top_p=0.9``."""
    if arm.method == "greedy":
        return "plain greedy generate"
    if arm.method == "pld":
        pld = arm.pld
        return f"HF prompt lookup ({pld.num_tokens if pld else 10} tokens, {pld.max_ngram_size if pld else 2}-gram)"
    label = config_label(LookaheadConfig.model_validate(arm.config))
    if arm.sampling is not None:
        s = arm.sampling
        label += f" T={s.temperature:g}" + (f" top_k={s.top_k}" if s.top_k else "") + (
            f" top_p={s.top_p:g}" if s.top_p < 1 else "") + (f" min_p={s.min_p:g}" if s.min_p else "")
    return label


# --------------------------------------------------------------------------------------------
# Markdown


def _num(value: float | None, pattern: str = "{:.2f}") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def _p(row: ArmRow) -> str:
    """``0.031 (0.188)``: the Wilcoxon p, then Holm's; * when Holm's is below SIGNIFICANT."""
    if row.p is None or row.p_holm is None:
        return "n/a"
    return f"{row.p:.3f} ({row.p_holm:.3f})" + ("*" if row.p_holm < SIGNIFICANT else "")


def arms_table(report: Report, timing: bool) -> str:
    paper = any(row.arm.paper for row in report.rows)
    head = ["Arm", "What", "Tokens/step [95% CI]", "Δ vs ref [95% CI]", "p (Holm)", "Tokens/forward",
            "Accepting steps", "Fed/step", "GFLOP/step", "Peak MB", "Identical"]
    head += ["Speedup"] if timing else []
    head += ["Paper S", "Paper speedup"] if paper else []
    lines = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for row in report.rows:
        s = row.summary
        delta = row.delta.format("{:+.2f}") if row.delta else "(reference)"
        cells = [row.arm.name, row.label, row.tokens_per_step.format(), delta,
                 _p(row) if row.delta else "", f"{s.tokens_per_forward:.2f}", f"{100 * row.accepting_steps:.0f}%",
                 f"{row.fed_per_step:.1f}", _num(row.gflop_per_step), _num(s.peak_memory_mb, "{:.0f}"),
                 _num(None if s.identical is None else 100 * s.identical, "{:.0f}%")]
        cells += [_num(s.speedup, "{:.2f}x")] if timing else []
        if paper:
            numbers = row.arm.paper
            cells += [_num(numbers and numbers.tokens_per_step), _num(numbers and numbers.speedup, "{:.2f}x")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def category_table(report: Report) -> str:
    categories = list(dict.fromkeys(category for category, _ in report.categories))
    lines = ["| Arm | " + " | ".join(categories) + " |", "| --- |" + " ---: |" * len(categories)]
    for row in report.rows:
        values = [_num(report.categories.get((c, row.arm.name))) for c in categories]
        lines.append(f"| {row.arm.name} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def fits_table(report: Report, scaling) -> str:
    lines = [f"| {scaling.by} | Arms | a | b: tokens/step per doubling of {scaling.x} [95% CI] | R² "
             f"| per doubling of fed tokens/step | R² (fed) |", "| ---: |" + " ---: |" * 6]
    for group, fit, (_, fed_slope, fed_r2) in report.fits:
        lines.append(f"| {group} | {fit.points} | {fit.intercept:.2f} | {fit.slope.format('{:+.3f}')} | "
                     f"{_num(fit.r2, '{:.3f}')} | {_num(fed_slope, '{:+.3f}')} | {_num(fed_r2, '{:.3f}')} |")
    return "\n".join(lines)


def title(suite, header: dict[str, Any], report: Report) -> str:
    load, threads = header.get("loadavg"), header.get("torch_threads")
    mode = "timing" if header.get("mode") == "timing" else "steps only (no wall-time columns)"
    text = (f"## Suite `{suite.name}`: {suite.description}\n\n"
            f"{header.get('dataset')} ({report.prompts} prompts every arm finished), {header.get('model')}, "
            f"{header.get('dtype')}, {header.get('max_new_tokens')} new tokens, {header.get('device_name')} "
            f"({header.get('device')}, {threads} thread{'' if threads == 1 else 's'}, load {load[0] if load else 'n/a'}), "
            f"{mode}, {header.get('date')}, git {header.get('git')}\n\n`{header.get('command')}`")
    if report.left_out:
        text += f"\n\n({report.left_out} records of prompts that not every arm finished are left out.)"
    return text


def markdown(suite, header: dict[str, Any], report: Report) -> str:
    timing = header.get("mode") == "timing"
    parts = [title(suite, header, report), arms_table(report, timing),
             f"Reference arm: `{suite.reference}`. Intervals: 95% bootstrap over prompts ({stats.RESAMPLES} "
             f"resamples, seed {header.get('seed') or 0}); p: two-sided Wilcoxon signed-rank on per-prompt tokens "
             f"per step against the reference, then (in brackets) Holm-adjusted over the arms, * < {SIGNIFICANT} "
             f"(with P prompts the smallest exact p is 2/2^P).",
             "Tokens per step by category:", category_table(report)]
    if report.fits:
        parts += [f"Fit: tokens/step = a + b log2({suite.scaling.x}), one line per {suite.scaling.by}:",
                  fits_table(report, suite.scaling)]
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# Plots


def plot_bars(report: Report, reference: str, path: Path) -> None:
    """Tokens per step of every arm with its 95% interval (and the paper's number where given)."""
    plt = _pyplot()
    rows = report.rows
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.32 * len(rows)))
    y = np.arange(len(rows))[::-1]
    values = [row.tokens_per_step.value for row in rows]
    errors = [[v - row.tokens_per_step.low for v, row in zip(values, rows)],
              [row.tokens_per_step.high - v for v, row in zip(values, rows)]]
    colors = ["tab:orange" if row.arm.name == reference else "tab:blue" for row in rows]
    ax.barh(y, values, xerr=errors, color=colors, capsize=3)
    paper = [(yy, row.arm.paper.tokens_per_step) for yy, row in zip(y, rows)
             if row.arm.paper and row.arm.paper.tokens_per_step]
    if paper:
        ax.scatter([p for _, p in paper], [yy for yy, _ in paper], marker="D", color="black", zorder=3,
                   label="paper (LLaMA-2-7B-chat)")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(y, [row.arm.name for row in rows], fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel(f"tokens per step (95% bootstrap CI over {report.prompts} prompts; orange: reference)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scaling(report: Report, arm_cells_by_group, scaling, path: Path) -> None:
    """Left: tokens per step over log2(x) with the fitted lines; right: over log2(fed tokens/step)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, ((group, fit, _), members) in enumerate(zip(report.fits, arm_cells_by_group)):
        xs = np.log2([x for x, _ in members])
        ys = [row.tokens_per_step for _, row in members]
        errors = [[r.value - r.low for r in ys], [r.high - r.value for r in ys]]
        dodge = 0.08 * (index - (len(report.fits) - 1) / 2)  # side by side: the intervals overlap
        line = left.errorbar(xs + dodge, [r.value for r in ys], yerr=errors, fmt="o", capsize=3,
                             label=f"{scaling.by}={group}: b={fit.slope.value:+.3f}/doubling, R²={fit.r2:.2f}")
        left.plot(xs, fit.intercept + fit.slope.value * xs, color=line[0].get_color(), linewidth=1)
        fed = np.log2([row.fed_per_step for _, row in members])
        right.errorbar(fed, [r.value for r in ys], yerr=errors, fmt="o-", capsize=3, color=line[0].get_color(),
                       label=f"{scaling.by}={group}")
    values = sorted({x for members in arm_cells_by_group for x, _ in members})
    left.set_xticks(np.log2(values), [f"{x:g}" for x in values])
    left.set_xlabel(f"{scaling.x} (log2 scale)")
    right.set_xlabel("log2(tokens fed per step)  (FLOPs per step ~ 2 x parameters x fed)")
    for ax in (left, right):
        ax.set_ylabel("tokens per step (95% CI)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def scaling_members(report: Report, scaling) -> list[list[tuple[float, ArmRow]]]:
    """The rows of each fitted group, ordered by x (the plot's points)."""
    groups: dict[Any, list[tuple[float, ArmRow]]] = {}
    for row in report.rows:
        if row.arm.method == "lookahead":
            values = flatten(row.arm.config)
            groups.setdefault(values[scaling.by], []).append((values[scaling.x], row))
    return [sorted(groups[group], key=lambda item: item[0]) for group, _, _ in report.fits]


def write_report(out: Path, suite, header: dict[str, Any], records: Sequence[Record], baseline: str,
                 plots: bool = True) -> tuple[str, Report]:
    """table.md and the PNGs; returns the markdown and the numbers."""
    report = build_report(suite, header, records, baseline)
    text = markdown(suite, header, report)
    atomic_write(out / TABLE, lambda path: path.write_text(text))
    if plots and report.rows:
        atomic_write(out / BARS_PNG, lambda path: plot_bars(report, suite.reference, path))
        if report.fits:
            members = scaling_members(report, suite.scaling)
            atomic_write(out / SCALING_PNG, lambda path: plot_scaling(report, members, suite.scaling, path))
    return text, report


# --------------------------------------------------------------------------------------------
# Weights & Biases


def log_wandb(project: str, suite, header: dict[str, Any], records: Sequence[Record], report: Report, out: Path) -> None:
    """One W&B run: the rows and records as tables, the plots, tokens per step per arm in the summary."""
    from experiments.wandb_log import WandbLogger

    logger = WandbLogger(project, f"ablate-{suite.name}-{header['device']}", out,
                         tags=[header["device"], header["dataset"], suite.name], config=header)
    run = logger.run(out.name, "ablate")
    rows = [{"arm": row.arm.name, "what": row.label, "tokens_per_step": row.tokens_per_step.value,
             "ci_low": row.tokens_per_step.low, "ci_high": row.tokens_per_step.high, "p_holm": row.p_holm,
             "fed_per_step": row.fed_per_step, "accepting_steps": row.accepting_steps} for row in report.rows]
    run.log({"arms": logger.table(rows), "records": logger.table([r.to_json(with_outputs=False) for r in records]),
             **logger.images([out / BARS_PNG, out / SCALING_PNG])})
    run.summary.update({f"{row.arm.name}/tokens_per_step": row.tokens_per_step.value for row in report.rows})
    logger.finish(run)
