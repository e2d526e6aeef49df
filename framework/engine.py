"""The lookahead decoding engine: one forward pass per step, two branches, exact output.

Glossary (docs/design.md has the paper-symbol table and a worked layout):
    root        the current token: the last committed token, not yet in the KV cache.
    window      the lookahead branch (N-1 levels x W columns of guesses, Jacobi-updated).
    draft       a candidate continuation of the root offered by a draft source (the n-gram pool's
                are N-1 tokens; suffix and recycling drafts have any length).
    draft tree  every source's candidates merged by shared prefixes, the best ``draft_budget``
                nodes by estimated acceptance (framework/planner.py): the verification branch.
    verdict     the verifier's choice: accepted draft tokens + one bonus token ("emitted").

Example of one greedy step (N=3): committed "... the", root "the"; the pool offers drafts
["cat", "sat"] and ["dog", "ran"]. The forward pass predicts "cat" after the root, "sat" after
"cat" and "on" after "sat"; the step commits "cat sat on" (2 accepted + bonus), keeps the KV of
"the cat sat" and "on" becomes the root. Meanwhile the window's top level gave a new level and
its columns gave new n-grams for the pool.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessorList

from framework.argmax import NUMPY_DTYPES
from framework.attention import MaskBuilder
from framework.config import LookaheadConfig
from framework.costs import CostModel, cache_file, cache_key, calibrate, calibration_sizes
from framework.head import RowHead, StepOutputs, split_head
from framework.kv import StepCache, accepts_logits_to_keep, cache_argument, new_cache
from framework.layout import DraftTree, StepLayout, likely_below, step_layout
from framework.output import DecodeStats, LookaheadOutput
from framework.planner import plan_tree
from framework.shapes import StepShapes
from framework.processors import build_processors, eos_token_ids, score_rows
from framework.sampling import SamplingSettings, resolve_sampling
from framework.window import Window
from strategies.base import SOURCE_NONE, FedNode, StepOutcome, StepRecord, Verdict, Verifier, lookup, registered


def position_limit(model_config) -> int | None:
    """Largest number of positions the model can address (learned tables index out of range past it)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass
class Run:
    """The state of one generate() call."""

    tokens: list[int]  # committed ids: prompt + new; the last one is the root
    prompt_length: int
    max_new_tokens: int
    eos: frozenset[int]
    window: Window
    processors: LogitsProcessorList  # generation-config processors: row by row, in each row's context
    warpers: LogitsProcessorList  # sampling warpers: context-free, applied to all rows at once
    verifier: Verifier
    streamer: Any = None  # anything with put(tensor) / end(), e.g. transformers.TextStreamer
    generator: torch.Generator | None = None
    finished: bool = False
    stats: DecodeStats = field(default_factory=DecodeStats)
    history: list[StepRecord] = field(default_factory=list)

    @property
    def root(self) -> int:
        return self.tokens[-1]

    @property
    def past_length(self) -> int:  # tokens in the KV cache: everything but the root
        return len(self.tokens) - 1

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - (len(self.tokens) - self.prompt_length)

    def context(self) -> torch.Tensor:  # [T]
        return torch.tensor(self.tokens, dtype=torch.long)


