"""FlexAttention for a lookahead step: the step's mask as a ``BlockMask``.

``attn_implementation="lookahead_flex"`` (``register_flex()``; ``load_model`` and the CLIs'
``--attn`` do it). The engine's ``MaskBuilder`` turns the step's bool mask ``[q, columns]`` (the
prefix, the tree block, the unused tail of a preallocated cache hidden) into a ``BlockMask``:
flex then skips every 128 x 128 block that is fully hidden, such as a static cache's empty tail,
and computes only the visible ones. The attention function runs torch's ``flex_attention``
compiled on CUDA (one compiled function per process), eagerly elsewhere: torch's unfused
reference, exact but slow, so on the CPU this backend is for tests, not speed. A mask that is not
a ``BlockMask`` (the prefill's causal mask, which transformers builds as for sdpa, or none) runs
transformers' SDPA path.

Why not transformers' own ``"flex_attention"``: it always compiles flex, and on the CPU (torch
2.13) a second shape failed in the C++ code generator (../shared/NOTES.md), while a lookahead
step changes shape every step unless compiled to a fixed one.

Example::

    register_flex()
    model = AutoModelForCausalLM.from_config(config, attn_implementation=FLEX)
    LookaheadEngine(model, LookaheadConfig()).generate(ids, max_new_tokens=64)
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import torch
import transformers
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
from transformers.integrations.sdpa_attention import sdpa_attention_forward

FLEX = "lookahead_flex"  # the attn_implementation name register_flex() adds


def block_mask(allowed: torch.Tensor):  # [q, k] bool, True = may attend -> BlockMask [1, 1, q, k]
    """The ``BlockMask`` of a dense bool mask, on the mask's device (blocks of 128 x 128)."""
    q_len, k_len = allowed.shape

    def visible(batch, head, query, key):  # flex's mask_mod: a lookup in the dense mask
        return allowed[query, key]

    return create_block_mask(visible, None, None, q_len, k_len, device=allowed.device)


@lru_cache(maxsize=None)
def _compiled_flex(device_type: str):
    """flex_attention compiled once per process on CUDA; the eager reference elsewhere."""
    return torch.compile(flex_attention, dynamic=False) if device_type == "cuda" else flex_attention


def flex_step_attention(
    query: torch.Tensor,  # [B, Hq, q, D]
    key: torch.Tensor,  # [B, Hkv, k, D]
    value: torch.Tensor,  # [B, Hkv, k, D]
    mask,  # BlockMask [1, 1, q, k]
    scale: float | None = None,
) -> torch.Tensor:  # [B, Hq, q, D]
    if torch.compiler.is_compiling():  # inside a compiled step: let the outer compile take flex
        return flex_attention(query, key, value, block_mask=mask, scale=scale, enable_gqa=True)
    with warnings.catch_warnings():  # the eager reference warns that it is unfused: known, and documented above
        warnings.filterwarnings("ignore", message=".*without torch.compile.*")
        return _compiled_flex(query.device.type)(query, key, value, block_mask=mask, scale=scale, enable_gqa=True)


def flex_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, Hq, q, D]
    key: torch.Tensor,  # [B, Hkv, k, D]
    value: torch.Tensor,  # [B, Hkv, k, D]
    attention_mask,  # BlockMask [1, 1, q, k], or a tensor / None from transformers' own masks
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:  # attn_output [B, q, Hq, D], no attention weights
    """transformers attention function: flex over a ``BlockMask``, SDPA for anything else."""
    if not isinstance(attention_mask, BlockMask):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if dropout > 0 or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        raise ValueError(f"attn_implementation={FLEX!r} has no dropout, softcap or position bias: use 'sdpa'")
    if attention_mask.shape[-2:] != (query.shape[2], key.shape[2]):
        raise ValueError(f"the BlockMask covers {tuple(attention_mask.shape[-2:])} (queries, keys) but the layer "
                         f"has {query.shape[2]} queries and {key.shape[2]} keys")
    out = flex_step_attention(query, key, value, attention_mask, scaling)
    return out.transpose(1, 2).contiguous(), None


def register_flex() -> str:
    """Make ``attn_implementation="lookahead_flex"`` available to transformers (idempotent).

    The mask function is sdpa's, so such a model builds its own causal masks (prefill) as sdpa does.
    """
    transformers.AttentionInterface.register(FLEX, flex_attention_forward)
    transformers.AttentionMaskInterface.register(FLEX, transformers.AttentionMaskInterface()["sdpa"])
    return FLEX
