"""Fair, reusable measurement of decoding methods: one ``Record`` per (prompt, method).

Glossary:
    method         something that decodes: plain greedy ``generate`` (the baseline), Hugging Face
                   prompt lookup, or our engine with one ``LookaheadConfig``.
    forward        one call of the model's ``forward``, counted by a hook on the model, the same
                   way for every method. The first forward of a run starts from an empty KV cache:
                   it is the prefill (HF's prefill also yields the first token; ours does not).
    step           a decoding forward: every forward after the prefill.
    emitted        the tokens one step commits (accepted draft tokens + the bonus token). Read off
                   the hook as growth of the KV cache between forwards, so it is the same measure
                   for every method (for the engine it equals ``stats.emitted_per_step``).
    identical      the output token ids equal the baseline's (compared, never assumed).

Example (greedy, a 11-token prompt, 8 new tokens, no EOS): forwards = 8 (the prefill, which yields
token 1, then 7 one-token steps), steps = 7, emitted_per_step = [1] * 7, tokens_per_step = 1.0,
tokens_per_forward = 1.0. The engine on the same prompt: a prefill over 10 tokens (the last prompt
token is fed with step 1), then e.g. steps emitting [1, 3, 1, 2, 1]: forwards = 6, steps = 5,
tokens_per_step = 1.6.

Fair timing (``run_interleaved``): every method is warmed up first; for each prompt the methods run
back to back in the same process with the same thread count (the starting method rotates from
prompt to prompt so none always runs first); each run is timed under ``torch.inference_mode`` with
the device synchronised at both ends; with ``repeats > 1`` a record keeps the median wall time.

This module needs torch and transformers only (no optuna, no wandb, no matplotlib).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import statistics
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

import torch

from experiments.runinfo import loadavg
from framework import LookaheadConfig, LookaheadEngine
from framework.processors import eos_token_ids

BASELINE = "greedy"


# --------------------------------------------------------------------------------------------
# Records


@dataclass
class Record:
    """One method on one prompt (one turn); JSON-ready via ``to_json``."""

    prompt_id: str
    category: str
    method: str  # "greedy", "pld", "lookahead[W=5,N=4,G=5]"
    new_tokens: int
    forwards: int  # model forward calls, the prefill included
    steps: int  # decoding forwards: forwards - 1 (the prefill excluded)
    tokens_per_step: float  # mean emitted tokens per decoding step
    tokens_per_forward: float  # new_tokens / forwards
    wall_seconds: float  # median over repeats
    peak_memory_mb: float | None  # see MemoryMeter; None when not measured
    identical: bool | None  # output == baseline's output; None without a baseline
    turn: int = 0  # 0: first user turn; 1: MT-Bench's second turn
    prompt_tokens: int = 0
    fed_tokens: int = 0  # tokens fed over all forwards (the compute actually spent)
    kv_peak_tokens: int = 0  # most positions the KV cache held (+ fed) during any forward
    mismatch_at: int | None = None  # first new-token index that differs from the baseline
    stop_reason: str = ""  # "eos" or "length"
    wall_seconds_all: list[float] = field(default_factory=list)  # one per repeat
    emitted_per_step: list[int] = field(default_factory=list)  # tokens each step committed (accepted + bonus)
    sources: dict[str, int] = field(default_factory=dict)  # lookahead: winning drafts' origins
    loadavg_1m: float | None = None  # os.getloadavg()[0] right after the run
    output_ids: list[int] | None = None  # new tokens only
    host_ms: float | None = None  # lookahead: wall time per step outside the model (framework/output.py)
    scheduler: dict[str, float] = field(default_factory=dict)  # lookahead: the scheduler's summary()
    source_fed: dict[str, int] = field(default_factory=dict)  # lookahead: draft-tree nodes fed per source
    source_accepted: dict[str, int] = field(default_factory=dict)  # lookahead: accepted draft tokens per source
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_json(self, with_outputs: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["tokens_per_second"] = self.tokens_per_second
        if not with_outputs:
            data.pop("output_ids")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Record":
        if "accepted_per_step" in data:  # records written before the field's rename (same meaning)
            data = {**data, "emitted_per_step": data["accepted_per_step"]}
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class PromptInput:
    """What a method decodes: token ids ``[1, T]`` with their labels."""

    prompt_id: str
    category: str
    input_ids: torch.Tensor  # [1, T]
    turn: int = 0


# --------------------------------------------------------------------------------------------
# Methods


class Method(Protocol):
    """A decoding method. ``run`` returns ``(sequences # [1, T + new], DecodeStats or None)``."""

    name: str
    config: dict[str, Any]

    def run(self, model, input_ids: torch.Tensor, max_new_tokens: int) -> tuple[torch.Tensor, Any]: ...


def _hf_generate(model, input_ids: torch.Tensor, max_new_tokens: int, **extra) -> torch.Tensor:
    return model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),  # no padding: a prompt holding the pad id stays unmasked
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        eos_token_id=eos_token_ids(model.generation_config),
        do_sample=False,
        num_beams=1,
        **extra,
    )  # [1, T + new]


