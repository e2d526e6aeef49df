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


def column_ngrams(levels: list[list[int]], new_level: list[int]) -> list[tuple[int, tuple[int, ...]]]:
    """The lookahead branch's harvest: column j of a full window plus its new top token.

    ``levels``: N-1 lists of W tokens (oldest first); ``new_level``: W tokens.
    Returns W pairs ``(key, draft)``: the key from level 0, the draft from levels 1.. and the new token.

    Example (N=3, W=2): levels [[1, 2], [3, 4]], new [5, 6] -> [(1, (3, 5)), (2, (4, 6))].
    """
    return [(column[0], column[1:]) for column in zip(*levels, new_level)]
