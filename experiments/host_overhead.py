"""Host overhead of the engine per decoding step, measured from outside with module hooks.

    python -m experiments.host_overhead --window 15 --ngram 5 --guess-set 15 --limit 3 --threads 2

For each prompt: the decode's wall time less the time spent inside the model's body and its
vocabulary head (timed by forward pre/post hooks), per step. It reads nothing the engine records
itself, so the same harness measures any version of the engine: for the "before", give this
file's path with the older checkout on ``PYTHONPATH`` (``PYTHONPATH=OLD python
experiments/host_overhead.py ...``; with ``-m`` the current directory's engine would win); eager
engines only. Engines that time themselves (``DecodeStats.host_ms_per_step``, also in bench
tables) are reported that way too, with their model time per step (``DecodeStats.model_seconds``:
the body and the head's projections): theirs is the figure to read, since their head projection
(``framework.head.RowHead``) bypasses the head module's hooks and would count as host time here.

``--stages`` also prints where that time goes: each stage of the engine's step (``_plan``,
``_forward``, ``_verify``, ``_update_window``, ``_commit``, wrapped on this engine instance by
name) timed less the model time it recorded, in ms per step; the rest of the loop is "between";
and each step's host time (the whole step less its model time), median by the draft tokens it
accepted: a step that accepts reads rows below the root, each new one a head call of its own.

``--replay R`` splits the host figure in two. After the measured decodes it decodes the prompts
once more, recording the model's outputs (a pass of its own: copying every output would disturb
the measured decodes' caches), then R more times with those outputs served again from memory in
the order the engine asked for them (the prompts' prefill skipped), and prints the host time per
step of those rounds: the engine's own work on caches the model did not evict (each pass starts,
as the measured decodes do, with no step layouts cached). On a CPU every model call streams the
weights through the caches, so the live figure also pays for fetching the engine's code and state
again after each call; on a GPU the model leaves the host's caches alone, and the replayed figure
is the nearer estimate of the host's cost there. Every pass must commit the tokens the measured
decode did (else it stops with an error). With ``--stages`` the stage timers stay on in those
rounds too (a little host time of their own). The recorded outputs are held in memory: about
200 KB per projected row of SmolLM2's 49k vocabulary (~3 GB for the default 18 prompts).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from experiments import datasets
from experiments.cli import CliError, add_config_arguments, add_model_arguments, int_at_least, \
    load_model_from_args, run_command, set_threads, single_config
from framework import LookaheadEngine, layout


class ModelTimer:
    """Seconds spent inside ``modules`` (pre-hook to post-hook), summed over calls."""

    def __init__(self, *modules) -> None:
        self.seconds, self._start = 0.0, None
        self._handles = [h for m in modules for h in (m.register_forward_pre_hook(self._enter),
                                                       m.register_forward_hook(self._exit))]

    def _enter(self, *_) -> None:
        self._start = time.perf_counter()

    def _exit(self, *_) -> None:
        self.seconds += time.perf_counter() - self._start

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.host_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="spec_bench", choices=datasets.DATASET_NAMES)
    parser.add_argument("--limit", type=int_at_least(1), default=3, help="seeded prompts per category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int_at_least(1), default=128)
    parser.add_argument("--stages", action="store_true", help="also time each stage of the step (engines that "
                        "time their model: DecodeStats.model_seconds)")
    parser.add_argument("--replay", type=int_at_least(0), default=0, metavar="R",
                        help="then decode the prompts once more, recording the model's outputs, and R "
                        "more times on them (no model calls): the engine's own host time")
    add_model_arguments(parser)
    add_config_arguments(parser)
    return parser


STAGES = ("_plan", "_forward", "_verify", "_update_window", "_commit")


def time_stages(engine: LookaheadEngine) -> tuple[dict[str, float], dict[int, list[float]]]:
    """Wrap the engine's step stages (on this instance) to sum each one's seconds outside the
    model: its wall time less what it added to ``run.stats.model_seconds``. Also wraps the whole
    step: its seconds outside the model, listed by the draft tokens the step accepted."""
    seconds = dict.fromkeys(STAGES, 0.0)
    by_accepted: dict[int, list[float]] = {}

    def outside_model(call, record):  # call, then record(run, its seconds outside the model)
        def timed(run, *args, **kwargs):
            model, start = run.stats.model_seconds, time.perf_counter()
            result = call(run, *args, **kwargs)
            record(run, time.perf_counter() - start - (run.stats.model_seconds - model))
            return result
        return timed

    def add_to(name):
        def record(run, host):
            seconds[name] += host
        return record

    for name in STAGES:
        setattr(engine, name, outside_model(getattr(engine, name), add_to(name)))
    engine._step = outside_model(engine._step, lambda run, host: by_accepted.setdefault(
        run.history[-1].accepted, []).append(host))
    return seconds, by_accepted


def forget_layouts() -> None:
    """Empty the engine's cache of step layouts (one per tree shape: about half a pool-fed
    config's steps build a new one), so that passes over the same prompts each pay for theirs."""
    layout.step_layout.cache_clear()


class ReplayError(RuntimeError):
    """A replayed decode went another way than the recorded one (the engine is not deterministic)."""