class GreedyMethod:
    """Plain Hugging Face greedy ``generate``: one forward per token. The baseline."""

    name = BASELINE

    def __init__(self) -> None:
        self.config: dict[str, Any] = {"method": "greedy"}

    def run(self, model, input_ids, max_new_tokens):
        return _hf_generate(model, input_ids, max_new_tokens), None


class StaticGreedyMethod:
    """Hugging Face greedy with a static KV cache (``cache_implementation="static"``), which
    transformers compiles on CUDA by itself: the fair autoregressive baseline on a GPU. On a CPU it
    runs eager (transformers compiles only on accelerators)."""

    name = "greedy-static"

    def __init__(self) -> None:
        self.config: dict[str, Any] = {"method": "greedy-static"}

    def run(self, model, input_ids, max_new_tokens):
        return _hf_generate(model, input_ids, max_new_tokens, cache_implementation="static"), None


class PromptLookupMethod:
    """Hugging Face prompt lookup decoding (``prompt_lookup_num_tokens``): drafts copied from
    the context after the latest match of its last ``max_ngram_size`` tokens, verified greedily."""

    def __init__(self, num_tokens: int = 10, max_ngram_size: int = 2, name: str = "pld") -> None:
        if num_tokens < 1 or max_ngram_size < 1:
            raise ValueError(f"pld: num_tokens and max_ngram_size must be >= 1, got {num_tokens}, {max_ngram_size}")
        self.name = name
        self.num_tokens, self.max_ngram_size = num_tokens, max_ngram_size
        self.config = {"method": "pld", "num_tokens": num_tokens, "max_ngram_size": max_ngram_size}

    def run(self, model, input_ids, max_new_tokens):
        sequences = _hf_generate(
            model, input_ids, max_new_tokens,
            prompt_lookup_num_tokens=self.num_tokens, max_matching_ngram_size=self.max_ngram_size,
        )
        return sequences, None


class LookaheadMethod:
    """Our engine with one config. One engine per (method, model), reused across prompts, so a
    pool with ``persist=True`` carries over from prompt to prompt as it would in a server."""

    def __init__(self, config: LookaheadConfig | dict | None = None, name: str | None = None,
                 compile: bool = False) -> None:
        if config is None:
            config = LookaheadConfig()
        elif isinstance(config, dict):
            config = LookaheadConfig.model_validate(config)
        self.lookahead_config = config
        self.name = name or f"lookahead[{config_label(config)}]"
        self.config = {"method": "lookahead", **dump_config(config)}
        self.compile = compile
        if compile:
            self.name += " compiled" if name is None else ""
            self.config["compile"] = True
        self._engine: LookaheadEngine | None = None

    def engine(self, model) -> LookaheadEngine:
        if self._engine is None or self._engine.model is not model:
            self._engine = LookaheadEngine(model, self.lookahead_config, compile=self.compile)
        return self._engine

    def run(self, model, input_ids, max_new_tokens):
        out = self.engine(model).generate(input_ids, max_new_tokens=max_new_tokens,
                                          eos_token_id=eos_token_ids(model.generation_config))
        return out.sequences, out.stats


