"""``argmax`` over the vocabulary, exactly as ``torch.argmax`` (the first maximal index) but fast.

On a CPU ``torch.argmax`` over a 49k-vocabulary row is a scalar loop; NumPy's ``argmax`` is
vectorised. Measured by
``python -m experiments.head_layout --threads 2`` on rows just projected by the LM head, as in a
step (docs/results.md has the numbers). Both return the first maximal index. Tensors NumPy
cannot view (bf16, a GPU's) keep ``torch.argmax``: on a GPU it runs on the device.
"""

from __future__ import annotations

import numpy as np
import torch

NUMPY_DTYPES = frozenset({torch.float32, torch.float64, torch.float16})


def numpy_can(scores: torch.Tensor) -> bool:
    return scores.device.type == "cpu" and scores.dtype in NUMPY_DTYPES and not scores.requires_grad


def argmax_rows(scores: torch.Tensor) -> torch.Tensor:  # [..., V] -> [...] long
    """``scores.argmax(dim=-1)``, the same result (first maximal index), fewer cycles on a CPU."""
    if not numpy_can(scores):
        return scores.argmax(dim=-1)
    return torch.from_numpy(np.asarray(scores.numpy().argmax(axis=-1), dtype=np.int64))


def argmax_list(scores: torch.Tensor) -> list[int]:  # [k, V] -> k ints
    """``argmax_rows(scores).tolist()`` without the tensor in between (one call fewer per step)."""
    return scores.numpy().argmax(axis=-1).tolist() if numpy_can(scores) else scores.argmax(dim=-1).tolist()
