"""Cascade attention for a lookahead step: the shared prefix and the step's tree, merged by LSE.

A step feeds ``q`` tokens after a cached prefix of ``P`` tokens. Every step token sees the whole
prefix, plus itself and its ancestors (the ``[q, q]`` tree mask), so attention splits in two:

    prefix part  queries vs prefix keys/values, no mask          -> out_p, lse_p
    block part   queries vs the step's own keys/values, tree mask -> out_b, lse_b
    merged       out = w_p * out_p + w_b * out_b,  w_x = exp(lse_x - lse),
                 lse = log(exp(lse_p) + exp(lse_b))

Each part's ``out`` is a softmax-weighted average over its own keys and ``lse`` the log of that
softmax's denominator (logsumexp of the scaled scores), so the merge rescales both averages to the
denominator over all keys: the same result as one attention over ``[prefix | block]``
(FlashInfer's "cascade" / ``merge_state``). ``P = 0`` is the block part alone. The prefix part has
no mask, which is what lets a dense kernel (flash-attn) run it.

Glossary: an *attention state* is the pair ``(out [B, Hq, q, D], lse [B, Hq, q])``; ``lse`` is
-inf for a row that sees no key (its ``out`` is 0), so such a part drops out of a merge.

Example (one query, one head, D = 1, scale 1): prefix keys give scores (0, 0) -> lse_p = log 2;
the block gives one score 0 -> lse_b = 0; lse = log 3, so w_p = 2/3, w_b = 1/3: the prefix
average counts for its two keys and the block's for its one.

``cascade_attention_forward`` is the transformers attention function for
``attn_implementation="lookahead_cascade"`` (see ``register_cascade``).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import transformers

CASCADE = "lookahead_cascade"  # the attn_implementation name register_cascade() adds


def attend_with_lse(
    query: torch.Tensor,  # [B, Hq, q, D]
    key: torch.Tensor,  # [B, Hkv, k, D]
    value: torch.Tensor,  # [B, Hkv, k, D]
    mask: torch.Tensor | None = None,  # bool, broadcastable to [B, Hq, q, k], True = may attend
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # out [B, Hq, q, D] (input dtype), lse [B, Hq, q] (fp32 or fp64)
    """Plain-torch attention that also returns the logsumexp of each row's scaled scores."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    compute = torch.promote_types(query.dtype, torch.float32)  # accumulate in fp32 (fp64 stays fp64)
    groups = query.shape[1] // key.shape[1]  # GQA: kv head h serves query heads h*groups .. (h+1)*groups-1
    key = key.to(compute).repeat_interleave(groups, dim=1)  # [B, Hq, k, D]
    value = value.to(compute).repeat_interleave(groups, dim=1)  # [B, Hq, k, D]
    scores = query.to(compute) @ key.transpose(-1, -2) * scale  # [B, Hq, q, k]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    lse = scores.logsumexp(dim=-1)  # [B, Hq, q], -inf for a row that sees nothing
    # subtracting a finite lse keeps a fully masked row at exp(-inf) = 0 instead of NaN
    probs = torch.exp(scores - lse.clamp(min=torch.finfo(compute).min)[..., None])  # [B, Hq, q, k]
    return (probs @ value).to(query.dtype), lse


def merge_by_lse(
    out_a: torch.Tensor,  # [B, Hq, q, D]
    lse_a: torch.Tensor,  # [B, Hq, q]
    out_b: torch.Tensor,  # [B, Hq, q, D]
    lse_b: torch.Tensor,  # [B, Hq, q]
) -> tuple[torch.Tensor, torch.Tensor]:  # out [B, Hq, q, D], lse [B, Hq, q]
    """The attention state over the union of two disjoint key sets, from each set's state."""
    lse = torch.logaddexp(lse_a, lse_b)  # [B, Hq, q] log of the joint softmax denominator
    safe = lse.clamp(min=torch.finfo(lse.dtype).min)  # a row with no key at all merges to 0, not NaN
    weight_a = torch.exp(lse_a - safe)[..., None]  # [B, Hq, q, 1] share of the denominator from a
    weight_b = torch.exp(lse_b - safe)[..., None]
    out = weight_a * out_a.to(lse.dtype) + weight_b * out_b.to(lse.dtype)
    return out.to(out_a.dtype), lse


