"""``static``: the paper's scheduler, a constant window width W."""

from typing import Literal, Sequence

from strategies.base import StepRecord, StrategyParams, WindowScheduler, register


@register("scheduler", "static")
class StaticScheduler(WindowScheduler):
    class Params(StrategyParams):
        name: Literal["static"] = "static"

    def width(self, history: Sequence[StepRecord]) -> int:
        return self.window
