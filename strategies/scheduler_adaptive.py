"""``adaptive``: every step, the window width and draft budget that maximise expected tokens per second.

A step that feeds k tokens costs ``cost(k)`` one-token forwards (the device's calibrated curve,
``framework.costs``) and commits, in expectation, one bonus token plus the sum of its tree
nodes' values (each node's estimated chance that verification reaches it: the product of its
source's running acceptance estimates along the path, ``framework.planner``). So with the nodes
ranked best first and ``S_b`` the sum of the best ``b`` values, feeding ``b`` nodes is worth

    rate(b) = (1 + S_b + window gain) / cost(1 + b + window tokens)

and the scheduler feeds the ``b`` (0 allowed: the root alone, a plain step) and the window width
(0 or the configured W) of the highest rate. The window's gain is a running estimate of the
draft tokens per step accepted from n-grams the window harvested, learnt while it is on and
started at ``window_prior``. On a 2-core CPU, where extra tokens cost real time, this feeds
small trees only when they pay; on a GPU, where they are free, it feeds everything.

With probability ``explore`` a step whose best choice is the root alone feeds its best tree
anyway, so the sources' estimates keep learning (an estimate nothing tests never recovers).
Exactness does not depend on any of this: every choice verifies against the model.

Example: values [0.9, 0.5, 0.1], cost {1: 1, 2: 1.4, 8: 1.5}: rate(0) = 1, rate(1) = 1.9/1.4 =
1.36, rate(2) = 2.4/1.5 = 1.6, rate(3) = 2.5/1.5 = 1.67 -> feed all three nodes.
"""

from __future__ import annotations

import random
from typing import Callable, Literal, Sequence

from pydantic import Field

from strategies.base import SOURCE_LOOKAHEAD, StepRecord, StrategyParams, WindowScheduler, register


def best_budget(values: Sequence[float], cost: Callable[[int], float], extra_tokens: int = 0,
                gain: float = 0.0) -> tuple[int, float]:
    """``(b, rate)``: how many of ``values`` (best first) to feed for the highest expected tokens
    per cost, with ``extra_tokens`` fed and ``gain`` expected tokens added by the window."""
    best, best_rate, total = 0, (1.0 + gain) / cost(1 + extra_tokens), 1.0 + gain
    for b, value in enumerate(values, start=1):
        total += value
        rate = total / cost(1 + b + extra_tokens)
        if rate > best_rate:
            best, best_rate = b, rate
    return best, best_rate


@register("scheduler", "adaptive")
class AdaptiveScheduler(WindowScheduler):
    needs_costs = True

    class Params(StrategyParams):
        name: Literal["adaptive"] = "adaptive"
        explore: float = Field(0.05, ge=0, le=1, description="chance of feeding the best tree when the root "
                               "alone looks better, so that the sources' estimates keep learning")
        window_decay: float = Field(0.9, gt=0, le=1, description="weight of older steps in the window's gain")
        window_prior: float = Field(1.0, ge=0, description="draft tokens per step the window is assumed to add "
                                    "before it was tried")
        seed: int = Field(0, ge=0, description="seed of the exploration draws")

    def reset(self) -> None:
        self._gain = [self.params.window_prior, 1.0]  # decayed window-harvested tokens, decayed window steps
        self._rng = random.Random(self.params.seed)
        self._seen = 0  # history entries already learnt from
        self._chosen: list[tuple[int, int]] = []  # (width, budget) per step

    def width(self, history: Sequence[StepRecord]) -> int:
        return self.window

    @property
    def window_gain(self) -> float:
        return self._gain[0] / self._gain[1]

    def plan(self, history, values, cost, window_tokens) -> tuple[int, int | None]:
        self._learn(history)
        budget, rate = best_budget(values, cost)
        width = 0
        if self.window:
            with_window, windowed_rate = best_budget(values, cost, window_tokens(self.window), self.window_gain)
            if windowed_rate > rate:
                budget, width = with_window, self.window
        if budget == 0 and values and self._rng.random() < self.params.explore:
            budget = len(values)
        self._chosen.append((width, budget))
        return width, budget

    def _learn(self, history: Sequence[StepRecord]) -> None:
        decay = self.params.window_decay
        for step in history[self._seen:]:
            if step.width > 0:
                harvested = step.accepted if step.source == SOURCE_LOOKAHEAD else 0
                self._gain = [self._gain[0] * decay + harvested, self._gain[1] * decay + 1.0]
        self._seen = len(history)

    def summary(self) -> dict[str, float]:
        steps = len(self._chosen) or 1
        return {
            "mean_width": sum(w for w, _ in self._chosen) / steps,
            "mean_budget": sum(b for _, b in self._chosen) / steps,
            "root_only_share": sum(b == 0 and w == 0 for w, b in self._chosen) / steps,
            "window_gain": self.window_gain,
        }
