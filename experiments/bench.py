"""Benchmark decoding methods on real prompts, side by side, in the Spec-Bench format.

    python -m experiments.bench --dataset spec_bench --max-new-tokens 128 --limit 3 --seed 0 --threads 2
    python -m experiments.bench --dataset mt_bench --turns 2 --limit 1 --lookahead 5,4,5 --lookahead 7,5,7
    python -m experiments.bench --config a.yaml --config b.yaml --methods greedy,lookahead
    python -m experiments.bench --report bench_results/20250101-120000      # re-render, no model

Methods: ``greedy`` (plain Hugging Face ``generate``, the baseline; always run), ``pld`` (Hugging
Face prompt lookup decoding) and ``lookahead`` (our engine, once per config: the flags
``--window --ngram --guess-set --pool ...`` build one, each ``--lookahead W,N,G`` one more on top
of those flags, each ``--config file.yaml`` one or a list). Every method decodes every prompt in
the same process, interleaved per prompt, after a warm-up (experiments/harness.py).

Writes into ``--out`` (default ``bench_results/<timestamp>``):
    records.jsonl      a header line (versions, device, threads, machine load, the command), then
                       one line per (prompt, method) as each prompt finishes, then a footer line
    table.md           per-category table and the Spec-Bench speedup matrix (also printed)
    speedup.png        speedup over greedy per category per method
    accepted_hist.png  share of decoding steps by tokens accepted per step
docs/benchmarks.md explains every column and how the timing is kept fair.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from experiments import datasets
from experiments.cli import (
    CliError, add_config_arguments, add_model_arguments, command_line, config_from_args, fail, import_strategies,
    int_at_least, load_model_from_args, read_config_file, run_command, set_threads,
)
from experiments.harness import (
    BASELINE, OVERALL, GreedyMethod, LookaheadMethod, Method, PromptInput, PromptLookupMethod, Record,
    StaticGreedyMethod,
    Summary, run_prompt, summarize, warm_up,
)
from experiments.runinfo import environment, loadavg
from framework.config import LookaheadConfig

METHOD_NAMES = ("greedy", "greedy-static", "pld", "lookahead")
RECORDS, TABLE, SPEEDUP_PNG, ACCEPTED_PNG = "records.jsonl", "table.md", "speedup.png", "accepted_hist.png"


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.split("\n")[0])
    data = parser.add_argument_group("prompts")
    data.add_argument("--dataset", default="spec_bench", choices=datasets.DATASET_NAMES)
    data.add_argument("--limit", type=int_at_least(1), default=None, help="prompts per category (default: all)")
    data.add_argument("--seed", type=int, default=None, help="with --limit: a seeded sample, not the first ones")
    data.add_argument("--turns", type=int, choices=(1, 2), default=1,
                      help="2: also the second turn of two-turn prompts (MT-Bench), after greedy's first answer")
    data.add_argument("--max-new-tokens", type=int_at_least(1), default=128)

    add_model_arguments(parser)

    methods = parser.add_argument_group("methods")
    methods.add_argument("--methods", default="greedy,pld,lookahead",
                         help="comma list of greedy, greedy-static (HF's static cache, compiled by HF on CUDA), "
                              "pld, lookahead; greedy (the baseline) always runs")
    methods.add_argument("--lookahead", action="append", default=[], metavar="W,N,G",
                         help="one more lookahead config: the configuration flags with these W, N, G (repeatable)")
    methods.add_argument("--pld-tokens", type=int_at_least(1), default=10, help="prompt lookup: draft tokens per step")
    methods.add_argument("--pld-ngram", type=int_at_least(1), default=2, help="prompt lookup: longest n-gram matched")

    add_config_arguments(parser, many=True)

    run = parser.add_argument_group("measuring and output")
    run.add_argument("--warmup", type=int, default=1, help="unrecorded runs of every method before timing")
    run.add_argument("--repeats", type=int_at_least(1), default=1, help="timed runs per (prompt, method); median kept")
    run.add_argument("--no-memory", action="store_true", help="don't measure peak memory (no sampler thread)")
    run.add_argument("--out", default=None, help="output folder (default bench_results/<timestamp>)")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument("--wandb", action="store_true", help="log to Weights & Biases (WANDB_MODE=offline unless set)")
    run.add_argument("--wandb-project", default="lookahead-decoding")
    run.add_argument("--report", default=None, metavar="RUN",
                     help="re-render table.md and plots from RUN's records.jsonl (a folder or the file); no model")
    return parser


def method_list(text: str) -> list[str]:
    """``"pld,lookahead"`` -> ``["greedy", "pld", "lookahead"]`` (the baseline first, always)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHOD_NAMES]
    if unknown:
        raise CliError(f"--methods: unknown {unknown}; choose from {', '.join(METHOD_NAMES)}")
    return [name for name in METHOD_NAMES if name in names or name == BASELINE]


