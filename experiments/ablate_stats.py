"""Uncertainty over prompts for ablation tables: bootstrap intervals, paired tests, log-linear fits.

Tokens per step is deterministic for greedy decoding of one prompt, so what varies is which
prompts were drawn: every interval here resamples prompts (with replacement, seeded), and every
comparison between two arms pairs them prompt by prompt.

Glossary:
    cell       one arm's records over the prompts: per prompt the tokens it accepted over all
               its decoding steps (``accepted``, the numerator) and the steps (``steps``).
    statistic  tokens per step pooled over the cell's prompts: sum(accepted) / sum(steps), the
               rule of ``harness.summarize`` (so a table's point estimate is summarize's number).
    resample   one bootstrap draw: P prompt indices drawn with replacement (the same indices for
               every arm of a resample, so differences and fits are paired).

Example: two prompts with accepted [30, 10] over steps [10, 10] give 40 / 20 = 2.0 tokens per step;
a resample [0, 0] gives 3.0, [1, 1] gives 1.0, [0, 1] gives 2.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def format(self, pattern: str = "{:.2f}") -> str:
        return f"{pattern.format(self.value)} [{pattern.format(self.low)}, {pattern.format(self.high)}]"


def resample_indices(prompts: int, seed: int, resamples: int = RESAMPLES) -> np.ndarray:  # [B, P]
    """Bootstrap draws of prompt indices, seeded (one generator per call: reproducible)."""
    return np.random.default_rng(seed).integers(0, prompts, size=(resamples, prompts))


def pooled_ratio(accepted: np.ndarray, steps: np.ndarray, draws: np.ndarray) -> np.ndarray:  # [B]
    """sum(accepted) / sum(steps) over each draw's prompts: ``accepted, steps # [P]``, ``draws # [B, P]``."""
    steps_sum = steps[draws].sum(axis=1)  # [B]
    return np.divide(accepted[draws].sum(axis=1), steps_sum, out=np.zeros(len(draws)), where=steps_sum > 0)


def percentile_interval(point: float, samples: np.ndarray, level: float = LEVEL) -> Interval:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(point), float(low), float(high))


def ratio_interval(accepted: Sequence[float], steps: Sequence[float], draws: np.ndarray) -> Interval:
    """The pooled tokens per step of one cell with its bootstrap interval."""
    accepted, steps = np.asarray(accepted, float), np.asarray(steps, float)
    point = accepted.sum() / steps.sum() if steps.sum() > 0 else 0.0
    return percentile_interval(point, pooled_ratio(accepted, steps, draws))


def difference_interval(arm: tuple[Sequence[float], Sequence[float]], reference: tuple[Sequence[float], Sequence[float]],
                        draws: np.ndarray) -> Interval:
    """arm's pooled tokens per step minus the reference's, on the same prompts (paired bootstrap).
    Each argument is ``(accepted # [P], steps # [P])`` in the same prompt order."""
    (a_acc, a_steps), (r_acc, r_steps) = ([np.asarray(x, float) for x in pair] for pair in (arm, reference))
    point = a_acc.sum() / a_steps.sum() - r_acc.sum() / r_steps.sum()
    return percentile_interval(point, pooled_ratio(a_acc, a_steps, draws) - pooled_ratio(r_acc, r_steps, draws))


def wilcoxon_p(arm: Sequence[float], reference: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of per-prompt tokens per step, paired by prompt;
    1.0 when no prompt differs, None with fewer than two prompts."""
    from scipy.stats import wilcoxon

    differences = np.asarray(arm, float) - np.asarray(reference, float)
    if len(differences) < 2:
        return None
    if not np.any(np.abs(differences) > 1e-12):
        return 1.0
    return float(wilcoxon(differences, zero_method="wilcox").pvalue)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None): the family-wise error stays at the
    level however many arms are compared with the reference."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, index) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))  # monotone in rank
        adjusted[index] = running
    return adjusted


# --------------------------------------------------------------------------------------------
# Log-linear fits: tokens per step = a + b * log2(x)


@dataclass(frozen=True)
class Fit:
    """``y = intercept + slope * log2(x)``; ``slope``: the gain per doubling of x."""

    intercept: float
    slope: Interval
    r2: float
    points: int


def log2_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least squares of ``ys`` on ``log2(xs)``: (intercept, slope, R²); R² is nan for flat ys,
    slope and R² are nan when every x is the same."""
    u, y = np.log2(np.asarray(xs, float)), np.asarray(ys, float)
    centred = u - u.mean()
    spread = float(centred @ centred)
    if spread == 0:
        return float(y.mean()), math.nan, math.nan
    slope = float(centred @ (y - y.mean())) / spread
    intercept = float(y.mean() - slope * u.mean())
    residual = float(((y - (intercept + slope * u)) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return intercept, slope, (1 - residual / total) if total > 0 else math.nan


def slopes(xs: Sequence[float], samples: np.ndarray) -> np.ndarray:  # [B]
    """The least-squares slope on log2(xs) of every row of ``samples # [B, k]``, vectorised."""
    u = np.log2(np.asarray(xs, float))
    centred = u - u.mean()  # [k]
    return (samples - samples.mean(axis=1, keepdims=True)) @ centred / (centred @ centred)


def fit_with_interval(xs: Sequence[float], cells: Sequence[tuple[Sequence[float], Sequence[float]]],
                      draws: np.ndarray) -> Fit:
    """Fit pooled tokens per step of ``cells`` (one ``(accepted, steps)`` per x, same prompt order)
    on log2(xs); the slope's interval comes from refitting every bootstrap resample."""
    arrays = [(np.asarray(a, float), np.asarray(s, float)) for a, s in cells]
    ys = [a.sum() / s.sum() if s.sum() > 0 else 0.0 for a, s in arrays]
    intercept, slope, r2 = log2_fit(xs, ys)
    samples = np.stack([pooled_ratio(a, s, draws) for a, s in arrays], axis=1)  # [B, k]
    return Fit(intercept, percentile_interval(slope, slopes(xs, samples)), r2, len(xs))
