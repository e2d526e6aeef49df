"""Pure n-gram harvesting: the pool's inputs."""

from __future__ import annotations

from typing import Sequence


def sequence_ngrams(tokens: Sequence[int], ngram: int, start: int = 0) -> list[tuple[int, tuple[int, ...]]]:
    """Every n-gram of a token sequence whose key sits at index >= ``start``, as ``(key, draft)``
    pairs, draft = the N-1 tokens after the key (the pool's form, like ``column_ngrams``).

    Example (N=3): tokens [5, 6, 7, 8] -> [(5, (6, 7)), (6, (7, 8))].
    """
    tail = list(tokens[start:])
    return [(tail[i], tuple(tail[i + 1 : i + ngram])) for i in range(len(tail) - ngram + 1)]


def column_ngrams(levels: list[list[int]], new_level: list[int]) -> list[tuple[int, tuple[int, ...]]]:
    """The lookahead branch's harvest: column j of a full window plus its new top token.

    ``levels``: N-1 lists of W tokens (oldest first); ``new_level``: W tokens.
    Returns W pairs ``(key, draft)``: the key from level 0, the draft from levels 1.. and the new token.

    Example (N=3, W=2): levels [[1, 2], [3, 4]], new [5, 6] -> [(1, (3, 5)), (2, (4, 6))].
    """
    return [(column[0], column[1:]) for column in zip(*levels, new_level)]
