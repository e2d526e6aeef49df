"""Pure n-gram harvesting: the pool's inputs."""

from __future__ import annotations

import torch


def sequence_ngrams(tokens: torch.Tensor, ngram: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every n-gram of a 1-D token sequence whose key sits at index >= ``start``.

    Returns ``keys # [M]`` and ``drafts # [M, N-1]`` where draft m is the N-1 tokens after key m.

    Example (N=3): tokens [5, 6, 7, 8] -> keys [5, 6], drafts [[6, 7], [7, 8]].
    """
    count = tokens.numel() - ngram + 1 - start
    if count <= 0:
        return tokens.new_empty(0), tokens.new_empty(0, ngram - 1)
    windows = tokens[start:].unfold(0, ngram, 1)  # [M, N]
    return windows[:, 0], windows[:, 1:]


def column_ngrams(levels: list[torch.Tensor], new_level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The lookahead branch's harvest: column j of a full window plus its new top token.

    ``levels``: N-1 tensors ``# [W]`` (oldest first); ``new_level # [W]``.
    Returns ``keys # [W]`` (level 0) and ``drafts # [W, N-1]`` (levels 1.. and the new token).

    Example (N=3, W=2): levels [[1, 2], [3, 4]], new [5, 6] -> keys [1, 2], drafts [[3, 5], [4, 6]].
    """
    grid = torch.stack([*levels, new_level], dim=1)  # [W, N]
    return grid[:, 0], grid[:, 1:]