def lookahead_configs(args: argparse.Namespace) -> list[tuple[str | None, LookaheadConfig, bool]]:
    """``(label or None, config, compiled)`` for every lookahead config asked for: each ``--config``
    entry (an entry's own ``compile: true|false`` overrides ``--compile``, so one run can compare
    the eager and the compiled step), each ``--lookahead W,N,G``, else the flags alone; ``--set``
    and the sugar flags apply to all."""
    import_strategies(args.imports)
    configs = []
    for path in args.config:
        for label, raw in read_config_file(path):
            compiled = raw.pop("compile", args.compile)
            if not isinstance(compiled, bool):
                raise CliError(f"--config {path}: compile must be true or false, got {compiled!r}")
            configs.append((label, config_from_args(args, raw, f"--config {path}"), compiled))
    for spec in args.lookahead:
        try:
            window, ngram, guess_set = (int(part) for part in spec.split(","))
        except ValueError:
            raise CliError(f"--lookahead: expected three integers W,N,G (e.g. 5,4,5), got {spec!r}") from None
        sizes = {"window": window, "ngram": ngram, "guess_set": guess_set}
        wng = argparse.Namespace(**{**vars(args), **dict.fromkeys(sizes)})  # these three replace the sugar flags
        configs.append((None, config_from_args(wng, sizes, f"--lookahead {spec}"), args.compile))
    return configs or [(None, config_from_args(args), args.compile)]


def build_methods(args: argparse.Namespace) -> list[Method]:
    """The methods in run order: greedy, pld, then one per lookahead config."""
    methods: list[Method] = []
    for name in method_list(args.methods):
        if name == "greedy":
            methods.append(GreedyMethod())
        elif name == "greedy-static":
            methods.append(StaticGreedyMethod())
        elif name == "pld":
            methods.append(PromptLookupMethod(args.pld_tokens, args.pld_ngram))
        else:
            methods.extend(LookaheadMethod(config, name=label, compile=compiled)
                           for label, config, compiled in lookahead_configs(args))
    names = [method.name for method in methods]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CliError(f"--lookahead/--config: the same config twice ({', '.join(duplicates)}); "
                        f"drop one or give it a `label:` in its YAML file")
    return methods


# --------------------------------------------------------------------------------------------
# The run


class RecordWriter:
    """Appends JSON lines, flushed one by one, so a killed run keeps everything it measured."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path.open("a", encoding="utf-8")

    def write(self, kind: str, data: dict[str, Any]) -> None:
        self.file.write(json.dumps({"type": kind, **data}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def atomic_write(path: Path, write) -> None:
    """``write(temporary path)``, then rename it over ``path``: readers never see half a file."""
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write(temporary)
    os.replace(temporary, path)


def check_lengths(model, tokenizer, prompts: Sequence[datasets.Prompt], max_new_tokens: int) -> None:
    """Refuse, before measuring, prompts that with ``max_new_tokens`` exceed the model's positions."""
    from framework.engine import position_limit

    limit = position_limit(model.config)
    if limit is None:
        return
    too_long = [(item.prompt_id, item.input_ids.shape[1]) for item in bench_inputs(tokenizer, prompts)
                if item.input_ids.shape[1] + max_new_tokens > limit]
    if too_long:
        shown = ", ".join(f"{pid} ({tokens} tokens)" for pid, tokens in too_long[:3])
        raise CliError(f"--max-new-tokens {max_new_tokens}: {len(too_long)} prompt(s) would exceed the model's "
                       f"position limit {limit}: {shown}; lower --max-new-tokens or choose other prompts")


def bench_inputs(tokenizer, prompts: Sequence[datasets.Prompt]) -> list[PromptInput]:
    """First-turn inputs (the chat template for chat models, raw text for HumanEval)."""
    return [PromptInput(p.id, p.category, datasets.encode(tokenizer, p, 0), turn=0) for p in prompts]