def config_label(config: LookaheadConfig) -> str:
    """``W=2 N=4 G=3`` plus every other value that differs from the defaults, strategy
    parameters included: ``W=2 N=4 G=3 pool=lfu(capacity=8,seed_from_prompt=False)``."""
    data, default = dump_config(config), dump_config(LookaheadConfig())
    parts = [f"W={config.window}", f"N={config.ngram}", f"G={config.guess_set}"]
    for key, value in data.items():
        if key in ("window", "ngram", "guess_set") or value == default.get(key):
            continue
        if isinstance(value, dict):  # a strategy block: its name, then params off that strategy's defaults
            parts.append(f"{key}={_block_label(key, value)}")
        elif key == "sources":
            parts.append("sources=" + "+".join(_block_label(key, block) for block in value))
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _block_label(field: str, block: dict[str, Any]) -> str:
    """``lfu(capacity=8)``: a strategy's name and the params that differ from its defaults."""
    default = {"name": block["name"]}
    base = dump_config(LookaheadConfig.model_validate({field: [default] if field == "sources" else default}))[field]
    base = base[0] if field == "sources" else base
    extra = ",".join(f"{k}={v}" for k, v in block.items() if k != "name" and base.get(k) != v)
    return block["name"] + (f"({extra})" if extra else "")


def dump_config(config: LookaheadConfig) -> dict[str, Any]:
    """The config as JSON-ready data, every strategy's own params included."""
    return config.model_dump(mode="json", serialize_as_any=True)


# --------------------------------------------------------------------------------------------
# Instruments


class ForwardCounter:
    """Counts the model's forward calls with a pre-hook and notes, per call, the tokens fed and
    the KV cache length before it (``past``). Use as a context manager around one run.

    The hook sits on the decoder body (``model.base_model``), which every forward runs, whether
    through the LM wrapper (plain and prompt-lookup generate) or directly (the engine projects
    rows to the vocabulary on demand and calls the body itself)."""

    def __init__(self, model) -> None:
        self.model = model
        self.fed: list[int] = []
        self.past: list[int | None] = []
        self._handle = None

    def __enter__(self) -> "ForwardCounter":
        body = getattr(self.model, "base_model", None) or self.model
        self._handle = body.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _hook(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:  # inputs_embeds
            ids = kwargs["inputs_embeds"]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # 5.24 renamed past_key_values
        self.fed.append(int(ids.shape[1]))
        self.past.append(_cache_length(cache))

    @property
    def forwards(self) -> int:
        return len(self.fed)

    def emitted_per_step(self, prompt_tokens: int, new_tokens: int) -> list[int] | None:
        """Tokens committed by each forward after the prefill, from the cache growth.

        Before forward i > 0 the cache holds every committed token but the last (the root), so
        forward i commits ``past[i+1] - past[i]`` tokens; the last one commits up to the final
        length. None when a cache length could not be read.
        """
        if not self.past or any(p is None for p in self.past[1:]):
            return None
        ends = self.past[2:] + [prompt_tokens + new_tokens - 1]
        return [end - start for start, end in zip(self.past[1:], ends)]

    def kv_peak_tokens(self) -> int:
        return max((p or 0) + f for p, f in zip(self.past, self.fed)) if self.fed else 0


def _cache_length(cache) -> int | None:
    """Positions in the KV cache; 0 without one; None if it cannot be read."""
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return None


class MemoryMeter:
    """Peak memory of one run above its start, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (exact, the
    caching allocator's view). CPU: a background thread samples the process RSS every
    ``interval`` seconds; freed heap is first handed back to the OS (glibc ``malloc_trim``) so
    that the run's own allocations show up as growth. Peaks shorter than the interval can be
    missed, and other threads of this process count too: an estimate, good for comparing methods.
    """

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mb: float | None = None
        self._start = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "MemoryMeter":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        _trim_heap()
        self._start = self._peak = _rss_bytes()
        if self._start is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
            return
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes() or 0)
        self.peak_mb = max(self._peak - self._start, 0) / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes() or 0)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_LIBC = None


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _trim_heap() -> None:
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------
# Measuring


