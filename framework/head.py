"""Logits on demand: run the model's body once, project rows to the vocabulary only when read.

A 135M model's vocabulary projection (49k x 576) costs about a fifth of a multi-token step on a
CPU. Greedy verification reads at most L+1 draft rows (it walks down the draft tree along the
model's own choices), so projecting every node is wasted work. This is only done for
architectures whose logits are exactly ``lm_head(last_hidden_state)``; any other model gets the
full forward with ``logits_to_keep``.
"""

from __future__ import annotations

import time
from itertools import repeat

import numpy as np
import torch

from framework.argmax import argmax_list, numpy_can

# model types whose CausalLM forward is `logits = self.lm_head(hidden_states)` (read in transformers
# 5.24; a new type joins only after its modeling file is read the same way)
PLAIN_HEAD_MODEL_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "phi3", "gpt_neox", "gpt2", "gemma3_text", "smollm3", "olmo2"}
)
SCALING_FIELDS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def split_head(model):
    """``(body, head)`` if logits are exactly ``head(body(...).last_hidden_state)``, else None."""
    config = model.config
    if config.model_type not in PLAIN_HEAD_MODEL_TYPES:
        return None
    if any(getattr(config, field, None) is not None for field in SCALING_FIELDS):
        return None
    body = getattr(model, "base_model", None)
    head = model.get_output_embeddings()
    if body is None or body is model or head is None:
        return None
    return body, head


class RowHead:
    """The LM head as the engine applies it to a few rows. On a CPU a plain linear head ``[V, H]``
    projects ``k`` rows three ways, each the fastest for its ``k`` on this project's 2-core machine
    (MKL, 2 threads, SmolLM2's 49k x 576 head; ``python -m experiments.head_layout --threads 2``,
    numbers in docs/results.md):

        k = 1                 ``rows @ W^T`` through a ``[H, V]`` copy of the weight (about half the
                              module's time: one pass over the weight)
        2 <= k <= MAX_ROWS    ``W @ rows^T`` in chunks of ``chunk`` vocabulary rows into a ``[V, k]``
                              block, then transposed to ``[k, V]`` (by NumPy on this thread, so
                              the argmax that follows reads rows still in its caches): the
                              module's own ``rows @ W^T`` with few rows was two to five times
                              slower here
        k > MAX_ROWS          the module

    The results equal the module's to float rounding (summation order differs). The copy costs
    the head's size in memory once; elsewhere (CUDA) the module runs as it is. Built per engine:
    retrain the weights, rebuild it.
    """

    MAX_ROWS = 32  # rows projected as [V, k]; more go through the module
    FREE_ROWS = 4  # rows that cost about what one does ([V, k] chunks): a caller may fill a call up to it

    def __init__(self, head, chunk: int = 4096) -> None:
        self.head = head
        self.chunk = chunk  # vocabulary rows per matrix product of the [V, k] path
        weight = getattr(head, "weight", None)
        plain = isinstance(head, torch.nn.Linear) and weight is not None and weight.device.type == "cpu"
        self.weight = weight.detach() if plain else None  # [V, H]
        self.weight_t = weight.detach().t().contiguous() if plain else None  # [H, V]
        self.bias = head.bias.detach() if plain and head.bias is not None else None
        self.free_rows = self.FREE_ROWS if plain else 1

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:  # [k, H] -> [k, V]
        count = rows.shape[0]
        if self.weight is None or count > self.MAX_ROWS or count == 0:
            return self.head(rows)
        return self.by_copy(rows) if count == 1 else self.by_chunks(rows)

    def by_copy(self, rows: torch.Tensor) -> torch.Tensor:  # [k, H] -> [k, V]
        logits = rows @ self.weight_t
        return logits if self.bias is None else logits + self.bias

    def by_chunks(self, rows: torch.Tensor) -> torch.Tensor:  # [k, H] -> [k, V]
        vocab = self.weight.shape[0]
        block = torch.empty(vocab, rows.shape[0], dtype=rows.dtype)  # [V, k]
        columns = rows.t()  # [H, k]
        for start in range(0, vocab, self.chunk):
            torch.mm(self.weight[start : start + self.chunk], columns, out=block[start : start + self.chunk])
        if self.bias is not None:
            block += self.bias[:, None]
        if numpy_can(block):  # NumPy's transposing copy runs on this thread: the argmax after it finds
            return torch.from_numpy(np.ascontiguousarray(block.numpy().T))  # the rows in its caches
        return block.t().contiguous()