def second_turn(tokenizer, prompt: datasets.Prompt, first: Record) -> PromptInput:
    """The second turn, with the baseline's first answer in the conversation (every method gets
    the same input, whatever its own first answer was)."""
    answer = tokenizer.decode(first.output_ids, skip_special_tokens=True)
    return PromptInput(prompt.id, prompt.category, datasets.encode(tokenizer, prompt, 1, [answer]), turn=1)


def run_benchmark(model, tokenizer, prompts: Sequence[datasets.Prompt], methods: Sequence[Method],
                  args: argparse.Namespace, on_record, done: dict[tuple[str, int], list[Record]] | None = None,
                  ) -> list[Record]:
    """Warm up, then every prompt (and with ``--turns 2`` its second turn) through every method;
    ``done`` holds the records of (prompt id, turn) pairs an earlier, killed run finished: those are
    kept, not measured again."""
    from tqdm import tqdm

    done = dict(done or {})
    inputs = bench_inputs(tokenizer, prompts)
    two_turns = [args.turns == 2 and len(p.turns) > 1 for p in prompts]
    if inputs and args.warmup > 0:
        warm_up(model, methods, inputs[0].input_ids, args.max_new_tokens, args.warmup)
    records: list[Record] = []
    bar = tqdm(total=len(inputs) + sum(two_turns), desc="prompts", unit="prompt", file=sys.stderr, dynamic_ncols=True)

    def measure(item: PromptInput) -> list[Record]:
        finished = done.get((item.prompt_id, item.turn))
        if finished is None:
            finished = run_prompt(model, methods, item, args.max_new_tokens, repeats=args.repeats, rotate=bar.n,
                                  track_memory=not args.no_memory)
            for record in finished:
                on_record(record)
        records.extend(finished)
        bar.set_postfix_str(_throughput(records), refresh=False)
        bar.update(1)
        return finished

    for prompt, item, both in zip(prompts, inputs, two_turns):
        first = measure(item)
        if both:
            baseline = next(record for record in first if record.method == BASELINE)
            measure(second_turn(tokenizer, prompt, baseline))
    bar.close()
    return records


def _throughput(records: Sequence[Record]) -> str:
    """Running tokens/s per method, for the progress bar."""
    totals: dict[str, list[float]] = {}
    for record in records:
        total = totals.setdefault(record.method, [0, 0.0])
        total[0] += record.new_tokens
        total[1] += record.wall_seconds
    return " ".join(f"{name}={tokens / seconds:.1f}tok/s" for name, (tokens, seconds) in totals.items() if seconds)


# --------------------------------------------------------------------------------------------
# The header


def header_record(args: argparse.Namespace, model, methods: Sequence[Method], prompts) -> dict[str, Any]:
    """The header record: what was run (the command, prompts, methods), where and under what load."""
    return {
        **environment(model),
        "command": command_line("python -m experiments.bench", args.argv),
        "dataset": args.dataset, "limit_per_category": args.limit, "seed": args.seed, "turns": args.turns,
        "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "warmup": args.warmup, "repeats": args.repeats,
        "model": args.model or "SmolLM2-135M-Instruct",
        "methods": {method.name: method.config for method in methods},
    }


