"""How a step's forward runs: eager at its own size, or compiled at a fixed size.

Eager (the default), a step feeds exactly its tokens (root + draft tree + window) and attends the
cached prefix plus itself: shapes change every step, which costs nothing in eager mode.

Compiled (``LookaheadEngine(model, config, compile=True)``), the forward runs through
``torch.compile`` (CUDA graphs on a GPU: ``mode="reduce-overhead"``) and must see few shapes. A
step then has one of two sizes: 1 (the root alone, when nothing is drafted) or the config's
largest step (``LookaheadConfig.step_tokens()``, padded to a multiple of 8 on CUDA); padding slots
repeat the root, attend like it and are never read. Attention spans the whole preallocated cache
(``StepCache``), the step's mask hiding what is not the prefix or an ancestor. So a config
compiles twice, once per size, whatever its prompts and drafts (the KV cache grows, a rare third
shape, only when a call needs more positions than any before).
"""

from __future__ import annotations

import time

import torch

CUDA_MULTIPLE = 8  # SDPA on H200 is slower for token counts off a multiple of 8 (NOTES)
CAPACITY_STEP = {False: 256, True: 1024}  # KV positions are allocated in these steps (compiled: fewer shapes)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class StepShapes:
    """The sizes a config's steps take and the callables that run them."""

    def __init__(self, model, config, compile: bool, split) -> None:
        self.compiled = bool(compile)
        self.cuda = model.device.type == "cuda"
        largest = config.step_tokens()
        self.largest = round_up(largest, CUDA_MULTIPLE) if self.compiled and self.cuda else largest
        self._split = split
        self._model = model
        if self.compiled:
            mode = "reduce-overhead" if self.cuda else None
            self._body = torch.compile(self._run_body, dynamic=False, mode=mode)
            self._full = torch.compile(self._run_model, dynamic=False, mode=mode)
        else:
            self._body, self._full = self._run_body, self._run_model

    @property
    def sizes(self) -> tuple[int, ...]:
        """The sizes a compiled step takes."""
        return (1, self.largest)

    def size(self, fed: int) -> int:
        """Tokens the forward feeds for a step of ``fed`` tokens."""
        if not self.compiled:
            return fed
        if fed > self.largest:
            raise ValueError(f"a step of {fed} tokens exceeds the compiled step size {self.largest}")
        return 1 if fed == 1 else self.largest

    def capacity(self, positions: int) -> int:
        """KV positions to allocate for calls that need ``positions``."""
        return round_up(positions, CAPACITY_STEP[self.compiled])

    def body(self, inputs: dict, eager: bool = False) -> torch.Tensor:  # [1, size, H]
        return (self._run_body if eager else self._body)(inputs)

    def model(self, inputs: dict, eager: bool = False) -> torch.Tensor:  # [1, rows, V]
        return (self._run_model if eager else self._full)(inputs)

    def elapsed(self, start: float) -> float:
        """Seconds since ``start``, the device's queued work included."""
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    # Compiled, the module's forward runs without its hooks: a hook with side effects (the
    # harness's forward counter) would be traced into the graph and recompile it every call; the
    # engine's stats then count the forwards (DecodeStats.steps, fed_tokens).
    def _run_body(self, inputs: dict) -> torch.Tensor:
        body = self._split[0]
        return (body.forward if self.compiled else body)(**inputs).last_hidden_state

    def _run_model(self, inputs: dict) -> torch.Tensor:
        return (self._model.forward if self.compiled else self._model)(**inputs).logits
