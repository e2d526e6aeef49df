"""Decode one prompt with lookahead decoding, streaming the text as it is accepted.

    python -m experiments.generate --prompt "Write a haiku about the sea." --compare
    python -m experiments.generate --prompt "def fib(n):" --no-chat --window 7 --ngram 5 --guess-set 7
    python -m experiments.generate --prompt "Hi" --config sweeps/presets/cpu.yaml --set pool.capacity=8
    python -m experiments.generate --prompt "Hi" --import my_pool.py --set pool.name=my_pool

Chat models get their chat template (``--no-chat`` feeds the prompt as plain text). The run
ends with one stats line; ``--compare`` also runs plain ``model.generate`` in the same process
(greedy, or sampling with the same settings) and reports the speedup and whether the two
outputs are identical. Measured (default model, float32, ``--threads 2`` on a 2-core CPU,
defaults W=0 N=4 G=2)::

    $ python -m experiments.generate --prompt "Write a haiku about the sea." --max-new-tokens 64 --compare --threads 2
    The waves of the sea, a silent beauty,
    ...
    lookahead: steps=30 new_tokens=39 tokens/step=1.30 tokens/s=25.7 | plain: steps=39 new_tokens=39
    tokens/step=1.00 tokens/s=24.7 | speedup=1.04x identical=yes        (one line, wrapped here)

The configuration flags (``--config``, ``--set``, ``--import`` and the W/N/G sugar) are those of
every command (experiments/cli.py); unset, ``LookaheadConfig``'s defaults hold. The header on
stderr names the verifier that really runs (``--sample`` swaps a greedy one for the sampler).
Streamed text and the stats line go to stdout. Exit status: 0 done, 1 the model or the engine
failed, 2 a bad flag (the message names it).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import TextStreamer

from experiments.cli import (
    CliError, add_config_arguments, add_model_arguments, fail, int_at_least, load_model_from_args, run_command,
    set_threads, single_config,
)
from framework import LookaheadEngine
from framework.models import DEFAULT_MODEL, encode_prompt
from framework.processors import eos_token_ids

SAMPLING_FLAGS = {
    "temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k", "min_p": "--min-p", "seed": "--seed",
}


@dataclass
class RunStats:
    """One decoding run as the stats line reports it."""

    label: str
    steps: int
    new_tokens: int
    seconds: float

    def line(self) -> str:
        per_step = self.new_tokens / self.steps if self.steps else 0.0
        per_second = self.new_tokens / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.label}: steps={self.steps} new_tokens={self.new_tokens} "
            f"tokens/step={per_step:.2f} tokens/s={per_second:.1f}"
        )


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", required=True, help="the user message (or plain text with --no-chat)")
    parser.add_argument("--max-new-tokens", type=int_at_least(0), default=128)
    parser.add_argument("--compare", action="store_true", help="also run plain model.generate and compare")
    parser.add_argument("--no-chat", action="store_true", help="encode the prompt as plain text")
    add_model_arguments(parser)
    add_config_arguments(parser)

    sampling = parser.add_argument_group("sampling (default: the model's generation_config, greedy here)")
    sampling.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    sampling.add_argument("--temperature", type=float, default=None)
    sampling.add_argument("--top-p", type=float, default=None)
    sampling.add_argument("--top-k", type=int, default=None)
    sampling.add_argument("--min-p", type=float, default=None)
    sampling.add_argument("--seed", type=int, default=None, help="seed of the sampling generator (default 0)")
    return parser


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``do_sample``/``temperature``/``top_p``/``top_k``/``min_p``/``generator`` for generate(); {} if greedy."""
    if not args.sample:
        given = [flag for name, flag in SAMPLING_FLAGS.items() if getattr(args, name) is not None]
        if given:
            raise CliError(f"{given[0]}: only applies with --sample; add --sample or drop {given[0]}")
        return {}
    seed = 0 if args.seed is None else args.seed
    kwargs = {"do_sample": True, "generator": torch.Generator().manual_seed(seed)}
    for name in ("temperature", "top_p", "top_k", "min_p"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    return kwargs


# --------------------------------------------------------------------------------------------
# Decoding


def run_lookahead(engine: LookaheadEngine, input_ids, max_new_tokens: int, eos, streamer, sampling) -> tuple:
    """Lookahead-decode ``input_ids # [1, T]``; returns ``(sequences # [1, T + new], RunStats)``."""
    out = engine.generate(input_ids, max_new_tokens=max_new_tokens, eos_token_id=eos, streamer=streamer, **sampling)
    stats = out.stats
    return out.sequences, RunStats("lookahead", stats.steps, stats.new_tokens, stats.wall_seconds)


@torch.inference_mode()
def run_plain(model, input_ids, max_new_tokens: int, eos, sampling: dict[str, Any]) -> tuple:
    """Plain ``model.generate`` (one forward per token) with the same settings; same return shape."""
    kwargs = {k: v for k, v in sampling.items() if k != "generator"} or {"do_sample": False}
    if "generator" in sampling:  # HF sampling draws from the global RNG
        torch.manual_seed(int(sampling["generator"].initial_seed()))
    start = time.perf_counter()
    sequences = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),  # no padding: don't let pad == eos ids guess a mask
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        eos_token_id=eos,
        num_beams=1,
        **kwargs,
    )  # [1, T + new]
    seconds = time.perf_counter() - start
    new_tokens = sequences.shape[1] - input_ids.shape[1]
    return sequences, RunStats("plain", new_tokens, new_tokens, seconds)


