"""What ``LookaheadEngine.generate`` returns."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from strategies.base import StepRecord


@dataclass
class DecodeStats:
    """Per-call counters. ``steps`` counts decoding forward passes (the prefill excluded);
    ``emitted_per_step[i]`` is the tokens step i committed (accepted draft tokens + the bonus
    token, after the EOS / max_new_tokens cut) and ``accepted_per_step[i]`` its draft tokens alone
    (emitted less the bonus: one meaning of "accepted" everywhere); ``sources[i]`` is where step
    i's winning draft came from: an n-gram's harvest tag ('prompt', 'lookahead', 'output'),
    another source's name ('suffix', 'recycling') or 'none'. ``offered``, ``fed`` and
    ``accepted_from`` count, per source, candidates proposed, tree nodes fed and draft tokens
    accepted over the call."""

    steps: int = 0
    new_tokens: int = 0
    prefill_tokens: int = 0
    emitted_per_step: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    fed_tokens: list[int] = field(default_factory=list)  # tokens in each step's forward pass
    widths: list[int] = field(default_factory=list)  # window width of each step
    drafts: list[int] = field(default_factory=list)  # draft paths (tree leaves) verified in each step
    offered: Counter = field(default_factory=Counter)  # candidates each source proposed, all steps
    fed: Counter = field(default_factory=Counter)  # draft-tree nodes of each source fed, all steps
    accepted_from: Counter = field(default_factory=Counter)  # accepted draft tokens by source
    wall_seconds: float = 0.0
    decode_seconds: float = 0.0  # wall time of the decoding steps (the prefill excluded)
    model_seconds: float = 0.0  # inside the model's forward and head over the decoding steps
    stop_reason: str = ""  # 'eos', 'length' or 'empty'
    scheduler: dict = field(default_factory=dict)  # what the scheduler chose and why (its summary())

    @property
    def accepted_per_step(self) -> list[int]:
        """Draft tokens accepted in each step: the emitted tokens less the bonus token."""
        return [emitted - 1 for emitted in self.emitted_per_step]

    @property
    def host_ms_per_step(self) -> float:
        """Engine time per decoding step outside the model: planning, inputs and masks,
        verification, bookkeeping (the decoding steps' wall time less the model's)."""
        return 1000 * (self.decode_seconds - self.model_seconds) / self.steps if self.steps else 0.0

    @property
    def tokens_per_step(self) -> float:
        return self.new_tokens / self.steps if self.steps else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def record(self, step: StepRecord) -> None:
        self.steps += 1
        self.emitted_per_step.append(step.emitted)
        self.sources.append(step.source)
        self.fed_tokens.append(step.fed_tokens)
        self.widths.append(step.width)
        self.drafts.append(step.drafts)

    def summary(self) -> str:
        return (
            f"steps={self.steps} new_tokens={self.new_tokens} tokens/step={self.tokens_per_step:.2f} "
            f"tokens/s={self.tokens_per_second:.1f}"
        )


@dataclass
class LookaheadOutput:
    sequences: torch.Tensor  # [1, T + new_tokens]
    stats: DecodeStats
