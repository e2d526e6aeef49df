"""Run an ablation suite: named arms on the same prompts, with intervals and paired tests.

    python -m experiments.ablate --suite paper-table3 --dataset mt_bench --limit 1 --seed 0 --threads 1
    python -m experiments.ablate --suite scaling-law --dataset spec_bench --limit 1 --max-new-tokens 64
    python -m experiments.ablate --suite my_suite.yaml --import my_pools.py --timing --repeats 3
    python -m experiments.ablate --suite wng-grid --check          # validate and list the arms, no model
    python -m experiments.ablate --report ablation_results/paper-table3-20261201-120000   # re-render

Suites are YAML files (``experiments/ablations/*.yaml``, or any file; experiments/ablate_suite.py
describes the format). Modes:

    --steps-only (default)  each (arm, prompt) decoded once, in order, no warm-up: tokens per
                            step, acceptance and fed tokens are device-independent, so nothing
                            is timed twice. Plain greedy runs once per prompt as the reference
                            of the identity check.
    --timing                the bench's fair timing (warm-up, interleaved, rotating, --repeats)
                            and a Speedup column against plain greedy.

Writes into ``--out`` (default ``ablation_results/<suite>-<timestamp>``): ``records.jsonl`` (a
header, one line per (arm, prompt) as it finishes, a footer; a killed run resumes into the same
folder without re-running finished pairs, and arms added to the suite since are run on their
own), ``table.md`` (also printed), ``tokens_per_step.png``, ``scaling_law.png`` (suites with a
``scaling:`` block) and an offline W&B run (``--no-wandb`` to skip). docs/ablations.md has the
columns and the measured suites.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import fnmatch
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from experiments import ablate_report, datasets
from experiments.ablate_suite import Arm, Suite, build_method, load_suite
from experiments.bench import RECORDS, RecordWriter, atomic_write, bench_inputs, check_lengths, output_folder
from experiments.cli import (
    CliError, add_model_arguments, command_line, import_strategies, int_at_least, load_model_from_args,
    run_command, set_threads,
)
from experiments.harness import BASELINE, ForwardCounter, Method, Record, compare, run_prompt, warm_up
from experiments.runinfo import environment, loadavg


@dataclasses.dataclass
class ArmRecord(Record):
    """A harness record plus the tokens fed by the decoding steps (every forward but the prefill)."""

    decode_fed_tokens: int = 0


class CountedMethod:
    """A harness method that also keeps the tokens each forward of each run fed (a second hook)."""

    def __init__(self, method: Method, arm: Arm) -> None:
        self.method, self.arm = method, arm
        self.name, self.config = method.name, method.config
        self.fed: list[list[int]] = []  # one list per run: tokens fed by each forward

    def run(self, model, input_ids, max_new_tokens):
        with ForwardCounter(model) as counter:
            result = self.method.run(model, input_ids, max_new_tokens)
        self.fed.append(counter.fed)
        return result


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.ablate", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", help="a shipped suite (paper-table3, scaling-law, wng-grid, sampling) or a YAML file")
    parser.add_argument("--arms", default=None, metavar="PATTERNS",
                        help="comma list of arm names or shell patterns ('W=*N=11*'): run only those")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="register strategies from a module or a .py file first (repeatable)")
    parser.add_argument("--check", action="store_true", help="validate the suite, list its arms and exit (no model)")
    data = parser.add_argument_group("prompts")
    data.add_argument("--dataset", default="spec_bench", choices=datasets.DATASET_NAMES)
    data.add_argument("--limit", type=int_at_least(1), default=None, help="prompts per category (default: all)")
    data.add_argument("--seed", type=int, default=None,
                      help="with --limit: a seeded sample; also seeds the bootstrap and sampling arms (default 0)")
    data.add_argument("--max-new-tokens", type=int_at_least(1), default=128)
    add_model_arguments(parser)
    run = parser.add_argument_group("measuring and output")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--steps-only", dest="timing", action="store_false", help="(default) no wall-time columns")
    mode.add_argument("--timing", action="store_true", help="fair timing as the bench does, and a Speedup column")
    parser.set_defaults(timing=False)
    run.add_argument("--warmup", type=int, default=None, help="--timing: unrecorded runs of every arm first (default 1)")
    run.add_argument("--repeats", type=int_at_least(1), default=None, help="--timing: timed runs per pair (default 1)")
    run.add_argument("--no-memory", action="store_true", help="don't measure peak memory (no sampler thread)")
    run.add_argument("--out", default=None, help="output folder (default ablation_results/<suite>-<timestamp>)")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument("--no-wandb", action="store_true", help="no W&B run (default: one, offline unless WANDB_MODE says)")
    run.add_argument("--wandb-project", default="lookahead-decoding")
    run.add_argument("--report", default=None, metavar="RUN", help="re-render RUN's table and plots; no model")
    return parser


def check_mode(args: argparse.Namespace) -> None:
    """--warmup and --repeats belong to --timing; fill their defaults."""
    if not args.timing:
        for flag, value in (("--warmup", args.warmup), ("--repeats", args.repeats)):
            if value is not None:
                raise CliError(f"{flag}: only with --timing (steps-only runs each pair once, without warm-up)")
    args.warmup = 1 if args.warmup is None else args.warmup
    args.repeats = 1 if args.repeats is None else args.repeats


def select_arms(suite: Suite, patterns: str | None) -> Suite:
    """The suite with only the arms matching ``--arms`` (the reference moves to the first kept
    arm if it was left out)."""
    if not patterns:
        return suite
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    kept = [arm for arm in suite.arms if any(fnmatch.fnmatchcase(arm.name, p) for p in wanted)]
    if not kept:
        names = ", ".join(arm.name for arm in suite.arms)
        raise CliError(f"--arms {patterns}: matches no arm of {suite.name}; arms: {names}")
    reference = suite.reference if suite.reference in {arm.name for arm in kept} else kept[0].name
    if reference != suite.reference:
        print(f"[ablate] --arms leaves out the reference {suite.reference!r}; comparing with {reference!r}",
              file=sys.stderr)
    return suite.model_copy(update={"arms": kept, "reference": reference})


def baseline_arm(suite: Suite) -> Arm:
    """The plain greedy arm: the suite's own, or one added as the identity check's reference."""
    own = next((arm for arm in suite.arms if arm.method == "greedy"), None)
    if own is not None:
        return own
    if BASELINE in {arm.name for arm in suite.arms}:
        raise CliError(f"suite {suite.source}: the name {BASELINE!r} is kept for the plain greedy reference; "
                       f"rename that arm or make it `method: greedy`")
    return Arm(name=BASELINE, method="greedy")


def check(suite: Suite) -> int:
    """``--check``: the arms, what they run and the most tokens a step feeds (stdout)."""
    print(f"suite {suite.name} ({suite.source}): {len(suite.arms)} arms, reference {suite.reference!r}")
    for arm in suite.arms:
        fed = arm.lookahead_config().step_tokens() if arm.method == "lookahead" else None
        print(f"  {arm.name:<32} {ablate_report.arm_label(arm)}" + (f"  (<= {fed} tokens/step)" if fed else ""))
    return 0


# --------------------------------------------------------------------------------------------
# The run


def run_suite(model, tokenizer, prompts: Sequence[datasets.Prompt], methods: list[CountedMethod], args,
              done: dict[tuple[str, int], dict[str, Record]], on_record) -> None:
    """Every (arm, prompt) pair not in ``done``, prompt by prompt, the baseline first.

    Steps-only: each pair once, recorded as soon as it finishes (a kill loses at most the pair
    being decoded); one short unrecorded greedy run first pages the weights in, so that the first
    pair's peak memory is its own. --timing: warm-up, then the prompt's missing pairs interleaved
    and repeated as the bench does (recorded when the prompt is done)."""
    from tqdm import tqdm

    inputs = bench_inputs(tokenizer, prompts)
    pending = [item for item in inputs if len(done.get((item.prompt_id, item.turn), {})) < len(methods)]
    if pending:
        warm_up(model, methods if args.timing else methods[:1], inputs[0].input_ids,
                args.max_new_tokens if args.timing else 2, args.warmup if args.timing else 1)
    bar = tqdm(total=len(inputs) * len(methods), desc="arm x prompt", unit="run", file=sys.stderr, dynamic_ncols=True)
    for index, item in enumerate(inputs):
        finished = dict(done.get((item.prompt_id, item.turn), {}))
        todo = [method for method in methods if method.name not in finished]
        bar.update(len(methods) - len(todo))
        batches = [todo] if args.timing else [[method] for method in todo]
        for batch in batches if todo else []:
            for method in batch:
                method.fed.clear()
            records = run_prompt(model, batch, item, args.max_new_tokens, repeats=args.repeats if args.timing else 1,
                                 rotate=index if args.timing else 0, baseline=methods[0].name,
                                 track_memory=not args.no_memory)
            for method, record in zip(batch, records):
                record = arm_record(method, record, finished.get(methods[0].name))
                finished[record.method] = record
                on_record(record)
                bar.set_postfix_str(f"{record.method}: {record.tokens_per_step:.2f} tok/step", refresh=False)
                bar.update(1)
    bar.close()


def arm_record(method: CountedMethod, record: Record, reference: Record | None) -> ArmRecord:
    """The record with its decoding steps' fed tokens and the identity check settled: against the
    baseline's record (this prompt's, run before it or kept from a killed run) when it was not
    run alongside; none for sampling arms."""
    fed = sum(method.fed[0][1:]) if method.fed else 0  # the first run of this pair; forward 0 is the prefill
    result = ArmRecord(**dataclasses.asdict(record), decode_fed_tokens=fed)
    if not method.arm.exact:
        result.identical = result.mismatch_at = None
    elif result.identical is None and reference is not None:
        compare(result, reference.output_ids)
    return result


# --------------------------------------------------------------------------------------------
# Records: header, resume, reading


RUN_KEYS = ("suite_name", "dataset", "limit_per_category", "seed", "max_new_tokens", "model", "dtype", "device",
            "mode", "warmup", "repeats", "baseline")


def header_record(args, model, suite: Suite, baseline: Arm, prompts) -> dict[str, Any]:
    return {
        **environment(model),
        "command": command_line("python -m experiments.ablate", args.argv),
        "suite_name": suite.name, "suite": suite.model_dump(mode="json"),
        "dataset": args.dataset, "limit_per_category": args.limit, "seed": args.seed, "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens, "model": args.model or "SmolLM2-135M-Instruct",
        "parameters": model.num_parameters(),
        "mode": "timing" if args.timing else "steps-only", "warmup": args.warmup if args.timing else 0,
        "repeats": args.repeats if args.timing else 1, "baseline": baseline.name,
        "arms": {arm.name: arm.describe() for arm in [baseline, *suite.arms]},
    }


def run_key(header: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs one; with timing the thread count too (steps-only numbers do not
    depend on it)."""
    keys = RUN_KEYS + (("torch_threads",) if header.get("mode") == "timing" else ())
    return {key: header.get(key) for key in keys}