@torch.inference_mode()
def warm_up(model, input_ids) -> None:
    """One forward over the prompt so neither timed run pays first-call costs (weights paging in)."""
    model(input_ids=input_ids)


def stats_line(lookahead: RunStats, plain: RunStats | None, identical: bool | None) -> str:
    """The final report: the lookahead run, and with --compare the plain run, speedup, identity."""
    parts = [lookahead.line()]
    if plain is not None:
        speedup = plain.seconds / lookahead.seconds if lookahead.seconds > 0 else float("nan")
        verdict = "n/a (sampling)" if identical is None else ("yes" if identical else "no")
        parts += [plain.line(), f"speedup={speedup:.2f}x identical={verdict}"]
    return " | ".join(parts)


# --------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> int:
    """Parse, load, decode (and compare); returns the exit status."""
    return run_command(build_parser(), argv, run)


def run(args: argparse.Namespace) -> int:
    config, sampling = single_config(args), sampling_kwargs(args)
    threads = set_threads(args.threads)
    model, tokenizer = load_model_from_args(args)
    try:
        input_ids = encode_prompt(tokenizer, args.prompt, chat=False if args.no_chat else None).to(model.device)
    except ValueError as error:
        raise CliError(f"--prompt: {error}") from None
    engine = LookaheadEngine(model, config, compile=args.compile)
    verifier = type(engine.verifier_for(bool(sampling))).name
    print(f"[{args.model or DEFAULT_MODEL}] W={config.window} N={config.ngram} G={config.guess_set} "
          f"scheduler={config.scheduler.name} pool={config.pool.name} verifier={verifier} | {model.device}, {threads}",
          file=sys.stderr)
    return decode(args, model, tokenizer, engine, input_ids, sampling)


def decode(args, model, tokenizer, engine: LookaheadEngine, input_ids, sampling: dict[str, Any]) -> int:
    """Stream the lookahead output, then print the stats line."""
    eos = eos_token_ids(model.generation_config)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    warm_up(model, input_ids)
    try:
        sequences, stats = run_lookahead(engine, input_ids, args.max_new_tokens, eos, streamer, sampling)
    except NotImplementedError as error:
        flag = "--sample" if sampling else "the engine"
        return fail(f"{flag}: not available in this engine yet: {error}", status=1)
    except ValueError as error:
        return fail(error, status=1)
    plain, identical = None, None
    if args.compare:
        plain_sequences, plain = run_plain(model, input_ids, args.max_new_tokens, eos, sampling)
        identical = None if sampling else torch.equal(sequences.cpu(), plain_sequences.cpu())
    print(stats_line(stats, plain, identical), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