class LookaheadEngine:
    """Lookahead decoding (Fu et al., ICML 2024) around any Hugging Face decoder-only model.

    ``generate`` runs, per step: plan (window width, the draft tree from every source), one forward
    pass over root + draft tree + window, verify, update the window (harvesting n-grams), commit
    (and let every source observe the outcome).
    Greedy output is token-for-token that of ``model.generate(do_sample=False)``.
    """

    def __init__(self, model, config: LookaheadConfig | dict | None = None, *, compile: bool = False,
                 cost_model: CostModel | None = None) -> None:
        if getattr(model.config, "is_encoder_decoder", False):
            raise ValueError("model: encoder-decoder models are not supported; pass a decoder-only causal LM")
        if config is None:
            config = LookaheadConfig()
        elif isinstance(config, dict):
            config = LookaheadConfig.model_validate(config)
        elif not isinstance(config, LookaheadConfig):
            raise TypeError(f"config must be a LookaheadConfig or a dict of its fields, got {type(config).__name__} "
                            f"{config!r}; e.g. LookaheadConfig(window=4, ngram=4, guess_set=4)")
        self.model = model
        self.device = model.device  # read once: the property walks the parameters
        # On an accelerator a step projects every row it may read (root, tree, the window's top
        # level) in one head call; greedy reads their argmaxes in one transfer and the sampling
        # verifier decides every node at once: walking the tree row by row would sync with the
        # host once per level. On a CPU rows are projected as read.
        self.one_pass = self.device.type != "cpu"
        self.config = config
        self.masks = MaskBuilder(model)
        self.cache_arg = cache_argument(model)
        self.keeps_logits = accepts_logits_to_keep(model)
        split = split_head(model)  # (body, head) when logits can be projected on demand
        self.split = None if split is None else (split[0], RowHead(split[1]))
        self.host_rows = self.device.type == "cpu" and model.dtype in NUMPY_DTYPES  # hidden rows read in NumPy
        self.max_positions = position_limit(model.config)
        self.scheduler = lookup("scheduler", config.scheduler.name)(config.scheduler, window=config.window)
        self.sources = [lookup("source", block.name)(block, config=config) for block in config.sources]
        self.verifier = lookup("verifier", config.verifier.name)(config.verifier)
        self.top_k = max((getattr(source, "top_k", 0) for source in self.sources), default=0)
        self.step = StepShapes(model, config, compile, self.split)
        self.cache: StepCache | None = None  # kept across calls: fixed addresses for a compiled step
        self.costs: CostModel | None = cost_model  # calibrated at the first call if the scheduler asks

    @property
    def pool(self):
        """The n-gram pool of the ``ngram`` source (None without one)."""
        return next((source.pool for source in self.sources if hasattr(source, "pool")), None)

    # ------------------------------------------------------------------ public API
    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_id: int | list[int] | None = None,
        streamer=None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> LookaheadOutput:
        """Decode up to ``max_new_tokens`` after ``input_ids # [1, T]``; ``None`` arguments come
        from the model's generation_config, as in Hugging Face ``generate``."""
        start = time.perf_counter()
        prompt = self._check_prompt(input_ids, max_new_tokens)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or None, "
                            f"got {type(generator).__name__} {generator!r}")
        sampling = resolve_sampling(self.model.generation_config, do_sample, temperature, top_k, top_p, min_p)
        run = self._begin(prompt, max_new_tokens, eos_token_id, streamer, sampling, generator)
        decoding = time.perf_counter()
        while not run.finished:
            self._step(run)
        run.stats.decode_seconds = self.step.elapsed(decoding)
        return self._finish(run, input_ids, start)

    # ------------------------------------------------------------------ the step
    def _step(self, run: Run) -> None:
        layout, tree, offered = self._plan(run)
        outputs = self._forward(run, layout, tree)
        verdict, seen = self._verify(run, layout, tree, outputs)
        harvest = self._update_window(run, layout, outputs, seen)
        self._commit(run, layout, verdict, tree, offered, harvest, seen)

    def _plan(self, run: Run) -> tuple[StepLayout, DraftTree, Counter]:
        """The draft tree (every source's candidates, planned), then the scheduler's window width
        and draft budget for this step (by expected tokens per cost when it asks for costs)."""
        max_len = min(run.remaining - 1, self._positions_left(run))
        candidates = [c for source in self.sources for c in source.propose(run.tokens, max_len)] if max_len > 0 else []
        tree = plan_tree(candidates, self.config.draft_budget, self.config.min_score, max_len)
        width, budget = self.scheduler.plan(run.history, sorted(tree.values, reverse=True), self._step_cost,
                                            lambda w: w * (self.config.ngram - 1))
        if budget is not None and budget < tree.size:
            tree = plan_tree(candidates, budget, self.config.min_score, max_len)
        width = self._window_width(run, width)
        if width != run.window.width or not run.window.levels:
            run.window.resize(width, run.context())
        layout = step_layout(run.window.width, len(run.window.levels), tree.parents)
        return layout, tree, Counter(c.source for c in candidates)

    def _forward(self, run: Run, layout: StepLayout, tree: DraftTree) -> StepOutputs:
        tokens = [run.root, *tree.tokens, *run.window.token_list()]  # [q]
        return self._feed(tokens, layout, run.past_length, self._lazy(run), run.stats)

    def _feed(self, tokens: list[int], layout: StepLayout, past_length: int, lazy: bool,
              stats: DecodeStats) -> StepOutputs:
        """One pass over ``tokens # [q]`` laid out by ``layout`` after ``past_length`` cached
        positions (padded to the step's fixed shape when compiled). Rows are projected to the
        vocabulary only where read: on demand when the head splits off (``lazy``), else the kept
        rows (``logits_to_keep``). The inputs are built in NumPy: right after a forward (caches
        flushed) a torch call costs several times what a NumPy one does (docs/design.md)."""
        device = self.device
        size = self.step.size(layout.size)
        ids = np.array(tokens, dtype=np.int64)  # [q]
        positions = layout.depth_array + past_length  # [q]
        if size > layout.size:  # the compiled step's fixed size: padding repeats the root at its position
            ids = np.concatenate([ids, np.full(size - layout.size, tokens[0])])
            positions = np.concatenate([positions, np.full(size - layout.size, past_length)])
        ids, positions = torch.from_numpy(ids[None]), torch.from_numpy(positions[None])  # [1, size] each
        if device.type != "cpu":
            ids, positions = ids.to(device), positions.to(device)
        columns = self.cache.capacity if self.step.compiled else past_length + size
        self.cache.prepare(past_length, size, None if self.step.compiled else columns, device)
        inputs = {
            "input_ids": ids,
            "position_ids": positions,
            "attention_mask": self.masks(layout, past_length, size, columns),
            self.cache_arg: self.cache,
            "use_cache": True,
        }
        eager = not self.cache.store  # a one-token prompt: the first step allocates the cache, uncompiled
        keep = None  # slots whose logits the model keeps (logits_to_keep), when it projects them itself
        if not lazy and self.keeps_logits and not self.step.compiled:
            keep = list(range(layout.window_start)) + list(layout.last_level_slots())  # root, tree, top level
            inputs["logits_to_keep"] = torch.tensor(keep, device=device)
        start = time.perf_counter()  # model time: the call alone (what is built around it is the engine's)
        rows = self.step.body(inputs, eager) if lazy else self.step.model(inputs, eager)  # [1, size, H] / [1, rows, V]
        stats.model_seconds += self.step.elapsed(start)
        if lazy:
            return StepOutputs(rows.numpy()[0] if self.host_rows else rows[0], None, self.split[1], stats)
        return StepOutputs(rows[0], None if keep is None else {slot: i for i, slot in enumerate(keep)}, None, stats)

    def _lazy(self, run: Run) -> bool:
        return self.split is not None and self.config.lazy_logits and run.verifier.walks_tree

    def _verify(self, run: Run, layout: StepLayout, tree: DraftTree,
                outputs: StepOutputs) -> tuple[Verdict, dict[int, torch.Tensor]]:
        """Scores after the generation config's processors (each row in its context), then the
        verifier walks the tree. Returns the verdict and the raw logits of the rows it read
        (fed token -> [V]): sources that learn from the model's top tokens use them."""
        paths = self._node_paths(tree) if len(run.processors) else None
        # scores are the raw logits: the verifier can take the argmaxes the step already has
        shared = paths is None and not len(run.warpers) and run.verifier.takes_choices
        if self._lazy(run) and self.one_pass and (shared or run.verifier.samples):  # a sampler decides at once there
            outputs.project([*range(layout.window_start), *layout.last_level_slots()])  # every row read
        elif layout.width:  # the window's top level is read after: project it with the root, one head call
            outputs.project([0, *layout.last_level_slots()])
        # a row read alone brings along the rows most likely read after it (the best-valued nodes
        # below its node) while the head's call has rows to spare: on a CPU 4 rows cost what 1 does
        outputs.companions = lambda slot, count: [1 + n for n in likely_below(tree, slot - 1, count)] \
            if slot <= tree.size else []
        hint = {"choices": lambda nodes: outputs.choices([1 + n for n in nodes])} if shared else {}
        seen: dict[int, torch.Tensor] = {}  # the token a row was fed -> its raw logits

        def scores(nodes: list[int]) -> torch.Tensor:  # [k, V] for tree nodes (-1: the root)
            rows = outputs.logits([1 + n for n in nodes])
            if self.top_k:
                seen.update((run.root if n < 0 else tree.tokens[n], row) for n, row in zip(nodes, rows))
            if paths is not None:
                context = run.context().to(rows.device)
                rows = score_rows(run.processors, context, [paths[1 + n] for n in nodes], rows)
            if len(run.warpers):  # temperature, top-k/p, min-p look at one row at a time
                rows = run.warpers(torch.zeros(rows.shape[0], 1, dtype=torch.long, device=rows.device), rows)
            return rows

        if not self._lazy(run):  # every row at once (the head does not split off, or lazy_logits=False)
            every = scores(list(range(-1, tree.size)))  # [1 + n, V]
            verdict = run.verifier.verify_tree(every[0], tree, lambda nodes: every[[1 + n for n in nodes]],
                                               run.generator, **hint)
        else:  # with choices the root's row is read only if the verifier asks (node -1)
            root = None if shared else scores([-1])[0]
            verdict = run.verifier.verify_tree(root, tree, scores, run.generator, **hint)
        return verdict, seen

    @staticmethod
    def _node_paths(tree: DraftTree) -> list[list[int]]:
        """Tokens after the root on the path to each row: [] for the root, then each node's."""
        paths: list[list[int]] = [[]]
        for token, parent in zip(tree.tokens, tree.parents):
            paths.append(paths[parent + 1] + [token])
        return paths

    def _update_window(self, run: Run, layout: StepLayout, outputs: StepOutputs,
                       seen: dict[int, torch.Tensor]) -> list[tuple[int, tuple[int, ...]]]:
        """Jacobi update: the top level's argmaxes become a new level; full columns become
        n-grams, returned for the sources (the ngram source pools them)."""
        if run.window.width == 0:
            return []
        slots = layout.last_level_slots()
        if self.top_k:
            seen.update(zip(run.window.levels[-1], outputs.logits(slots)))  # [W, V]
        return run.window.advance(outputs.choices(slots)) or []

    def _commit(self, run: Run, layout: StepLayout, verdict: Verdict, tree: DraftTree, offered: Counter,
                harvest: list, seen: dict) -> None:
        """Append the verdict's tokens, keep their KV, let the sources learn, report the step."""
        root = run.root
        tokens = self._cut(run, verdict)
        accepted = set(verdict.path)
        depths = layout.depth_list
        self.cache.commit(run.past_length, [1 + n for n in verdict.path[: len(tokens) - 1]])  # node n's slot: 1 + n
        run.tokens.extend(tokens)
        outcome = StepOutcome(
            context=run.tokens, root=root, committed=tuple(tokens), accepted=len(tokens) - 1,
            nodes=[FedNode(tree.tokens[n], depths[1 + n], tree.sources[n], tree.keys[n], n in accepted)
                   for n in range(tree.size)],
            window_ngrams=harvest,
            top_tokens={token: row.topk(self.top_k).indices.tolist() for token, row in seen.items()},
        )
        for source in self.sources:
            source.observe(outcome)
        if self.config.realign == "shift" and verdict.accepted:
            run.window.shift(verdict.accepted, run.context())
        self._report(run, layout, verdict, tree, offered, tokens)

    def _cut(self, run: Run, verdict: Verdict) -> list[int]:
        """The verdict's tokens, cut at max_new_tokens and after the first EOS (which ends the run)."""
        tokens = list(verdict.tokens[: run.remaining])
        for i, token in enumerate(tokens):
            if token in run.eos:
                tokens = tokens[: i + 1]
                run.finished = True
                run.stats.stop_reason = "eos"
                break
        if len(run.tokens) + len(tokens) - run.prompt_length >= run.max_new_tokens and not run.finished:
            run.finished = True
            run.stats.stop_reason = "length"
        return tokens

    def _report(self, run: Run, layout: StepLayout, verdict: Verdict, tree: DraftTree, offered: Counter,
                tokens: list[int]) -> None:
        """Stream the tokens, record the step and the per-source attribution."""
        if run.streamer is not None:
            run.streamer.put(torch.tensor(tokens, dtype=torch.long))
        accepted = verdict.path[: len(tokens) - 1]
        record = StepRecord(
            width=layout.width,
            drafts=len(tree.rows),
            accepted=len(tokens) - 1,
            emitted=len(tokens),
            source=tree.origins[accepted[-1]] if accepted else SOURCE_NONE,
            fed_tokens=self.step.size(layout.size),  # padding included: what the forward computed
        )
        run.history.append(record)
        run.stats.record(record)
        run.stats.offered.update(offered)
        run.stats.fed.update(tree.sources)
        run.stats.accepted_from.update(tree.sources[n] for n in accepted)

    # ------------------------------------------------------------------ helpers
    def _step_cost(self, fed: int) -> float:
        """Cost of a step feeding ``fed`` tokens, in one-token forwards (as the step is run: padded)."""
        return self.costs(self.step.size(min(fed, self.step.largest)))

    def _window_width(self, run: Run, width: int) -> int:
        if self.config.window == 0:
            return 0
        width = int(width)
        if width < 0:
            raise ValueError(f"scheduler {self.config.scheduler.name!r} returned window width {width} < 0")
        levels = max(len(run.window.levels), 1)
        return max(0, min(width, self._positions_left(run) - levels + 1))

    def _positions_left(self, run: Run) -> int:
        """How many positions after the root's the model can still address."""
        if self.max_positions is None:
            return 1 << 30
        return self.max_positions - 1 - run.past_length

    def _begin(self, prompt, max_new_tokens, eos_token_id, streamer, sampling: SamplingSettings, generator) -> Run:
        config = self.config
        if self.scheduler.needs_costs and self.costs is None:
            self.costs = self._calibrated_costs()
        self.scheduler.reset()
        for source in self.sources:
            source.begin(prompt.tolist())
        eos = eos_token_ids(self.model.generation_config, eos_token_id)
        window_generator = torch.Generator().manual_seed(config.window_seed)
        self._cache_for(prompt.numel() + max_new_tokens)
        run = Run(
            tokens=prompt.tolist(),
            prompt_length=prompt.numel(),
            max_new_tokens=max_new_tokens,
            eos=frozenset(eos),
            window=Window(config.ngram, window_generator),
            processors=build_processors(self.model.generation_config, prompt.numel(), eos),
            warpers=sampling.warpers(),
            verifier=self.verifier_for(sampling.do_sample),
            streamer=streamer,
            generator=self._generator_for(sampling, generator),
        )
        if streamer is not None:
            streamer.put(prompt[None].clone())
        if max_new_tokens == 0:
            run.finished = True
            run.stats.stop_reason = "length"
        elif prompt.numel() > 1:
            self._prefill(run, prompt[:-1])
        return run

    def _prefill(self, run: Run, tokens: torch.Tensor) -> None:
        """Cache everything before the root with one plain causal pass (Hugging Face's own masks,
        as in ``generate``), then move those states into the step cache."""
        self._prefill_tokens(tokens)
        run.stats.prefill_tokens = tokens.numel()

    def _prefill_tokens(self, tokens: torch.Tensor) -> None:  # [T]
        prefill = new_cache()
        kwargs = {self.cache_arg: prefill, "use_cache": True}
        if self.keeps_logits:
            kwargs["logits_to_keep"] = 1
        self.model(input_ids=tokens[None].to(self.device), **kwargs)
        self.cache.load(prefill)
        assert self.cache.length == tokens.numel()

    def _calibrated_costs(self) -> CostModel:
        """The device's cost curve for this engine's steps: ``$LOOKAHEAD_COST_MODEL`` when set (a
        JSON file, or ``flat``: every size costs one forward), else from the disk cache, else timed
        now (a few forwards; compiled, this is also the warm-up of every step size)."""
        given = os.environ.get("LOOKAHEAD_COST_MODEL")
        if given:
            return CostModel.flat() if given == "flat" else CostModel.load(given)
        sizes = calibration_sizes(self.step.largest, self.step.sizes if self.step.compiled else None)
        key = cache_key(self.model, sizes, self.step.compiled)
        path = cache_file(key)
        if self.step.compiled:
            for size in sizes:
                self._timed_forward(size)  # compile now, not inside the first timed decode
        try:
            return CostModel.load(path)
        except (OSError, ValueError, KeyError):
            pass
        points, one = calibrate(self._timed_forward, sizes)
        costs = CostModel(points, key, one)
        try:
            costs.save(path)
        except OSError:
            pass  # a read-only home: calibrate again next time
        return costs

    def _timed_forward(self, size: int) -> None:
        """One step-shaped forward of ``size`` tokens (a chain) after a cached prefix of a typical
        length (256, or half the model's positions)."""
        prefix = min(256, (self.max_positions or 512) // 2)
        vocab = self.model.get_input_embeddings().num_embeddings
        tokens = torch.arange(1, prefix + size + 1) % vocab
        self._cache_for(prefix + size)
        if prefix:
            self._prefill_tokens(tokens[:prefix])
        layout = step_layout(0, 0, tuple(range(-1, size - 2)))  # the root and a chain of size - 1 nodes
        stats = DecodeStats()
        outputs = self._feed(tokens[prefix:].tolist(), layout, prefix, self.split is not None, stats)
        outputs.logits([0])
        self.step.elapsed(time.perf_counter())  # wait for the device

    def _cache_for(self, positions: int) -> StepCache:
        """The engine's step cache, grown (rarely: a new shape) when a call needs more positions."""
        needed = positions + self.step.largest
        if self.cache is None or self.cache.capacity < needed:
            self.cache = StepCache(self.step.capacity(needed), getattr(self.model.config, "num_hidden_layers", None))
        self.cache.length = 0
        return self.cache

    def _finish(self, run: Run, input_ids: torch.Tensor, start: float) -> LookaheadOutput:
        if run.streamer is not None:
            run.streamer.end()
        run.stats.new_tokens = len(run.tokens) - run.prompt_length
        run.stats.scheduler = self.scheduler.summary()
        run.stats.wall_seconds = time.perf_counter() - start
        sequences = torch.tensor(run.tokens, dtype=input_ids.dtype, device=input_ids.device)[None]
        return LookaheadOutput(sequences=sequences, stats=run.stats)

    def _check_prompt(self, input_ids, max_new_tokens) -> torch.Tensor:  # [T] on CPU
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError("input_ids must be a 2-D LongTensor of shape [1, T] (batch size 1)")
        if input_ids.shape[0] != 1:
            raise ValueError(
                f"input_ids has batch size {input_ids.shape[0]}; the lookahead engine decodes one "
                f"sequence at a time: call generate once per row"
            )
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids is empty: the prompt needs at least one token")
        if input_ids.dtype == torch.bool or input_ids.is_floating_point() or input_ids.is_complex():
            raise ValueError(f"input_ids must hold integer token ids (torch.long), got dtype {input_ids.dtype}; "
                             f"pass the tokenizer's output, e.g. tokenizer(text, return_tensors='pt').input_ids")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        prompt = input_ids[0].to("cpu", torch.long)
        vocab = self.model.get_input_embeddings().num_embeddings
        if int(prompt.min()) < 0 or int(prompt.max()) >= vocab:
            raise ValueError(f"input_ids holds token ids outside the model's vocabulary [0, {vocab})")
        if self.max_positions is not None and prompt.numel() + max_new_tokens > self.max_positions:
            raise ValueError(
                f"prompt length {prompt.numel()} + max_new_tokens {max_new_tokens} exceeds the model's "
                f"position limit {self.max_positions}; lower max_new_tokens or shorten the prompt"
            )
        return prompt

    def verifier_for(self, do_sample: bool) -> Verifier:
        """The verifier a call runs: the configured one when its declared capabilities suit the call
        (sampling needs ``preserves_distribution``; greedy needs an argmax verifier, ``samples``
        False); else the first registered verifier, by name, that declares them. Never by name."""
        suits = (lambda cls: cls.preserves_distribution and cls.walks_tree) if do_sample else (
            lambda cls: not cls.samples and cls.walks_tree)
        if suits(type(self.verifier)):
            return self.verifier
        for name, cls in sorted(registered("verifier").items()):
            if suits(cls):
                return cls(cls.Params())
        raise ValueError(f"verifier {self.config.verifier.name!r} cannot {'sample' if do_sample else 'decode greedily'} "
                         f"and no registered verifier can: register one that declares it")

    def _generator_for(self, sampling: SamplingSettings, generator: torch.Generator | None):
        if not sampling.do_sample or generator is not None:
            return generator
        # no generator given: seed one from torch's global RNG, so torch.manual_seed reproduces;
        # on the model's device, so that the sampler draws its uniforms where the scores are
        seed = int(torch.randint(0, 2**62, (1,)))
        return torch.Generator(self.device).manual_seed(seed)