def read_records(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[ArmRecord]]:
    """The first header, the later resume lines and the records of ``records.jsonl`` (a line cut
    off by a kill is skipped)."""
    header: dict[str, Any] = {}
    resumes, records = [], []
    for line in path.read_text(errors="replace").splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = data.pop("type", None)
        if kind == "header":
            header = header or data
        elif kind == "resume":
            resumes.append(data)
        elif kind == "record":
            records.append(ArmRecord.from_json(data))
    return header, resumes, records


def resume(out: Path, header: dict[str, Any]) -> dict[tuple[str, int], dict[str, Record]]:
    """The finished (arm, prompt) pairs of the run already in ``out``: the same run (arms may have
    been added; one that changed is refused), or refused. A torn last line is cut off first."""
    path = out / RECORDS
    text = path.read_text(errors="replace")
    if text and not text.endswith("\n"):
        kept = text[: text.rfind("\n") + 1]
        atomic_write(path, lambda temporary: temporary.write_text(kept))
        print(f"[ablate] {path}: dropped a torn last line ({len(text) - len(kept)} bytes) left by a killed run",
              file=sys.stderr)
    earlier, resumes, records = read_records(path)
    if not earlier:
        raise CliError(f"--out {out}: holds a records.jsonl without a header; choose a new folder")
    differ = [key for key, value in run_key(header).items() if run_key(earlier).get(key) != value]
    known = {name: spec for line in [earlier, *resumes] for name, spec in line.get("arms", {}).items()}
    differ += [f"arm {name!r}" for name, spec in header["arms"].items() if name in known and known[name] != spec]
    if differ:
        raise CliError(f"--out {out}: holds a different run (it differs in {', '.join(differ)}); choose a new "
                       f"folder, rename changed arms, or re-render that one with --report {out}")
    done: dict[tuple[str, int], dict[str, Record]] = {}
    for record in records:
        if record.method in header["arms"]:
            done.setdefault((record.prompt_id, record.turn), {})[record.method] = record
    pairs = sum(len(arms) for arms in done.values())
    if pairs:
        print(f"[ablate] resuming {out}: {pairs} finished (arm, prompt) pairs kept, not measured again", file=sys.stderr)
    return done