def cascade_attention(
    query: torch.Tensor,  # [B, Hq, q, D]
    prefix_key: torch.Tensor,  # [B, Hkv, P, D]
    prefix_value: torch.Tensor,  # [B, Hkv, P, D]
    block_key: torch.Tensor,  # [B, Hkv, q, D]
    block_value: torch.Tensor,  # [B, Hkv, q, D]
    tree_mask: torch.Tensor,  # bool, broadcastable to [B, Hq, q, q], True = may attend
    scale: float | None = None,
    prefix_attend=attend_with_lse,
) -> tuple[torch.Tensor, torch.Tensor]:  # out [B, Hq, q, D], lse [B, Hq, q]
    """Attention of the step over ``[prefix (all visible) | block (tree mask)]``, in two parts."""
    block = attend_with_lse(query, block_key, block_value, tree_mask, scale)
    if prefix_key.shape[2] == 0:
        return block
    prefix = prefix_attend(query, prefix_key, prefix_value, None, scale)
    return merge_by_lse(*prefix, *block)


@lru_cache(maxsize=1)
def flash_available() -> bool:
    """True when flash-attn imports and CUDA is available (checked once per process)."""
    try:
        import flash_attn  # noqa: F401
    except Exception:  # a missing package, or a build that does not match this torch
        return False
    return torch.cuda.is_available()


def flash_prefix_attend(
    query: torch.Tensor,  # [B, Hq, q, D] fp16/bf16 on CUDA
    key: torch.Tensor,  # [B, Hkv, P, D]
    value: torch.Tensor,  # [B, Hkv, P, D]
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # out [B, Hq, q, D], lse [B, Hq, q] fp32
    """``attend_with_lse`` without a mask on flash-attn (which handles GQA itself)."""
    if mask is not None:
        raise ValueError("flash_prefix_attend attends to every prefix key: pass mask=None")
    from flash_attn import flash_attn_func

    # flash-attn takes [B, S, H, D]; return_attn_probs=True adds the lse (no probs without dropout)
    out, lse, _ = flash_attn_func(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
        softmax_scale=scale, causal=False, return_attn_probs=True,
    )
    return out.transpose(1, 2), lse  # [B, Hq, q, D], [B, Hq, q]


def _prefix_attend_for(query: torch.Tensor):
    fits_flash = query.is_cuda and query.dtype in (torch.float16, torch.bfloat16)
    return flash_prefix_attend if fits_flash and flash_available() else attend_with_lse


def _causal_mask(module, query: torch.Tensor, key: torch.Tensor, is_causal: bool | None):
    """What SDPA does without a mask: top-left causal for several queries, nothing for one."""
    is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    q_len, k_len = query.shape[2], key.shape[2]
    if not is_causal or q_len == 1:
        return None
    return torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()  # [q, k]


def cascade_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, Hq, q, D]
    key: torch.Tensor,  # [B, Hkv, P + q, D], the whole cache with the step's block last
    value: torch.Tensor,  # [B, Hkv, P + q, D]
    attention_mask: torch.Tensor | None,  # [B, 1, q, P + q] bool, True = may attend
    scaling: float | None = None,
    dropout: float = 0.0,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:  # attn_output [B, q, Hq, D], no attention weights
    """transformers attention function: cascade when every query sees the whole prefix.

    Otherwise (no mask, a sliding window hiding prefix keys, a static cache's unused slots) it
    runs one masked attention over all keys, so the result is always that of the mask.
    """
    if dropout > 0 or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        raise ValueError(f"attn_implementation={CASCADE!r} has no dropout, softcap or position bias: use 'sdpa'")
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        raise TypeError(f"attn_implementation={CASCADE!r} takes a bool mask (True = may attend), not an additive one")
    prefix_len = key.shape[2] - query.shape[2]
    if attention_mask is None:
        out, _ = attend_with_lse(query, key, value, _causal_mask(module, query, key, is_causal), scaling)
    elif prefix_len >= 0 and bool(attention_mask[..., :prefix_len].all()):  # a host sync on GPU
        out, _ = cascade_attention(
            query, key[:, :, :prefix_len], value[:, :, :prefix_len], key[:, :, prefix_len:],
            value[:, :, prefix_len:], attention_mask[..., prefix_len:], scaling, _prefix_attend_for(query),
        )
    else:
        out, _ = attend_with_lse(query, key, value, attention_mask, scaling)
    return out.transpose(1, 2).contiguous(), None


def register_cascade() -> str:
    """Make ``attn_implementation="lookahead_cascade"`` available to transformers (idempotent).

    The mask function is sdpa's, so such a model builds its own causal masks (prefill) as sdpa
    does. Then ``model.set_attn_implementation(CASCADE)`` or
    ``AutoModelForCausalLM.from_config(config, attn_implementation=CASCADE)``.
    """
    transformers.AttentionInterface.register(CASCADE, cascade_attention_forward)
    transformers.AttentionMaskInterface.register(CASCADE, transformers.AttentionMaskInterface()["sdpa"])
    return CASCADE
