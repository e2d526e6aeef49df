"""KV-cache plumbing across transformers versions (5.17 .. 5.24+)."""

from __future__ import annotations

import inspect

import numpy as np
import torch
from transformers import DynamicCache

from framework.argmax import numpy_can


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


class StepCache(DynamicCache):
    """The engine's KV cache: preallocated, written where the step says, compacted by one gather.
    The same tensors live through a whole ``generate`` (and across calls), so a compiled step sees
    fixed shapes and addresses.

    All layers share one block ``[layers, 2, B, H_kv, capacity, D]`` (keys, values) when their
    shapes agree, so compaction is one gather and one scatter for the whole model; a layer whose
    shape differs (or a cache told no layer count) gets its own ``[2, B, H_kv, capacity, D]``.
    ``store[layer]`` is that layer's tensor either way. Before each forward the engine calls
    ``prepare(start, q, visible, device)``: the forward's q new states are written at positions
    ``start .. start+q-1`` and attention sees the first ``visible`` positions (None: the whole
    buffer, masked by the step's mask: the fixed-shape compiled step). ``length`` counts the
    committed positions (the logical cache length), set by ``load`` and ``commit``.

    Example: prefix of 10, a step of 6 fed at positions 10..15 accepts slots 3 and 4 (with the
    root at slot 0): ``commit(10, [3, 4])`` moves positions 13, 14 to 11, 12; length 13.
    """

    def __init__(self, capacity: int, layers: int | None = None) -> None:
        super().__init__()
        self.capacity = capacity
        self.layer_count = layers
        self.block: torch.Tensor | None = None  # [layers, 2, B, H_kv, capacity, D]
        self.mixed = False  # some layer has its own tensor: compaction goes layer by layer
        self.store: dict[int, torch.Tensor] = {}  # layer -> [2, B, H_kv, capacity, D]
        self.slots: torch.Tensor | None = None  # [q] long, where the next forward writes
        # [capacity] positions on the device the engine passes (a NumPy array on a CPU), sliced per step
        self._positions: torch.Tensor | np.ndarray | None = None
        self._positions_device = None
        self.checked: set[int] = set()  # layers whose tensor was fitted to their states
        self.visible: int | None = None
        self.length = 0

    def prepare(self, start: int, count: int, visible: int | None, device) -> None:
        """The next forward writes ``count`` states at ``start..start+count-1``."""
        if start + count > self.capacity:
            raise ValueError(f"KV positions up to {start + count - 1} are past the cache's capacity {self.capacity}")
        if self._positions is None or device is not self._positions_device:  # (the engine passes one device object)
            positions = torch.arange(self.capacity, device=device)
            self._positions = positions.numpy() if positions.device.type == "cpu" else positions
            self._positions_device = device
        # on a CPU the slice is taken in NumPy: no torch call right after a forward
        self.slots = torch.from_numpy(self._positions[start : start + count]) \
            if isinstance(self._positions, np.ndarray) else self._positions[start : start + count]
        self.visible = visible

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):  # [B, H_kv, q, D] each
        store = self.store.get(layer_idx)
        if layer_idx not in self.checked:  # a layer's first states: fit its tensor (later calls: the same shapes)
            store = self._layer(layer_idx, key_states)
            self.checked.add(layer_idx)
        store[0].index_copy_(2, self.slots, key_states)
        store[1].index_copy_(2, self.slots, value_states)
        if self.visible is None:
            return store[0], store[1]
        return store[0, :, :, : self.visible], store[1, :, :, : self.visible]

    def commit(self, past_length: int, slots: list[int]) -> None:
        """After a step fed at ``past_length``: keep the root (slot 0) and ``slots``, packed after it."""
        moved = [(offset, slot) for offset, slot in enumerate(slots, start=1) if slot != offset]
        if moved:
            tensors = list(self.store.values()) if self.mixed or self.block is None else [self.block]
            # slots increase along a path, so once one has moved every later one has: the targets
            # are consecutive; when the sources are too (a draft's nodes), one copy does it
            (target, source), run = moved[0], len(moved)
            consecutive = [s for _, s in moved] == list(range(source, source + run))
            for tensor in tensors:
                if numpy_can(tensor):  # on a CPU in NumPy: one call, no torch call right after a forward
                    array = tensor.numpy()  # [..., capacity, D]; NumPy buffers overlapping ranges itself
                    if consecutive:
                        kept = slice(past_length + source, past_length + source + run)
                    else:
                        kept = [past_length + s for _, s in moved]
                    array[..., past_length + target : past_length + target + run, :] = array[..., kept, :]
                    continue
                axis = tensor.dim() - 2  # the position axis
                if consecutive:  # through a temporary: the two ranges may overlap
                    kept = tensor.narrow(axis, past_length + source, run).clone()
                    tensor.narrow(axis, past_length + target, run).copy_(kept)
                    continue
                sources = torch.tensor([past_length + s for _, s in moved], device=tensor.device)
                targets = torch.tensor([past_length + o for o, _ in moved], device=tensor.device)
                tensor.index_copy_(axis, targets, tensor.index_select(axis, sources))
        self.length = past_length + 1 + len(slots)

    def load(self, cache: DynamicCache) -> None:
        """Take a filled dynamic cache's states (the prefill's) as the committed prefix."""
        for index, layer in enumerate(cache.layers):
            keys, values = layer.keys, layer.values  # [B, H_kv, T, D]
            store = self._layer(index, keys)
            self.checked.add(index)
            store[0, :, :, : keys.shape[2]] = keys
            store[1, :, :, : values.shape[2]] = values
        self.length = cache.get_seq_length()

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def _layer(self, index: int, like: torch.Tensor) -> torch.Tensor:  # [2, B, H_kv, capacity, D]
        """Layer ``index``'s tensor, allocated at first sight of states ``like # [B, H_kv, q, D]``:
        the shared block at the first layer seen, a tensor of its own for a layer that differs."""
        store = self.store.get(index)
        if store is not None and self._fits(store, like):
            return store
        if self.block is None and self.layer_count and 0 <= index < self.layer_count:
            self.block = self._allocate((self.layer_count, 2, *like.shape[:2], self.capacity, like.shape[-1]), like)
            self.store = dict(enumerate(self.block))
            return self.store[index]
        store = self._allocate((2, *like.shape[:2], self.capacity, like.shape[-1]), like)  # this layer differs
        self.store[index] = store
        self.mixed = True
        return store

    @staticmethod
    def _fits(store: torch.Tensor, like: torch.Tensor) -> bool:
        return (store.shape[1:3] == like.shape[:2] and store.shape[-1] == like.shape[-1]
                and store.dtype == like.dtype and store.device == like.device)

    @staticmethod
    def _allocate(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        store = torch.zeros(shape, dtype=like.dtype, device=like.device)
        if not torch.compiler.is_compiling():
            torch._dynamo.mark_static_address(store)  # updated in place: no copies, CUDA graphs allowed
        return store

    def crop(self, max_length: int) -> None:
        self.length = max_length if max_length >= 0 else self.length + max_length
