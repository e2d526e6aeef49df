"""The lookahead branch's state: a window of guessed tokens updated by Jacobi iteration."""

from __future__ import annotations

import torch

from framework.ngrams import column_ngrams


class Window:
    """``levels`` rows of ``width`` guessed tokens, oldest level first (at most N-1 levels); plain
    lists of ints: the window is bookkeeping between forwards, a few dozen tokens.

    Level 0 starts as tokens drawn from the context with the window's own generator; each step
    the model's argmax at the top level becomes a new level. Once N-1 levels exist, every step
    harvests one n-gram per column (the column plus its new top token) and drops level 0.

    Example (N=3, W=2): start [[a, b]]; step 1 adds [c, d] -> [[a, b], [c, d]]; step 2 gets
    new tokens [e, f], harvests (a; c, e) and (b; d, f) and keeps [[c, d], [e, f]].
    """

    def __init__(self, ngram: int, generator: torch.Generator) -> None:
        self.ngram = ngram
        self.generator = generator
        self.levels: list[list[int]] = []  # each W tokens

    @property
    def width(self) -> int:
        return len(self.levels[0]) if self.levels else 0

    @property
    def full(self) -> bool:
        return len(self.levels) == self.ngram - 1

    def token_list(self) -> list[int]:
        """The window's tokens, level-major, as the step feeds them."""
        return [token for level in self.levels for token in level]

    def _draw(self, context: torch.Tensor, count: int) -> list[int]:  # context [T]
        picks = torch.randint(context.numel(), (count,), generator=self.generator)
        return context[picks].tolist()

    def resize(self, width: int, context: torch.Tensor) -> None:
        """Grow with columns drawn from ``context`` or drop columns on the right."""
        if width == self.width and self.levels:
            return
        if width == 0:
            self.levels = []
            return
        if not self.levels:
            self.levels = [self._draw(context, width)]
            return
        if width < self.width:
            self.levels = [level[:width] for level in self.levels]
        else:
            extra = width - self.width
            self.levels = [level + self._draw(context, extra) for level in self.levels]

    def shift(self, columns: int, context: torch.Tensor) -> None:
        """Drop the first ``columns`` columns and refill on the right (the 'shift' realignment)."""
        columns = min(columns, self.width)
        if columns <= 0 or not self.levels:
            return
        width = self.width
        self.levels = [level[columns:] + self._draw(context, columns) for level in self.levels]
        assert self.width == width

    def advance(self, top_choices: list[int]) -> list[tuple[int, tuple[int, ...]]] | None:
        """Add the model's choices at the top level (W tokens) as a new level.

        Returns the harvested ``(key, draft)`` pairs (one per column, drafts of N-1 tokens) once
        the window is full, else None (warm-up).
        """
        harvest = None
        if self.full:
            harvest = column_ngrams(self.levels, top_choices)
            self.levels = self.levels[1:]
        self.levels.append(list(top_choices))
        return harvest