@torch.inference_mode()
def measure(
    model,
    method: Method,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    baseline_ids: torch.Tensor | Sequence[int] | None = None,
    prompt_id: str = "",
    category: str = "",
    turn: int = 0,
    track_memory: bool = True,
) -> Record:
    """Run ``method`` once on ``input_ids # [1, T]`` and measure it.

    baseline_ids: the baseline's new tokens (or its whole ``[1, T + n]`` sequence); when given,
    ``identical`` and ``mismatch_at`` are computed against it.
    """
    device = model.device
    input_ids = input_ids.to(device)
    prompt_tokens = input_ids.shape[1]
    meter = MemoryMeter(device) if track_memory else None
    with ForwardCounter(model) as counter, meter or contextlib.nullcontext():
        _sync(device)
        start = time.perf_counter()
        sequences, stats = method.run(model, input_ids, max_new_tokens)
        _sync(device)
        wall = time.perf_counter() - start
    output = sequences[0, prompt_tokens:].tolist()
    record = _record(method, counter, stats, output, prompt_tokens, max_new_tokens, wall)
    record.prompt_id, record.category, record.turn = str(prompt_id), category, turn
    record.peak_memory_mb = meter.peak_mb if meter is not None else None
    record.loadavg_1m = (loadavg() or [None])[0]
    if baseline_ids is not None:
        compare(record, baseline_ids, prompt_tokens)
    return record


def _record(method, counter: ForwardCounter, stats, output: list[int], prompt_tokens: int,
            max_new_tokens: int, wall: float) -> Record:
    new_tokens = len(output)
    emitted = counter.emitted_per_step(prompt_tokens, new_tokens)
    if stats is not None:  # the engine's own count; the hook's must agree (tested)
        emitted = list(stats.emitted_per_step)
    emitted = emitted or []
    forwards, fed, kv_peak = counter.forwards, sum(counter.fed), counter.kv_peak_tokens()
    host_ms = None
    if stats is not None:  # the engine's own count (a compiled engine's forwards skip module hooks)
        host_ms = stats.host_ms_per_step if stats.steps else None
        forwards = stats.steps + bool(stats.prefill_tokens)
        fed = stats.prefill_tokens + sum(stats.fed_tokens)
        if counter.forwards <= 1:  # compiled: the hook saw the prefill only; an upper bound
            kv_peak = max(kv_peak, prompt_tokens - 1 + max(stats.fed_tokens, default=0) + new_tokens)
    steps = max(forwards - 1, 0)
    return Record(
        prompt_id="", category="", method=method.name, new_tokens=new_tokens,
        forwards=forwards, steps=steps,
        tokens_per_step=sum(emitted) / len(emitted) if emitted else 0.0,
        tokens_per_forward=new_tokens / forwards if forwards else 0.0,
        wall_seconds=wall, peak_memory_mb=None, identical=None, host_ms=host_ms,
        prompt_tokens=prompt_tokens, fed_tokens=fed, kv_peak_tokens=kv_peak,
        stop_reason="length" if new_tokens >= max_new_tokens else "eos",
        wall_seconds_all=[wall], emitted_per_step=emitted,
        sources=dict(Counter(stats.sources)) if stats is not None else {},
        scheduler=dict(stats.scheduler) if stats is not None else {},
        source_fed=dict(stats.fed) if stats is not None else {},
        source_accepted=dict(stats.accepted_from) if stats is not None else {},
        output_ids=output, config=dict(method.config),
    )