# --------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None, *, model_and_tokenizer=None) -> int:
    """Parse, load, measure, report; returns the exit status (0 done, 1 failed, 2 bad flag).
    ``model_and_tokenizer`` replaces loading ``--model`` (tests pass a tiny model)."""
    return run_command(build_parser(), argv, lambda args: dispatch(args, model_and_tokenizer))


def dispatch(args: argparse.Namespace, model_and_tokenizer) -> int:
    import_strategies(args.imports)
    if args.report:
        return report(args)
    if not args.suite:
        raise CliError("--suite: required (a shipped suite name or a YAML file), or --report RUN")
    suite = select_arms(load_suite(args.suite), args.arms)
    if args.check:
        return check(suite)
    check_mode(args)
    return run(args, suite, model_and_tokenizer)


def run(args: argparse.Namespace, suite: Suite, model_and_tokenizer=None) -> int:
    baseline = baseline_arm(suite)
    seed = args.seed or 0
    arms = [baseline] + [arm for arm in suite.arms if arm is not baseline]
    methods = [CountedMethod(build_method(arm, seed, args.compile), arm) for arm in arms]
    try:
        prompts = datasets.load_dataset(args.dataset, limit_per_category=args.limit, seed=args.seed)
    except (ValueError, ModuleNotFoundError, FileNotFoundError) as error:
        raise CliError(f"--dataset {args.dataset}: {error}") from None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = output_folder(args.out or str(Path("ablation_results") / f"{suite.name}-{stamp}"))
    threads = set_threads(args.threads)
    model, tokenizer = model_and_tokenizer or load_model_from_args(args)
    check_lengths(model, tokenizer, prompts, args.max_new_tokens)
    print(f"[ablate] {suite.name}: {len(arms)} arms x {len(prompts)} prompts on {model.device}, {threads}, "
          f"{'timing' if args.timing else 'steps only'} -> {out}", file=sys.stderr)
    header = header_record(args, model, suite, baseline, prompts)
    existing = (out / RECORDS).exists()
    done = resume(out, header) if existing else {}
    writer = RecordWriter(out / RECORDS)
    writer.write("resume" if existing else "header", header)
    start = time.perf_counter()
    try:
        run_suite(model, tokenizer, prompts, methods, args, done, lambda r: writer.write("record", r.to_json()))
    finally:
        writer.write("footer", {"elapsed_seconds": round(time.perf_counter() - start, 2), "loadavg": loadavg()})
        writer.close()
    return finish(args, out, suite, header)


def finish(args, out: Path, suite: Suite, header: dict[str, Any]) -> int:
    """The report of the run in ``out`` (this invocation's arms), printed; W&B unless --no-wandb."""
    _, _, records = read_records(out / RECORDS)
    text, numbers = ablate_report.write_report(out, suite, header, records, header["baseline"], plots=not args.no_plots)
    if not args.no_wandb:
        ablate_report.log_wandb(args.wandb_project, suite, header, records, numbers, out)
    print(text)
    return 0


def report(args: argparse.Namespace) -> int:
    """``--report RUN``: re-render from the records with the suite as last run there (no model)."""
    path = Path(args.report)
    path = path / RECORDS if path.is_dir() else path
    try:
        header, resumes, records = read_records(path)
    except OSError as error:
        raise CliError(f"--report {args.report}: {error}") from None
    if not header:
        raise CliError(f"--report {args.report}: no header line; is this an ablate records.jsonl?")
    header = {**header, **(resumes[-1] if resumes else {})}
    suite = Suite.model_validate(header["suite"])
    out = Path(args.out) if args.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    text, _ = ablate_report.write_report(out, suite, header, records, header["baseline"], plots=not args.no_plots)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