class StepOutputs:
    """Per-slot logits of one step, from kept logits rows or from hidden states on demand.
    Time spent projecting rows counts as model time (``stats.model_seconds``) when stats are given;
    argmaxes are the engine's time.

    ``project(slots)`` projects several rows in one head call and keeps them: a step that will read
    the root and the window's top level anyway pays one call (on a CPU the head is bound by reading
    its weight, so 16 rows cost about what 15 do). ``choices(slots)`` are the argmaxes of slots'
    logits, computed for a whole kept block in one pass (logits just written by the head are no
    longer in cache: one read instead of one per row) and kept.
    """

    def __init__(self, rows: torch.Tensor | np.ndarray, slot_rows: dict[int, int] | None, head=None, stats=None,
                 companions=None) -> None:
        # [R, V] kept logits, or [q, H] hidden states when head is set: a tensor, or for hidden
        # states on a CPU a NumPy view (rows are picked in NumPy: a fraction of a torch index's
        # cost right after a forward, caches flushed)
        self.rows = rows
        self._array = rows if isinstance(rows, np.ndarray) else None
        # the head's output has the rows' dtype
        self._float = rows.dtype == (np.float32 if self._array is not None else torch.float32)
        self.slot_rows = slot_rows  # slot -> row of `rows` (None: row = slot)
        self.head = head
        self.stats = stats
        # slot, count -> up to count other slots likely read next: projected along with a slot the
        # caller asks for while the head's call has rows to spare (head.free_rows)
        self.companions = companions
        self._kept: dict[int, tuple[torch.Tensor, int]] = {}  # slot -> (projected block [k, V], row)
        self._choices: dict[int, int] = {}  # slot -> argmax of its logits

    def project(self, slots: list[int] | range) -> None:
        """Project ``slots`` together now and keep their logits and argmaxes for ``logits`` and
        ``choices``."""
        slots = list(slots)
        if self.head is not None and slots:  # (kept logits: nothing to project)
            self._keep(slots, choices=True)

    def logits(self, slots: list[int] | range) -> torch.Tensor:  # [k, V] float32
        """The slots' logits: from a kept block when they are all in one, else projected (and kept)."""
        slots = list(slots)
        kept = [self._kept.get(slot) for slot in slots]
        if slots and all(k is not None and k[0] is kept[0][0] for k in kept):  # all in one kept block
            block, rows = kept[0][0], [k[1] for k in kept]
            return block[rows[0] : rows[0] + len(rows)] if rows == list(range(rows[0], rows[0] + len(rows))) \
                else block[rows]
        return self._keep(self._with_companions(slots))[: len(slots)]

    def choices(self, slots: list[int] | range) -> list[int]:
        """``argmax`` of each slot's logits (the first maximal index): one pass over each kept block
        holding a slot without one, the other slots projected first; all kept for later calls."""
        slots = list(slots)
        missing = [slot for slot in slots if slot not in self._choices]
        if not missing:  # the common case: argmaxes taken with their block
            return [self._choices[slot] for slot in slots]
        blocks = {id(self._kept[s][0]): self._kept[s][0] for s in missing if s in self._kept}
        for block in blocks.values():
            tokens = argmax_list(block)
            self._choices.update((s, tokens[row]) for s, (b, row) in self._kept.items() if b is block)
        loose = [slot for slot in missing if slot not in self._kept]
        if loose:
            self._keep(self._with_companions(loose), choices=True)
        return [self._choices[slot] for slot in slots]

    def _with_companions(self, slots: list[int]) -> list[int]:
        """``slots`` and, up to the rows a head call has to spare, the slots likely read after them."""
        spare = (getattr(self.head, "free_rows", 1) - len(slots)) if self.companions is not None else 0
        if spare <= 0:
            return slots
        extra = [s for s in self.companions(slots[-1], spare + len(slots)) if s not in self._kept and s not in slots]
        return slots + extra[:spare]

    def _keep(self, slots: list[int], choices: bool = False) -> torch.Tensor:  # [k, V]
        block = self._compute(slots)
        self._kept.update(zip(slots, zip(repeat(block), range(len(slots)))))
        if choices:
            self._choices.update(zip(slots, argmax_list(block)))
        return block

    def _compute(self, slots: list[int]) -> torch.Tensor:  # [k, V]
        index = slots if self.slot_rows is None else [self.slot_rows[s] for s in slots]
        if self._array is not None:
            picked = torch.from_numpy(self._array[index])
        elif self.head is not None and index and index == list(range(index[0], index[0] + len(index))):
            picked = self.rows[index[0] : index[0] + len(index)]  # consecutive hidden rows: a view
        else:
            picked = self.rows[index]  # a list index: torch builds the index tensor itself
        if self.head is not None:
            start = time.perf_counter()
            picked = self.head(picked)
            if self.stats is not None:
                self.stats.model_seconds += time.perf_counter() - start
        return picked if self._float else picked.float()