def compare(record: Record, baseline_ids: torch.Tensor | Sequence[int], prompt_tokens: int | None = None) -> None:
    """Set ``record.identical`` and ``record.mismatch_at`` against the baseline.

    baseline_ids: the baseline's new tokens (a list or 1-D tensor), or its whole sequence as a
    ``[1, T + n]`` tensor, whose first ``prompt_tokens`` (default ``record.prompt_tokens``) are cut.
    """
    if isinstance(baseline_ids, torch.Tensor) and baseline_ids.dim() == 2:
        cut = record.prompt_tokens if prompt_tokens is None else prompt_tokens
        baseline_ids = baseline_ids[0, cut:]
    baseline = baseline_ids.tolist() if isinstance(baseline_ids, torch.Tensor) else list(baseline_ids)
    record.mismatch_at = _first_difference(record.output_ids or [], baseline)
    record.identical = record.mismatch_at is None


def _first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def warm_up(model, methods: Sequence[Method], input_ids: torch.Tensor, max_new_tokens: int, runs: int = 1) -> None:
    """Run every method ``runs`` times, unrecorded: first-call costs (weights paging in, kernel
    selection, lazy imports, allocator growth) stay out of the measurements."""
    with torch.inference_mode():
        for _ in range(runs):
            for method in methods:
                method.run(model, input_ids.to(model.device), max_new_tokens)


def run_prompt(
    model,
    methods: Sequence[Method],
    prompt: PromptInput,
    max_new_tokens: int,
    *,
    repeats: int = 1,
    rotate: int = 0,
    baseline: str = BASELINE,
    track_memory: bool = True,
) -> list[Record]:
    """All methods on one prompt, interleaved: each repeat runs every method once, starting at
    method ``rotate + repeat`` (mod the count). Returns one record per method, in ``methods``
    order, with the median wall time over repeats and ``identical`` against ``baseline``'s
    output (a record is identical only if every repeat's output was)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    runs: dict[str, list[Record]] = {method.name: [] for method in methods}
    if len(runs) != len(methods):
        raise ValueError(f"method names must be unique, got {[m.name for m in methods]}")
    for repeat in range(repeats):
        first = (rotate + repeat) % len(methods)
        for method in list(methods[first:]) + list(methods[:first]):
            runs[method.name].append(measure(
                model, method, prompt.input_ids, max_new_tokens,
                prompt_id=prompt.prompt_id, category=prompt.category, turn=prompt.turn, track_memory=track_memory,
            ))
    reference = runs[baseline][0].output_ids if baseline in runs else None
    return [_merge(runs[method.name], reference) for method in methods]


def _merge(repeats: list[Record], reference: list[int] | None) -> Record:
    record = repeats[0]
    record.wall_seconds_all = [r.wall_seconds for r in repeats]
    record.wall_seconds = statistics.median(record.wall_seconds_all)
    peaks = [r.peak_memory_mb for r in repeats if r.peak_memory_mb is not None]
    record.peak_memory_mb = max(peaks) if peaks else None
    if reference is not None:
        for run in repeats:
            compare(run, reference)
        worst = next((r for r in repeats if not r.identical), record)
        record.identical, record.mismatch_at = worst.identical, worst.mismatch_at
    return record


def run_interleaved(
    model,
    methods: Sequence[Method],
    prompts: Iterable[PromptInput],
    max_new_tokens: int,
    *,
    warmup: int = 1,
    repeats: int = 1,
    baseline: str = BASELINE,
    track_memory: bool = True,
    on_record: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Warm up on the first prompt, then ``run_prompt`` on each prompt (the starting method
    rotates from prompt to prompt). ``on_record`` sees each record as soon as its prompt is done."""
    prompts = list(prompts)
    if prompts and warmup > 0:
        warm_up(model, methods, prompts[0].input_ids, max_new_tokens, warmup)
    records: list[Record] = []
    for index, prompt in enumerate(prompts):
        for record in run_prompt(model, methods, prompt, max_new_tokens, repeats=repeats, rotate=index,
                                 baseline=baseline, track_memory=track_memory):
            records.append(record)
            if on_record is not None:
                on_record(record)
    return records


