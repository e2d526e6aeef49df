"""Tiny random decoder-only models of several architectures, built from configs (no downloads).

Fixed-seed float32 weights; vocabulary 96 (token 0 is pad and stays out of prompts). Mistral and
Gemma 3 get a sliding window of 6 so that the per-layer-type masks matter within a short test.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import transformers

VOCAB = 96
PAD = 0
COMMON = dict(vocab_size=VOCAB, pad_token_id=PAD, bos_token_id=1, eos_token_id=None, tie_word_embeddings=False)
LLAMA_LIKE = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=256,
)

CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**COMMON, **LLAMA_LIKE),
    "qwen2": lambda: transformers.Qwen2Config(**COMMON, **LLAMA_LIKE),
    "mistral": lambda: transformers.MistralConfig(**COMMON, **LLAMA_LIKE, sliding_window=6),
    "gemma3": lambda: transformers.Gemma3TextConfig(
        **COMMON, **LLAMA_LIKE, head_dim=8, sliding_window=6, layer_types=["sliding_attention", "full_attention"]
    ),
    "phi3": lambda: transformers.Phi3Config(**COMMON, **LLAMA_LIKE),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(
        **COMMON, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=256,
    ),
    "gpt2": lambda: transformers.GPT2Config(**COMMON, n_embd=32, n_layer=2, n_head=4, n_positions=256),
}
ARCHITECTURES = tuple(CONFIGS)


@lru_cache(maxsize=None)
def tiny_model(arch: str, attn: str = "sdpa", seed: int = 0):
    """The same weights for a given (arch, seed) whatever the attention backend."""
    config = CONFIGS[arch]()
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD
    return model.eval()


def greedy_reference(model, prompt: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
    return model.generate(
        prompt, max_new_tokens=max_new_tokens, min_new_tokens=0, do_sample=False, **kwargs
    )


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """Index of the first differing token of two [1, T] sequences, None if equal."""
    a, b = a[0].tolist(), b[0].tolist()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@torch.inference_mode()
def top2_gap(model, prefix: torch.Tensor) -> float:
    """Gap between the two largest next-token logits after ``prefix # [1, T]`` (plain forward)."""
    logits = model(prefix).logits[0, -1]
    top = logits.topk(2).values
    return float(top[0] - top[1])


def assert_same_or_near_tie(model, reference: torch.Tensor, candidate: torch.Tensor, tol: float = 1e-4) -> None:
    """Equal sequences pass; otherwise the first difference must be a near-tie of the plain forward."""
    index = first_difference(reference, candidate)
    if index is None:
        return
    assert index < reference.shape[1] and index < candidate.shape[1], "lengths differ"
    gap = top2_gap(model, reference[:, :index])
    assert gap < tol, f"outputs differ at position {index} where the top-2 logit gap is {gap:.3g} >= {tol}"
