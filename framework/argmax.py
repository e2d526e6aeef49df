"""``argmax`` over the vocabulary, exactly as ``torch.argmax`` (the first maximal index) but fast.

On this CPU ``torch.argmax`` over a 49k-vocabulary row is not vectorised while ``amax`` is: for a
window's 15 freshly projected rows, 0.55 ms this way against 0.87 ms
(``python -m experiments.head_layout --threads 2``, 2026-12-02). One row keeps ``torch.argmax``. So: the maximum of each block of
``BLOCK`` entries (``amax``), the first block holding the row's maximum, then ``argmax`` inside
that block only, and the tail past the last full block compared last (it wins only when strictly
greater: an earlier index wins ties, as in ``torch.argmax``).
"""

from __future__ import annotations

import torch

BLOCK = 1024


def argmax_rows(scores: torch.Tensor) -> torch.Tensor:  # [..., V] -> [...] long
    """``scores.argmax(dim=-1)``, same result (first maximal index), fewer passes over long rows."""
    vocab = scores.shape[-1]
    shape = scores.shape[:-1]
    rows = scores.reshape(-1, vocab)  # [k, V]
    if vocab < 4 * BLOCK or rows.shape[0] < 2 or scores.device.type != "cpu":
        return scores.argmax(dim=-1)  # one row: the extra dispatches cost more than they save
    full = vocab - vocab % BLOCK
    blocks = rows[:, :full].reshape(rows.shape[0], full // BLOCK, BLOCK)  # [k, B, BLOCK]
    best = blocks.amax(dim=-1).argmax(dim=-1)  # [k] first block holding the maximum
    index = best * BLOCK + blocks[torch.arange(rows.shape[0]), best].argmax(dim=-1)  # [k]
    if full < vocab:
        tail_max, tail_index = rows[:, full:].max(dim=-1)
        later = tail_max > rows.gather(1, index[:, None])[:, 0]
        index = torch.where(later, full + tail_index, index)
    return index.reshape(shape)