# --------------------------------------------------------------------------------------------
# Summaries


OVERALL = "Overall"


@dataclass
class Summary:
    """One (category, method) cell of the report.

    tokens_per_step:  emitted tokens per decoding step (accepted + bonus), pooled over all steps of all prompts.
    speedup:          median over prompts of (baseline's wall / this method's wall) on the same
                      prompt; each wall is already a median over repeats.
    identical:        share of prompts whose output equals the baseline's (None: no baseline).
    tokens_per_second: total new tokens / total wall seconds.
    peak_memory_mb:   the highest peak over the prompts (None: not measured).
    The one aggregation of records: bench tables, sweep trials and held-out checks all use it.
    """

    category: str
    method: str
    prompts: int
    new_tokens: int
    tokens_per_step: float
    tokens_per_forward: float
    speedup: float | None
    identical: float | None
    tokens_per_second: float
    peak_memory_mb: float | None
    ms_per_step: float | None = None  # wall (prefill included) per decoding step
    host_ms: float | None = None  # lookahead: engine time per step outside the model, step-weighted


def summarize(records: Sequence[Record], *, baseline: str = BASELINE,
              categories: Sequence[str] | None = None) -> list[Summary]:
    """One ``Summary`` per (category, method), categories in ``categories`` order (default: first
    seen), then the ``OVERALL`` rows over every prompt."""
    methods = list(dict.fromkeys(r.method for r in records))
    seen = list(dict.fromkeys(r.category for r in records))
    order = [c for c in categories or () if c in seen]
    order += [c for c in seen if c not in order]
    base = {(r.prompt_id, r.turn): r for r in records if r.method == baseline}
    rows = []
    for category in order + [OVERALL]:
        for method in methods:
            chosen = [r for r in records if r.method == method and category in (OVERALL, r.category)]
            if chosen:
                rows.append(_summary(category, method, chosen, base))
    return rows


def _summary(category: str, method: str, records: list[Record], base: dict) -> Summary:
    steps = [a for r in records for a in r.emitted_per_step]
    ratios = [base[(r.prompt_id, r.turn)].wall_seconds / r.wall_seconds
              for r in records if (r.prompt_id, r.turn) in base and r.wall_seconds > 0]
    flags = [r.identical for r in records if r.identical is not None]
    forwards = sum(r.forwards for r in records)
    seconds = sum(r.wall_seconds for r in records)
    new_tokens = sum(r.new_tokens for r in records)
    memory = [r.peak_memory_mb for r in records if r.peak_memory_mb is not None]
    hosted = [(r.host_ms, r.steps) for r in records if r.host_ms is not None and r.steps]
    return Summary(
        category=category, method=method, prompts=len(records), new_tokens=new_tokens,
        tokens_per_step=sum(steps) / len(steps) if steps else 0.0,
        tokens_per_forward=new_tokens / forwards if forwards else 0.0,
        speedup=statistics.median(ratios) if ratios else None,
        identical=sum(flags) / len(flags) if flags else None,
        tokens_per_second=new_tokens / seconds if seconds > 0 else 0.0,
        peak_memory_mb=max(memory) if memory else None,
        ms_per_step=1000 * seconds / len(steps) if steps else None,
        host_ms=sum(h * n for h, n in hosted) / sum(n for _, n in hosted) if hosted else None,
    )