class Replay:
    """The outputs the engine gets from the model (its body, its head, or the whole model),
    recorded in call order; after ``play()`` served again in that order without running the model,
    the prompts' prefill reduced to setting the cache's length. A served output is a fresh copy,
    made inside the call the engine times as the model's, so the engine reads it from warm caches
    as it reads a live output. Wraps this engine instance's callables (this engine's: ``step``,
    ``split``, ``_prefill_tokens``; an older engine without them is refused)."""

    def __init__(self, engine: LookaheadEngine) -> None:
        self.check(engine)
        self.outputs: list[torch.Tensor] = []
        self._served = None  # an iterator over outputs while playing
        step = engine.step
        step.body, step.model = self._wrap(step.body), self._wrap(step.model)
        if engine.split is not None:
            body, head = engine.split
            served_head = self._wrap(head)
            served_head.free_rows = getattr(head, "free_rows", 1)  # what StepOutputs reads off the head
            engine.split = (body, served_head)
        prefill = engine._prefill_tokens
        engine._prefill_tokens = lambda tokens: prefill(tokens) if self._served is None else \
            setattr(engine.cache, "length", tokens.numel())

    @staticmethod
    def check(engine) -> None:
        """Refuse an engine without the callables a replay goes through."""
        missing = [name for name in ("step", "split", "_prefill_tokens") if not hasattr(engine, name)]
        if missing:
            raise CliError(f"--replay: this engine has no {', '.join(missing)} to replay the model through "
                           f"(an older engine?); measure it without --replay")

    def _wrap(self, call):
        def served(*args, **kwargs):
            if self._served is None:
                output = call(*args, **kwargs)
                self.outputs.append(output.clone())
                return output
            output = next(self._served, None)
            if output is None:
                raise ReplayError("--replay: the engine asked the model for more outputs than the recorded decodes "
                                   "did; its steps are not deterministic, so they cannot be replayed")
            return output.clone()
        return served

    def play(self) -> None:
        """Serve the recorded outputs from the first one again."""
        self._served = iter(self.outputs)


def replayed_host(engine: LookaheadEngine, inputs: list, live: list, max_new_tokens: int, rounds: int,
                  replay: Replay) -> list[float]:
    """Host ms per step of each replayed round (all prompts' steps together), after a pass that
    records the model's outputs when ``replay`` holds none yet. Every pass must commit ``live``."""
    figures = []
    for index in range(-1 if not replay.outputs else 0, rounds):  # -1: the recording pass
        if index >= 0:
            replay.play()
        forget_layouts()  # each pass builds the step layouts the measured decodes built
        host, steps = 0.0, 0
        for ids, tokens in zip(inputs, live):
            out = engine.generate(ids, max_new_tokens=max_new_tokens)
            if not torch.equal(out.sequences, tokens):
                raise ReplayError("--replay: a decode committed other tokens than the measured one did; "
                                   "the engine's steps are not deterministic here, so --replay cannot measure them")
            host += out.stats.decode_seconds - out.stats.model_seconds
            steps += out.stats.steps
        if index >= 0:
            figures.append(1000 * host / max(steps, 1))
    return figures


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, run)


@torch.inference_mode()
def run(args: argparse.Namespace) -> int:
    config = single_config(args)
    threads = set_threads(args.threads)
    model, tokenizer = load_model_from_args(args)
    engine = LookaheadEngine(model, config)
    if args.replay:
        Replay.check(engine)  # before the measured decodes, not after them
    prompts = datasets.load_dataset(args.dataset, limit_per_category=args.limit, seed=args.seed)
    inputs = [datasets.encode(tokenizer, p).to(model.device) for p in prompts]
    engine.generate(inputs[0], max_new_tokens=8)  # warm-up
    forget_layouts()  # the measured decodes (and every replayed pass) start with none cached
    stages = time_stages(engine) if args.stages else None
    live = []
    per_step, own, steps_all, host_all, model_all = [], [], 0, 0.0, 0.0
    for ids in inputs:
        timer = ModelTimer(model.base_model, model.get_output_embeddings())
        start = time.perf_counter()
        out = engine.generate(ids, max_new_tokens=args.max_new_tokens)
        wall = time.perf_counter() - start
        timer.remove()
        live.append(out.sequences)
        steps = out.stats.steps
        per_step.append(1000 * (wall - timer.seconds) / max(steps, 1))  # prefill and its setup included
        if hasattr(out.stats, "host_ms_per_step"):  # engines that time themselves (this one's head
            own.append(out.stats.host_ms_per_step)  # projection skips the head module's hooks)
        host_all += out.stats.decode_seconds - out.stats.model_seconds
        model_all += out.stats.model_seconds
        steps_all += steps
    print(f"{config.summary()} | {model.device}, {threads}, {len(inputs)} prompts, {steps_all} steps: host ms/step "
          f"median {statistics.median(per_step):.2f}, mean {statistics.mean(per_step):.2f} (hooks)"
          + (f"; the engine's own: median {statistics.median(own):.2f}, mean {statistics.mean(own):.2f}; "
             f"model ms/step {1000 * model_all / max(steps_all, 1):.1f} (its own timing)" if own else ""))
    print(f"step layouts built (a tree shape not cached yet): {layout.step_layout.cache_info().misses} "
          f"of {steps_all} steps")
    if stages is not None:
        seconds, by_accepted = stages
        per = {name.strip("_"): 1000 * value / max(steps_all, 1) for name, value in seconds.items()}
        per["between"] = 1000 * host_all / max(steps_all, 1) - sum(per.values())
        print("stages, ms/step outside the model (all steps): " + ", ".join(f"{k} {v:.3f}" for k, v in per.items()))
        print("host ms/step by draft tokens accepted (median, steps): " + ", ".join(
            f"{accepted}: {1000 * statistics.median(hosts):.3f} ({len(hosts)})" for accepted, hosts in sorted(by_accepted.items())))
    if args.replay:
        replay = Replay(engine)  # records from here on: the measured decodes above ran without it
        try:
            figures = replayed_host(engine, inputs, live, args.max_new_tokens, args.replay, replay)
        except ReplayError as error:
            raise CliError(str(error), status=1) from None
        print(f"replayed (the model's outputs served from memory, {len(figures)} rounds): host ms/step "
              f"median {statistics.median(figures):.3f}, min {min(figures):.3f}, max {max(figures):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