# --------------------------------------------------------------------------------------------
# Report: markdown and plots


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def markdown_tables(rows: Sequence[Summary], header: dict[str, Any] | None = None,
                    records: Sequence[Record] = ()) -> str:
    """The per-category table (one row per category and method, then Overall) and the
    Spec-Bench speedup matrix (one row per method, one column per category)."""
    lines = [_title(header), ""] if header else []
    lines += [
        "| Category | Method | Prompts | Tokens/step | Tokens/forward | Speedup | Identical | Tokens/s | ms/step "
        "| Host ms/step |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        category = f"**{row.category}**" if row.category == OVERALL else row.category
        lines.append(
            f"| {category} | {row.method} | {row.prompts} | {row.tokens_per_step:.2f} | {row.tokens_per_forward:.2f} "
            f"| {_fmt(row.speedup, '{:.2f}x')} | {_fmt(None if row.identical is None else 100 * row.identical, '{:.0f}%')} "
            f"| {row.tokens_per_second:.1f} | {_fmt(row.ms_per_step, '{:.1f}')} | {_fmt(row.host_ms, '{:.2f}')} |"
        )
    return "\n".join(lines + ["", speedup_matrix(rows), ""] + attribution_table(rows, records)
                     + scheduler_table(records))


def scheduler_table(records: Sequence[Record]) -> list[str]:
    """Per lookahead method: what its scheduler chose (step-weighted means of each prompt's
    summary, e.g. the adaptive scheduler's mean width and budget) and each source's acceptance
    (accepted draft tokens / tree nodes fed)."""
    chosen: dict[str, list[tuple[dict, int]]] = {}
    fed: dict[str, Counter] = {}
    accepted: dict[str, Counter] = {}
    for record in records:
        if record.source_fed or record.scheduler:
            chosen.setdefault(record.method, []).append((record.scheduler, record.steps))
            fed.setdefault(record.method, Counter()).update(record.source_fed)
            accepted.setdefault(record.method, Counter()).update(record.source_accepted)
    if not chosen:
        return []
    keys = sorted({key for runs in chosen.values() for summary, _ in runs for key in summary})
    sources = sorted({source for counts in fed.values() for source in counts})
    lines = ["What each lookahead method's scheduler chose (means over steps) and each source's acceptance "
             "(accepted draft tokens / tree nodes fed):", "",
             "| Method | " + " | ".join(keys + [f"{s} acceptance" for s in sources]) + " |",
             "| --- |" + " ---: |" * (len(keys) + len(sources))]
    for method, runs in chosen.items():
        means = []
        for key in keys:
            having = [(summary[key], n) for summary, n in runs if key in summary]
            steps = sum(n for _, n in having)
            means.append(sum(v * n for v, n in having) / steps if steps else None)
        rates = [accepted[method][s] / fed[method][s] if fed[method][s] else None for s in sources]
        lines.append(f"| {method} | " + " | ".join(_fmt(v, "{:.2f}") for v in means + rates) + " |")
    return lines + [""]


def attribution_table(rows: Sequence[Summary], records: Sequence[Record]) -> list[str]:
    """Per lookahead method: which sources won the steps that accepted a draft (an n-gram's harvest
    tag for the ngram source: prompt, lookahead, output), as shares of those steps."""
    won: dict[str, Counter] = {}
    for record in records:
        if record.sources:
            won.setdefault(record.method, Counter()).update({k: v for k, v in record.sources.items() if k != "none"})
    if not won:
        return []
    origins = sorted({origin for counts in won.values() for origin in counts})
    lines = ["Steps that accepted a draft, by the source of the winning draft:", "",
             "| Method | " + " | ".join(origins) + " |", "| --- |" + " ---: |" * len(origins)]
    for method, counts in won.items():
        total = sum(counts.values()) or 1
        lines.append(f"| {method} | " + " | ".join(f"{100 * counts[o] / total:.0f}%" for o in origins) + " |")
    return lines + [""]


def speedup_matrix(rows: Sequence[Summary]) -> str:
    categories = list(dict.fromkeys(row.category for row in rows))
    methods = list(dict.fromkeys(row.method for row in rows))
    cell = {(row.category, row.method): row for row in rows}
    lines = [
        "| Method | " + " | ".join(categories) + " | Tokens/step (overall) |",
        "| --- |" + " ---: |" * (len(categories) + 1),
    ]
    for method in methods:
        speedups = [_fmt(getattr(cell.get((c, method)), "speedup", None), "{:.2f}x") for c in categories]
        overall = cell.get((OVERALL, method))
        lines.append(f"| {method} | " + " | ".join(speedups) + f" | {_fmt(getattr(overall, 'tokens_per_step', None), '{:.2f}')} |")
    return "\n".join(lines)


def _title(header: dict[str, Any]) -> str:
    load = header.get("loadavg")
    return (
        f"{header['dataset']} ({header['prompts']} prompts, turns={header.get('turns', 1)}), {header['model']}, "
        f"{header['dtype']}, {header['max_new_tokens']} new tokens, {header['device_name']} "
        f"({header['device']}, {header['torch_threads']} threads, load {load[0] if load else 'n/a'}), "
        f"{header['date']}, git {header.get('git')}\n\n`{header['command']}`"
    )


def plot_speedup(rows: Sequence[Summary], path: Path, baseline: str = BASELINE) -> None:
    plt = _pyplot()
    categories = list(dict.fromkeys(row.category for row in rows))
    methods = [m for m in dict.fromkeys(row.method for row in rows) if m != baseline]
    cell = {(row.category, row.method): row.speedup for row in rows}
    fig, ax = plt.subplots(figsize=(min(14.0, 3 + 1.1 * len(categories) * max(1, len(methods)) ** 0.5), 4.5))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        values = [cell.get((c, method)) or 0.0 for c in categories]
        ax.bar([x + (i - (len(methods) - 1) / 2) * width for x in range(len(categories))], values, width, label=method)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(categories)), [c.replace(" ", "\n", 1) for c in categories], fontsize=8)
    ax.set_ylabel(f"speedup over {baseline} (median wall ratio)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accepted(records: Sequence[Record], path: Path, baseline: str = BASELINE) -> None:
    plt = _pyplot()
    by_method: dict[str, list[int]] = {}
    for record in records:
        if record.method != baseline:
            by_method.setdefault(record.method, []).extend(record.emitted_per_step)
    top = max((max(v) for v in by_method.values() if v), default=1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / max(1, len(by_method))
    for i, (method, accepted) in enumerate(by_method.items()):
        shares = [accepted.count(k) / len(accepted) if accepted else 0.0 for k in range(1, top + 1)]
        ax.bar([k + (i - (len(by_method) - 1) / 2) * width for k in range(1, top + 1)], shares, width, label=method)
    ax.set_xlabel("tokens accepted in one decoding step")
    ax.set_ylabel("share of decoding steps")
    ax.set_xticks(range(1, top + 1))
    if by_method:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(out: Path, header: dict[str, Any], records: Sequence[Record], plots: bool = True) -> str:
    """table.md (+ the PNGs) from the records; returns the markdown."""
    rows = summarize(records)  # categories in first-seen order: the dataset's order
    text = markdown_tables(rows, header, records)
    atomic_write(out / TABLE, lambda path: path.write_text(text))
    if plots and records:
        atomic_write(out / SPEEDUP_PNG, lambda path: plot_speedup(rows, path))
        atomic_write(out / ACCEPTED_PNG, lambda path: plot_accepted(records, path))
    return text


def read_run(path: str | Path) -> tuple[dict[str, Any], list[Record]]:
    """The header and records of a ``records.jsonl`` (a killed or resumed run's too; a torn last
    line is skipped)."""
    path = Path(path)
    path = path / RECORDS if path.is_dir() else path
    header: dict[str, Any] = {}
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:  # a line cut off by a kill
            continue
        kind = data.pop("type", "record")
        if kind == "header":
            if header and run_key(header) != run_key(data):
                raise CliError(f"{path}: holds two different runs (a second header at a later line); re-run them "
                               f"into separate folders")
            header = header or data
        elif kind == "record":
            records.append(Record.from_json(data))
    return header, records


RUN_KEYS = ("dataset", "limit_per_category", "seed", "turns", "max_new_tokens", "warmup", "repeats",
            "model", "dtype", "device", "torch_threads", "methods")


def run_key(header: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs one: the prompts, the methods and their configs, the model, the device
    and its threads; not the date, the load or the commit."""
    return {key: header.get(key) for key in RUN_KEYS}


def resume(out: Path, header: dict[str, Any], methods: Sequence[Method]) -> dict[tuple[str, int], list[Record]]:
    """The finished (prompt id, turn) pairs of the run already in ``out``: the same run or refused.
    A torn last line (a kill mid-write) and pairs missing a method are dropped from the file."""
    path = out / RECORDS
    text = path.read_text(errors="replace")
    if text and not text.endswith("\n"):
        kept = text[: text.rfind("\n") + 1]
        print(f"[bench] {path}: dropped a torn last line ({len(text) - len(kept)} bytes) left by a killed run",
              file=sys.stderr)
        text = kept
    earlier, records = read_run(path) if text else ({}, [])
    if earlier and run_key(earlier) != run_key(header):
        differ = [key for key, value in run_key(header).items() if run_key(earlier).get(key) != value]
        raise CliError(f"--out {out}: holds a different run (it differs in {', '.join(differ)}); choose a new "
                       f"folder, or re-render that one with --report {out}")
    groups: dict[tuple[str, int], list[Record]] = {}
    for record in records:
        groups.setdefault((record.prompt_id, record.turn), []).append(record)
    names = {method.name for method in methods}
    done = {pair: group for pair, group in groups.items() if {r.method for r in group} == names}
    lines = [json.dumps({"type": "header", **(earlier or header)})]
    lines += [json.dumps({"type": "record", **r.to_json()}) for group in done.values() for r in group]
    atomic_write(path, lambda temporary: temporary.write_text("\n".join(lines) + "\n"))
    if done:
        print(f"[bench] resuming {out}: {len(done)} finished prompt turns kept, not measured again", file=sys.stderr)
    return done


# --------------------------------------------------------------------------------------------
# Weights & Biases (imported only with --wandb)


def log_wandb(args: argparse.Namespace, header: dict[str, Any], records: Sequence[Record], out: Path) -> None:
    """One W&B run after the measurements: the records as a table, the summary cells, the plots."""
    from experiments.wandb_log import WandbLogger

    logger = WandbLogger(args.wandb_project, f"{header['dataset']}-{header['device']}", out,
                         tags=[header["device"], header["dataset"], header["dtype"]], config=header)
    run = logger.run(out.name, "bench")
    run.log({"records": logger.table([record.to_json(with_outputs=False) for record in records]),
             **logger.images([out / SPEEDUP_PNG, out / ACCEPTED_PNG])})
    run.summary.update({f"{row.category}/{row.method}/{key}": getattr(row, key)
                        for row in summarize(records) for key in ("tokens_per_step", "speedup", "identical")})
    logger.finish(run)


# --------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None, *, model_and_tokenizer=None) -> int:
    """Parse, load, measure, report; returns the exit status (0 done, 1 failed, 2 bad flag).
    ``model_and_tokenizer`` replaces loading ``--model`` (tests pass a tiny model)."""
    return run_command(build_parser(), argv, lambda args: report(args) if args.report else run(args, model_and_tokenizer))


def run(args: argparse.Namespace, model_and_tokenizer=None) -> int:
    methods = build_methods(args)
    try:
        prompts = datasets.load_dataset(args.dataset, limit_per_category=args.limit, seed=args.seed)
    except (ValueError, ModuleNotFoundError, FileNotFoundError) as error:
        raise CliError(f"--dataset {args.dataset}: {error}") from None
    out = output_folder(args.out)
    threads = set_threads(args.threads)
    model, tokenizer = model_and_tokenizer or load_model_from_args(args)
    check_lengths(model, tokenizer, prompts, args.max_new_tokens)
    print(f"[bench] {len(prompts)} prompts x {len(methods)} methods on {model.device}, {threads} -> {out}",
          file=sys.stderr)
    return measure_and_report(args, model, tokenizer, prompts, methods, out)


def output_folder(path: str | None) -> Path:
    """``--out`` (default ``bench_results/<timestamp>``), created and checked writable up front."""
    out = Path(path or Path("bench_results") / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    if out.exists() and not (out.is_dir() and os.access(out, os.W_OK)):
        raise CliError(f"--out {out}: not a writable folder; choose another")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"--out {out}: cannot create it ({error.strerror or error})") from None
    return out


def measure_and_report(args, model, tokenizer, prompts, methods, out: Path) -> int:
    """The run proper: header, records as they come, the report (stdout); returns 0. A folder
    holding the same run (a killed one) is resumed; one holding another run is refused."""
    header = header_record(args, model, methods, prompts)
    existing = (out / RECORDS).exists()
    done = resume(out, header, methods) if existing else {}
    writer = RecordWriter(out / RECORDS)
    if existing:  # resume() kept the first header
        writer.write("resume", {"date": header["date"], "git": header["git"], "loadavg": header["loadavg"]})
    else:
        writer.write("header", header)
    start = time.perf_counter()
    try:
        records = run_benchmark(model, tokenizer, prompts, methods, args,
                                lambda record: writer.write("record", record.to_json()), done)
    finally:
        writer.write("footer", {"elapsed_seconds": round(time.perf_counter() - start, 2), "loadavg": loadavg()})
        writer.close()
    text = write_report(out, read_run(out)[0], records, plots=not args.no_plots)
    if args.wandb:
        log_wandb(args, header, records, out)
    print(text)
    return 0


def report(args: argparse.Namespace) -> int:
    try:
        header, records = read_run(args.report)
    except OSError as error:
        return fail(f"--report: {error}", 2)
    if not header:
        return fail(f"--report {args.report}: no header line; is this a bench records.jsonl?", 2)
    out = Path(args.out) if args.out else (Path(args.report) if Path(args.report).is_dir() else Path(args.report).parent)
    out.mkdir(parents=True, exist_ok=True)
    print(write_report(out, header, records, plots=not args.no_plots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
