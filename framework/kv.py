"""KV-cache plumbing across transformers versions (5.17 .. 5.24+)."""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache


def cache_argument(model) -> str:
    """The forward kwarg carrying the cache: ``cache`` from 5.24 on, ``past_key_values`` before."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def new_cache() -> DynamicCache:
    """A plain dynamic cache. Built without the config on purpose: a config-built cache gives
    sliding-window layers that keep only the last window of states, which a multi-token step
    cannot use and cannot crop (see NOTES)."""
    return DynamicCache()


def cache_length(cache: DynamicCache) -> int:
    return cache.get_seq_length()


def keep_slots(cache: DynamicCache, past_length: int, slots: list[int]) -> None:
    """After a step of q tokens appended at ``past_length``, keep only the root (slot 0) and the
    given slots, packed in order right after it; everything else of the step is dropped.

    RoPE was applied with each token's own position id, which equals its packed position, so no
    re-rotation is needed.
    """
    keep = 1 + len(slots)
    for offset, slot in enumerate(slots, start=1):
        if slot == offset:
            continue
        for layer in cache.layers:
            # [B, H_kv, S, D]: move the accepted entry into its packed place
            layer.keys[..., past_length + offset, :] = layer.keys[..., past_length + slot, :]
            layer.values[..., past_length + offset, :] = layer.values[..., past_length + slot, :]
    excess = cache_length(cache) - (past_length + keep)
    if excess > 0:
        cache.crop(-excess)

