"""Decode one prompt with lookahead decoding, streaming the text as it is accepted.

    python -m experiments.generate --prompt "Write a haiku about the sea." --compare
    python -m experiments.generate --prompt "def fib(n):" --no-chat --window 7 --ngram 5 --guess-set 7

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

Flags left unset keep ``LookaheadConfig``'s defaults; a strategy flag builds that block as
``{"name": ..., ...}``. Exit status: 0 done, 1 the model or the engine failed, 2 a bad flag
(the message names it).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError
from transformers import TextStreamer

from framework import LookaheadConfig, LookaheadEngine
from framework.models import DEFAULT_MODEL, encode_prompt, load_model
from strategies.base import ROLES, parse_params

# config field -> the flag that sets it, so validation errors name the flag
CONFIG_FLAGS = {
    "window": "--window",
    "ngram": "--ngram",
    "guess_set": "--guess-set",
    "realign": "--realign",
    "harvest_output": "--no-harvest-output",
    "window_seed": "--window-seed",
    "scheduler": "--scheduler",
    "pool": "--pool",
    "verifier": "--verifier",
}
# strategy Params field -> flag (fields without a flag fall back to the role's flag)
PARAM_FLAGS = {("pool", "capacity"): "--pool-capacity", ("pool", "seed_from_prompt"): "--no-seed-from-prompt"}
SAMPLING_FLAGS = {
    "temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k", "min_p": "--min-p", "seed": "--seed",
}


class FlagError(ValueError):
    """A command-line value that cannot be used; the message starts with the flag."""


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
    parser.add_argument("--model", default=None, help=f"folder, .gguf file or cached Hub name ({DEFAULT_MODEL})")
    parser.add_argument("--max-new-tokens", type=int_at_least(0), default=128)
    parser.add_argument("--compare", action="store_true", help="also run plain model.generate and compare")
    parser.add_argument("--no-chat", action="store_true", help="encode the prompt as plain text")
    parser.add_argument("--dtype", default="float32", help="float32 (exact on CPU), bfloat16 or float16")
    parser.add_argument("--attn", default="sdpa", help="attention implementation: sdpa or eager")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int_at_least(1), default=None, help="torch CPU threads")

    add_lookahead_arguments(parser.add_argument_group("lookahead (unset: LookaheadConfig defaults)"))

    sampling = parser.add_argument_group("sampling (default: the model's generation_config, greedy here)")
    sampling.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    sampling.add_argument("--temperature", type=float, default=None)
    sampling.add_argument("--top-p", type=float, default=None)
    sampling.add_argument("--top-k", type=int, default=None)
    sampling.add_argument("--min-p", type=float, default=None)
    sampling.add_argument("--seed", type=int, default=None, help="seed of the sampling generator (default 0)")
    return parser


def add_lookahead_arguments(group) -> None:
    """The LookaheadConfig flags, shared by generate and bench (unset flags keep the defaults)."""
    group.add_argument("--window", type=int, default=None, help="[W] window width; 0 disables lookahead")
    group.add_argument("--ngram", type=int, default=None, help="[N] n-gram size")
    group.add_argument("--guess-set", type=int, default=None, help="[G] drafts verified per step")
    group.add_argument("--scheduler", default=None, help="window scheduler name (e.g. static)")
    group.add_argument("--pool", default=None, help="n-gram pool name (e.g. lru, lfu, fifo, unbounded)")
    group.add_argument("--pool-capacity", type=int, default=None, help="n-grams kept per key")
    group.add_argument("--no-seed-from-prompt", action="store_true", help="don't seed the pool from the prompt")
    group.add_argument("--verifier", default=None, help="verifier name (e.g. greedy)")
    group.add_argument("--realign", default=None, help="keep or shift the window after accepting drafts")
    group.add_argument("--no-harvest-output", action="store_true", help="don't pool the output's n-grams")
    group.add_argument("--window-seed", type=int, default=None, help="seed of the window's initial tokens")


def int_at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def build_config(args: argparse.Namespace) -> LookaheadConfig:
    """``LookaheadConfig`` from the flags that were set; errors name the flag."""
    fields: dict[str, Any] = {}
    for name in ("window", "ngram", "guess_set", "realign", "window_seed"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.no_harvest_output:
        fields["harvest_output"] = False
    for role in ROLES:
        block = strategy_block(args, role)
        if block is not None:
            fields[role] = block
    try:
        return LookaheadConfig(**fields)
    except ValidationError as error:
        raise FlagError(_explain(error, CONFIG_FLAGS)) from None


def strategy_block(args: argparse.Namespace, role: str):
    """The validated ``{"name": ..., ...}`` block of ``role``, or None if no flag touches it."""
    options = _strategy_options(args, role)
    name = getattr(args, role)
    if name is None and not options:
        return None
    if name is None:
        name = LookaheadConfig.model_fields[role].default_factory().name
    try:
        return parse_params(role, {"name": name, **options})
    except ValidationError as error:
        flags = {field: flag for (r, field), flag in PARAM_FLAGS.items() if r == role} | {"name": f"--{role}"}
        raise FlagError(_explain(error, flags, fallback=f"--{role}", context=f" ({role} {name!r})")) from None
    except ValueError as error:  # an unknown name: the message lists the registered ones
        raise FlagError(f"--{role}: {error}") from None


def _strategy_options(args: argparse.Namespace, role: str) -> dict[str, Any]:
    """Params fields that flags set for ``role`` (only the pool has such flags)."""
    options: dict[str, Any] = {}
    if role == "pool" and args.pool_capacity is not None:
        options["capacity"] = args.pool_capacity
    if role == "pool" and args.no_seed_from_prompt:
        options["seed_from_prompt"] = False
    return options


def _explain(error: ValidationError, flags: dict[str, str], fallback: str = "", context: str = "") -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        flag = flags.get(field, fallback or field)
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{flag}: {message}{context} (got {item.get('input')!r})")
    return "; ".join(lines)


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``do_sample``/``temperature``/``top_p``/``top_k``/``min_p``/``generator`` for generate(); {} if greedy."""
    if not args.sample:
        given = [flag for name, flag in SAMPLING_FLAGS.items() if getattr(args, name) is not None]
        if given:
            raise FlagError(f"{given[0]}: only applies with --sample; add --sample or drop {given[0]}")
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


