"""4D attention masks of a lookahead step, in the form each attention backend needs.

transformers uses a 4D mask ``[B, 1, q, past + q]`` as given (no causal or cache adjustment),
so the mask covers the cached prefix and the step's ancestor (tree) mask. SDPA takes a bool
mask; eager *adds* the mask to the scores, so it needs an additive float mask (a bool mask there
is silently wrong); flex takes a ``BlockMask`` built from the bool mask. Models with sliding-window layers get one mask per layer type: a single mask
would turn their sliding layers into full attention.
"""

from __future__ import annotations

import numpy as np
import torch

from framework.cascade import CASCADE
from framework.flex import FLEX, block_mask
from framework.layout import StepLayout

# cascade: framework/cascade.py (bool mask, like sdpa); flex: framework/flex.py (a BlockMask)
SUPPORTED_BACKENDS = ("sdpa", "eager", CASCADE, FLEX)


def tree_attention_mask(layout: StepLayout, past_length: int, size: int | None = None,
                        columns: int | None = None) -> torch.Tensor:  # [size, columns] bool
    """True where a step token may attend: the whole prefix, itself and its ancestors.

    ``size`` pads the step with rows that attend like the root (never read, never attended);
    ``columns`` spans a preallocated cache: keys past the step stay hidden.
    Example: 2 cached tokens, a root and one draft token, padded to 3 rows over 6 columns::

        1 1 1 0 0 0      root
        1 1 1 1 0 0      draft token (sees the root)
        1 1 1 0 0 0      padding (attends like the root)
    """
    return torch.from_numpy(tree_attention_array(layout, past_length, size, columns))


def tree_attention_array(layout: StepLayout, past_length: int, size: int | None = None,
                         columns: int | None = None) -> np.ndarray:  # [size, columns] bool
    """``tree_attention_mask`` as a NumPy array: built on the host with a few cheap writes."""
    size = layout.size if size is None else size
    columns = past_length + size if columns is None else columns
    allowed = np.zeros((size, columns), dtype=bool)
    allowed[:, :past_length] = True
    allowed[: layout.size, past_length : past_length + layout.size] = layout.mask_array
    allowed[layout.size :, past_length] = True
    return allowed


def key_positions(layout: StepLayout, past_length: int, columns: int) -> torch.Tensor:  # [columns]
    """Position id of each key column: the prefix's own, then the step's tokens' (past + depth)."""
    positions = torch.arange(columns)
    positions[past_length : past_length + layout.size] = past_length + layout.depths
    return positions


def sliding_window_limit(
    allowed: torch.Tensor,  # [size, columns] bool
    layout: StepLayout,
    past_length: int,
    window: int,
) -> torch.Tensor:  # [size, columns] bool
    """Hide keys ``window`` or more positions behind the query (HF: ``kv_pos > q_pos - window``)."""
    size, columns = allowed.shape
    query_positions = torch.full((size,), past_length)  # padding rows sit at the root's position
    query_positions[: layout.size] += layout.depths
    keys = key_positions(layout, past_length, columns)
    return allowed & (keys[None, :] > query_positions[:, None] - window)


class MaskBuilder:
    """Builds the mask argument of one step for a given model (backend, dtype, layer types)."""

    def __init__(self, model) -> None:
        config = model.config
        backend = getattr(config, "_attn_implementation", None) or "eager"
        if backend not in SUPPORTED_BACKENDS:
            raise ValueError(
                f"attn_implementation={backend!r} cannot take the step's tree mask; load the model "
                f"with attn_implementation='sdpa' (default), 'eager', {CASCADE!r} (framework.cascade) or {FLEX!r} "
                f"(framework.flex)"
            )
        self.additive = backend == "eager"
        self.flex = backend == FLEX
        if self.flex and not getattr(model, "_supports_flex_attn", False):
            raise ValueError(f"{type(model).__name__} does not declare FlexAttention support (_supports_flex_attn) in "
                             f"transformers, so its code may not take a BlockMask; load it with "
                             f"attn_implementation='sdpa' or {CASCADE!r}")
        self.dtype = model.dtype
        self.device = model.device
        layer_types = set(getattr(config, "layer_types", None) or [])
        unknown = layer_types - {"full_attention", "sliding_attention"}
        if unknown:
            raise ValueError(f"layer types {sorted(unknown)} are not supported by the lookahead engine")
        self.per_layer_type = "sliding_attention" in layer_types
        window = getattr(config, "sliding_window", None)
        # a single sliding window over every layer (Mistral-style) when no layer types are given
        self.sliding_window = window if (self.per_layer_type or not layer_types) else None

    def _encode(self, allowed: np.ndarray):  # [q, k] bool -> [1, 1, q, k] tensor, or a BlockMask for flex
        if self.flex:
            return block_mask(torch.from_numpy(allowed).to(self.device))
        mask = torch.from_numpy(allowed[None, None])  # a view: on a CPU the bool mask takes no torch call
        if self.additive:
            mask = torch.zeros(mask.shape, dtype=self.dtype).masked_fill_(~mask, torch.finfo(self.dtype).min)
        return mask if self.device.type == "cpu" else mask.to(self.device)

    def __call__(self, layout: StepLayout, past_length: int, size: int | None = None, columns: int | None = None):
        allowed = tree_attention_array(layout, past_length, size, columns)
        if self.per_layer_type:
            sliding = sliding_window_limit(torch.from_numpy(allowed), layout, past_length, self.sliding_window)
            return {"full_attention": self._encode(allowed), "sliding_attention": self._encode(sliding.numpy())}
        if self.sliding_window is not None:
            allowed = sliding_window_limit(torch.from_numpy(allowed), layout, past_length, self.sliding_window).numpy()
        return self._encode(allowed)