def eos_ids(model, tokenizer) -> int | list[int] | None:
    """The stop token(s): the generation config's, else the tokenizer's EOS."""
    eos = model.generation_config.eos_token_id
    return eos if eos is not None else tokenizer.eos_token_id


# --------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> int:
    """Parse, load, decode (and compare); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse already printed the message, naming the flag
        return int(exit_.code or 0)
    try:
        config, sampling = build_config(args), sampling_kwargs(args)
    except FlagError as error:
        return fail(error, status=2)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        model, tokenizer = load_model(args.model, dtype=args.dtype, attn_implementation=args.attn, device=args.device)
    except (OSError, ValueError, ImportError) as error:
        return fail(f"--model {args.model or DEFAULT_MODEL}: {error}", status=1)
    try:
        input_ids = encode_prompt(tokenizer, args.prompt, chat=False if args.no_chat else None).to(model.device)
    except ValueError as error:
        return fail(f"--prompt: {error}", status=2)
    print(f"[{args.model or DEFAULT_MODEL}] {config.summary()}", file=sys.stderr)
    return decode(args, model, tokenizer, config, input_ids, sampling)


def decode(args, model, tokenizer, config: LookaheadConfig, input_ids, sampling: dict[str, Any]) -> int:
    """Stream the lookahead output, then print the stats line."""
    eos = eos_ids(model, tokenizer)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    warm_up(model, input_ids)
    try:
        engine = LookaheadEngine(model, config)
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


def fail(error: object, status: int) -> int:
    """Print ``error: ...`` to stderr and return the exit status."""
    print(f"error: {error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
