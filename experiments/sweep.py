"""Find the best lookahead settings for one model on one device: an Optuna search over W/N/G and
the strategies, measured with the benchmark harness.

    python -m experiments.sweep                                   # sweeps/default.yaml, default model
    python -m experiments.sweep --space sweeps/gpu.yaml --model <folder> --wandb
    python -m experiments.sweep --trials 12                       # the same study: 12 more trials
    python -m experiments.sweep --objective speed,memory          # a Pareto front (another study)
    python -m experiments.sweep --storage postgresql://u@host/db --workers 8 --devices cuda:0,...,cuda:7

Glossary:
    space       a sweep file (sweeps/*.yaml, experiments/sweep_space.py): prompts, token budget,
                objective and the search space over ``LookaheadConfig``.
    study       one Optuna study per (model, device, space): its name holds the model, the device
                (CPU model and thread count, or GPU name) and the space's name and fingerprint.
                Stored in SQLite (``sweeps/results/optuna.db``) or a database server that many
                workers share (experiments/sweep_workers.py); a rerun continues it.
    trial       one config decoding the sweep prompts (experiments/sweep_measure.py). A config the
                study already measured (or another worker is measuring) is not measured again: the
                trial repeats the earlier values (``duplicate_of``) and does not count toward
                ``--trials``.
    budget      ``--trials`` more measured trials than the study held, shared by every worker of
                the study; a rerun after a crash completes an unfilled budget.
    session     one process of this command (a run, or one of its workers): its baseline (plain
                greedy, timed at the start and at the end: the drift), its trials.

A run: load the model; open the study (trials a killed worker left RUNNING are marked failed via
the storage heartbeat and queued again); time the baseline; run trials until the study holds its
budget (a seeded TPE sampler whose seed is the base seed plus the study's trial count; prompts
shortest first with median pruning); time the baseline again; then the process that finished last
(the one whose trial is the newest) re-measures the best feasible config against plain greedy on
held-out prompts, interleaved; writes ``<results>/<study>/best.yaml``, ``summary.json`` and
``report.html`` (+ PNGs); prints the config, the commands that use it (tested by running them) and
an optuna-dashboard hint; a warning when the best config is not faster than plain greedy on the
held-out prompts. Exit status: 0 done, 1 no feasible trial or the model failed (or a worker of
``--workers`` failed), 2 a bad flag or sweep file (the message names the key), 130 interrupted
(rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import ValidationError

from experiments.cli import (
    CliError, add_model_arguments, assign, command_line, import_strategies, int_at_least, load_model_from_args,
    parse_set, run_command, set_threads,
)
from experiments.harness import config_label, dump_config
from experiments.runinfo import describe_device, git_commit, loadavg, now
from experiments.sweep_measure import (
    Baseline, TrialRecords, drift, heldout_prompts, measure_config, measure_heldout, sweep_prompts, time_baseline,
)
from experiments.sweep_report import (
    BEST_YAML, REPORT_HTML, SUMMARY_JSON, best_yaml, log_summary, log_trial, use_commands, write_report,
)
from experiments.sweep_space import OBJECTIVES, SpaceError, Sweep, load_sweep, parse_sweep
from experiments.sweep_workers import (
    GRACE_SECONDS, HEARTBEAT_SECONDS, Worker, check_storage, claim_target, connect, fail_stale, in_flight,
    is_measured, launch_workers, measured_trials, open_storage, parse_devices, poll_seconds, shown, sqlite_folder,
    wait_until_quiet, worker_commands, worker_flags, writes_report,
)
from framework.config import LookaheadConfig

DEFAULT_SPACE = Path(__file__).resolve().parent.parent / "sweeps" / "default.yaml"
DEFAULT_STORAGE = "sqlite:///sweeps/results/optuna.db"


class InvalidConfig(Exception):
    """A drawn config the engine refuses (a cross-field rule); the trial fails, the sweep goes on."""


class BudgetFull(Exception):
    """Another worker started the study's last budgeted trial first: this trial is withdrawn (FAIL)."""


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--space", default=str(DEFAULT_SPACE), help="sweep file (default sweeps/default.yaml)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="register strategies from a module or a .py file first (repeatable)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override any key of the sweep file, dotted: limit=2, space.window.high=4, "
                             "heldout.limit=2 (repeatable; YAML values)")
    add_model_arguments(parser, dtype=None)
    parser.add_argument("--dataset", default=None, help="overrides the file's dataset")
    parser.add_argument("--limit", type=int_at_least(1), default=None, help="prompts per category (overrides the file)")
    parser.add_argument("--max-new-tokens", type=int_at_least(1), default=None, help="overrides the file")
    parser.add_argument("--trials", type=int_at_least(0), default=None,
                        help="measured trials to add to the study, shared by its workers (0: only report)")
    parser.add_argument("--objective", default=None, help="speed (tokens/s), tokens_per_step, speedup, memory; "
                        "comma-separated for several, e.g. speed,memory")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"Optuna storage URL (default {DEFAULT_STORAGE}); workers on many machines share "
                             f"postgresql://user@host:port/db (pip install '.[distributed]')")
    parser.add_argument("--out", default=None, help="results folder (default: the SQLite file's folder)")
    parser.add_argument("--no-heldout", action="store_true", help="skip the held-out re-measurement")
    parser.add_argument("--no-report", action="store_true", help="skip the PNG/HTML report")
    parser.add_argument("--wandb", action="store_true", help="log to Weights & Biases (WANDB_MODE=offline unless set)")
    parser.add_argument("--wandb-project", default="lookahead-decoding-sweeps")
    worker_flags(parser)
    return parser


def read_sweep(args: argparse.Namespace) -> Sweep:
    """The sweep file with the flags applied: ``--import`` first, then the override flags and
    ``--set`` (dotted keys into the file), validated as one file."""
    import yaml

    import_strategies(args.imports)
    try:
        raw = yaml.safe_load(Path(args.space).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SpaceError(f"--space {args.space}: {error}") from None
    if not isinstance(raw, dict):
        return load_sweep(args.space)  # its own error names the file
    flags = {"dataset": args.dataset, "limit": args.limit, "max_new_tokens": args.max_new_tokens,
             "trials": args.trials, "objective": args.objective, "threads": args.threads, "dtype": args.dtype,
             "compile": args.compile or None}
    raw.update({key: value for key, value in flags.items() if value is not None})
    for item in args.sets:
        key, value = parse_set(item)
        assign(raw, key, value, f"--set {item}")
    return parse_sweep(raw, source=args.space)


# --------------------------------------------------------------------------------------------
# The study


@dataclass
class Target:
    """What the study is about: the model and the device it runs on."""

    model: str  # a short label: the default model's name, a folder's or file's name
    device: str  # "AMD EPYC 7B13 (cpu, 1 thread)", "NVIDIA H200 (cuda)"

    def study_name(self, sweep: Sweep) -> str:
        return f"{self.model} | {self.device} | {sweep.spec.name}-{sweep.fingerprint()}"


def model_label(name: str | None, dtype: str, model=None) -> str:
    """The default model's name, a folder's or file's name, or (a model handed over without a
    name, as in tests) its architecture; the dtype unless float32."""
    from framework.models import DEFAULT_MODEL

    if name:
        label = Path(name).stem if Path(name).exists() or name.endswith(".gguf") else name
    elif model is not None and not getattr(model, "name_or_path", ""):
        label = f"unnamed-{model.config.model_type}"
    else:
        label = DEFAULT_MODEL
    return label if dtype in ("float32", "fp32") else f"{label} {dtype}"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def open_study(storage, name: str, sweep: Sweep, seed_offset: int = 0):
    """Create or load the study; fail stale RUNNING trials (and queue them again); give it a
    sampler seeded by the trial count (a resumed study draws new trials, not its old ones again)
    plus ``seed_offset`` (workers apart); enqueue the file's configs in a new study. Returns
    ``(study, stale)``: how many stale trials were failed."""
    import optuna

    objectives = [OBJECTIVES[o] for o in sweep.spec.objectives()]
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                directions=[o.direction for o in objectives])
    running = len(in_flight(study.get_trials(deepcopy=False)))
    fail_stale(study)
    stale = running - len(in_flight(study.get_trials(deepcopy=False)))
    study.sampler = make_sampler(sweep, len(study.trials), seed_offset)
    study.pruner = make_pruner(sweep)
    if not study.trials:
        for config in sweep.spec.enqueue:
            study.enqueue_trial(sweep.space.params_of(config), skip_if_exists=True)
        study.set_user_attr("space", sweep.space.describe())
        study.set_user_attr("sweep", sweep.spec.model_dump(mode="json", exclude={"space"}))
    return study, stale


def make_sampler(sweep: Sweep, trials_so_far: int, seed_offset: int = 0):
    """TPE seeded by the trial count; ``constant_liar``: other workers' running trials count as
    bad results, so concurrent workers draw apart."""
    import optuna

    sampler = sweep.spec.sampler
    return optuna.samplers.TPESampler(seed=sampler.seed + trials_so_far + seed_offset,
                                      n_startup_trials=sampler.startup_trials, multivariate=sampler.multivariate,
                                      group=sampler.multivariate, constant_liar=True)


def make_pruner(sweep: Sweep):
    import optuna

    pruner = sweep.spec.pruner
    if pruner.after_prompts is None or len(sweep.spec.objectives()) > 1:  # multi-objective: no pruning
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.after_prompts - 1)


def feasible(trial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def best_trial(study, sweep: Sweep):
    """The best feasible, complete trial (several objectives: the Pareto front's best on the
    first objective); None if there is none."""
    import optuna

    objectives = [OBJECTIVES[o] for o in sweep.spec.objectives()]
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if feasible(t) and "duplicate_of" not in t.user_attrs]
    if len(objectives) > 1:
        front = {t.number for t in study.best_trials}
        done = [t for t in done if t.number in front] or done
    if not done:
        return None
    sign = 1 if objectives[0].direction == "maximize" else -1
    return max(done, key=lambda t: (sign * t.values[0], -t.number))


# --------------------------------------------------------------------------------------------
# Trials


@dataclass
class TrialObjective:
    """The Optuna objective: draw a config, measure it (or repeat an earlier measurement of the
    same config), set the feasibility constraint, return the objective values.

    With other workers on the study: a trial that starts when the budget (``target`` measured
    trials) is already full or in flight is withdrawn; a config another worker measured is
    repeated; one another worker started first is waited for, then repeated."""

    model: Any
    sweep: Sweep
    prompts: list
    baseline: Baseline
    session: str  # this process's id in the study
    target: int  # the study's budget: measured trials it should hold
    poll: float = 1.0  # seconds between looks at another worker's running trial
    seen: dict[str, Any] = field(default_factory=dict)  # canonical config -> the trial that measured it
    current: int | None = None  # the number of the trial this process runs now

    def __call__(self, trial) -> float | list[float]:
        self.current = trial.number
        trial.set_user_attr("session", self.session)
        self._withdraw_if_full(trial)
        drawn = self.sweep.space.suggest(trial)
        try:
            config = LookaheadConfig.model_validate(drawn)
        except ValidationError as error:
            trial.set_user_attr("error", str(error))
            raise InvalidConfig(f"the engine refuses {drawn}: {error}") from None
        data = dump_config(config)
        key = json.dumps(data, sort_keys=True)
        trial.set_user_attr("config", data)
        trial.set_user_attr("label", config_label(config))
        earlier = self.seen.get(key) or self._measured_elsewhere(trial, key)
        if earlier is not None:
            return self._repeat(trial, earlier)
        done = measure_config(self.model, config, self.prompts, self.baseline, self.sweep.spec,
                              name=config_label(config),
                              after_prompt=lambda index, so_far: self._after_prompt(trial, index, so_far))
        self._store(trial, done)
        trial.set_constraint("output_mismatch", float(len(done.mismatches)))
        if done.mismatches:
            trial.set_user_attr("infeasible", f"outputs differ from plain greedy on {sorted(done.mismatches)}")
        return self._values(done.metrics(self.baseline))

    def _withdraw_if_full(self, trial) -> None:
        """Two workers may start a trial at once when one is missing: the later-numbered one goes."""
        trials = trial.study.get_trials(deepcopy=False)
        if len(measured_trials(trials)) + len(in_flight(trials, before=trial.number)) >= self.target:
            trial.set_user_attr("withdrawn", True)
            trial.set_user_attr("error", f"withdrawn: the budget of {self.target} measured trials is full or in flight")
            raise BudgetFull(trial.user_attrs["error"])

    def _measured_elsewhere(self, trial, key: str):
        """Another worker's trial of this config: a measured one, or (waited for) a running one
        that started before this one; None if neither."""
        while True:
            same = [t for t in trial.study.get_trials(deepcopy=False)
                    if t.number != trial.number and json.dumps(t.user_attrs.get("config"), sort_keys=True) == key]
            measured = [t for t in same if is_measured(t)]
            if measured:
                return measured[0]
            if not in_flight(same, before=trial.number):
                return None
            fail_stale(trial.study)  # if its worker died, the heartbeat ends the wait
            time.sleep(self.poll)

    def _values(self, metrics: dict[str, float]) -> float | list[float]:
        values = [float(metrics[OBJECTIVES[o].metric]) for o in self.sweep.spec.objectives()]
        return values[0] if len(values) == 1 else values

    def _store(self, trial, done: TrialRecords) -> None:
        trial.set_user_attr("metrics", done.metrics(self.baseline))
        trial.set_user_attr("per_prompt", done.per_prompt(self.baseline))
        if done.near_ties:
            trial.set_user_attr("near_ties", done.near_ties)

    def _after_prompt(self, trial, index: int, done: TrialRecords) -> None:
        import optuna

        if len(self.sweep.spec.objectives()) > 1 or self.sweep.spec.pruner.after_prompts is None:
            return
        trial.report(self._values(done.metrics(self.baseline)), index)
        if index + 1 < len(self.prompts) and trial.should_prune():
            self._store(trial, done)
            trial.set_constraint("output_mismatch", 0.0)
            raise optuna.TrialPruned(f"below the median after {index + 1} prompts")

    def remember(self, trial) -> None:
        """After a trial ends: later draws of its config repeat it instead of measuring again."""
        if is_measured(trial) and "config" in trial.user_attrs:
            self.seen.setdefault(json.dumps(trial.user_attrs["config"], sort_keys=True), trial)

    def _repeat(self, trial, earlier) -> float | list[float]:
        import optuna

        trial.set_user_attr("duplicate_of", earlier.number)
        for name in ("metrics", "per_prompt", "infeasible"):
            if name in earlier.user_attrs:
                trial.set_user_attr(name, earlier.user_attrs[name])
        trial.set_constraint("output_mismatch", earlier.constraints.get("output_mismatch", 0.0))
        if earlier.state == optuna.trial.TrialState.PRUNED:
            raise optuna.TrialPruned(f"repeats pruned trial #{earlier.number}")
        return earlier.values[0] if len(earlier.values) == 1 else list(earlier.values)


def run_trials(study, objective: TrialObjective, on_trial: Callable[[Any], None],
               log: Callable[[str], None] | None = None) -> int:
    """Run trials until the study holds ``objective.target`` measured trials (repeats of a
    measured config, withdrawn and failed trials don't count), the space is exhausted, or this
    process drew ``3 * missing + 10`` times. While other workers' running trials could fill the
    budget, wait for them instead of starting one more. Returns the count this process measured.
    ``on_trial`` gets each of this process's finished trials, as Optuna hands it to the callback."""
    import optuna

    log = log or (lambda text: print(text, file=sys.stderr))
    size = objective.sweep.space.size()
    limit = 3 * max(objective.target - len(measured_trials(study.get_trials(deepcopy=False))), 0) + 10
    measured = draws = 0
    while draws < limit:
        trials = study.get_trials(deepcopy=False)
        for trial in trials:
            objective.remember(trial)
        have = len(measured_trials(trials))
        if have >= objective.target or (size is not None and len(objective.seen) >= size):
            break
        if have + len(in_flight(trials)) >= objective.target:
            fail_stale(study)
            time.sleep(objective.poll)
            continue
        finished: list = []
        try:
            study.optimize(objective, n_trials=1, catch=(InvalidConfig, BudgetFull, torch.OutOfMemoryError),
                           gc_after_trial=False, callbacks=[lambda _study, trial: finished.append(trial)])
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as error:
            if not _failed_elsewhere(study, objective.current, error):
                raise
            log(f"[sweep] trial #{objective.current} was marked failed by another worker (its heartbeat was late "
                f"by more than --grace; it is queued again); drawing the next one")
        draws += 1
        for trial in finished:
            objective.remember(trial)
            measured += is_measured(trial)
            on_trial(trial)
    return measured


def _failed_elsewhere(study, number: int | None, error: Exception) -> bool:
    """Whether ``error`` says this process's running trial was finished by another process (the
    heartbeat rule, when this machine stalled longer than ``--grace``), not by this one."""
    import optuna

    told_too_late = isinstance(error, optuna.exceptions.UpdateFinishedTrialError) or \
        str(error).startswith("Cannot tell a ")  # optuna.study._tell: the trial is no longer RUNNING
    return told_too_late and number is not None and study.get_trials(deepcopy=False)[number].state.is_finished()


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class RunSettings:
    storage: str = DEFAULT_STORAGE
    out: str | None = None  # results folder; default: next to the SQLite file
    model_name: str | None = None
    heldout: bool = True
    report: bool = True
    wandb: bool = False
    wandb_project: str = "lookahead-decoding-sweeps"
    command: str = "python -m experiments.sweep"
    heartbeat: int = HEARTBEAT_SECONDS
    grace: int = GRACE_SECONDS
    imports: list[str] = field(default_factory=list)  # --import specs, repeated in the "use it" commands
    worker: Worker = field(default_factory=Worker)  # this process among the study's workers


def results_root(settings: RunSettings) -> Path:
    if settings.out:
        return Path(settings.out)
    return sqlite_folder(settings.storage) or Path("sweeps/results")


def run_sweep(sweep: Sweep, model, tokenizer, settings: RunSettings, log: Callable[[str], None] | None = None,
              storage=None) -> dict:
    """One session of the sweep (see the module doc) on ``storage`` (opened from
    ``settings.storage`` if not given). Returns the summary (also in summary.json if this process
    wrote the report; ``reported: False`` if another worker does)."""
    import optuna

    log = log or (lambda text: print(text, file=sys.stderr))
    started = time.perf_counter()
    spec, worker = sweep.spec, settings.worker
    target = Target(model_label(settings.model_name, spec.dtype, model), describe_device(model.device))
    name = target.study_name(sweep)
    out = results_root(settings) / slug(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = storage or open_storage(settings.storage, settings.heartbeat, settings.grace)
        study, stale = open_study(storage, name, sweep, worker.seed_offset())
        goal = claim_target(study, spec.trials, worker)
        _log_start(study, name, settings, spec, stale, goal, log)
        prompts = sweep_prompts(spec, tokenizer)
        baseline = time_baseline(model, prompts, spec.max_new_tokens, spec.warmup_tokens)
        log(f"[sweep] plain greedy on {len(prompts)} prompts: {baseline.tokens_per_second:.1f} tokens/s")
        session = _start_session(study, settings, baseline, model.device)
        objective = TrialObjective(model, sweep, prompts, baseline, worker.session, goal,
                                   poll_seconds(settings.heartbeat))
        out.mkdir(parents=True, exist_ok=True)
        wandb_log = _wandb(settings, name, target, out) if settings.wandb else None
        measured = _trials_with_progress(study, sweep, objective, wandb_log, worker, log)
        end = time_baseline(model, prompts, spec.max_new_tokens) if measured else baseline
        _update_session(study, worker, session, drift=drift(baseline, end), measured=measured)
        trials = wait_until_quiet(study, objective.poll)
        if not writes_report(trials, worker, asked=spec.trials == 0):
            return _leave_report(study, sweep, name, goal, measured, trials, worker, log)
        summary = _summarize(study, sweep, name, target, settings, prompts, baseline, end, started)
        summary["budget"] = goal
        best = best_trial(study, sweep)
        if best is not None:
            summary["best"] = _best_entry(best)
            if settings.heldout:
                summary["heldout"] = _heldout(model, tokenizer, sweep, best, prompts, log)
            _write_best(out, best, summary, target, sweep, settings)
        images = [out / n for n in write_report(study, out, spec.objectives(), summary)] if settings.report else []
        summary["elapsed_seconds"] = round(time.perf_counter() - started, 1)
        (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2, default=str))
        _update_session(study, worker, session, reported=now())
        if wandb_log is not None:
            log_summary(wandb_log, study, summary, images)
    _print_result(summary, out, settings, log)
    return summary


def _log_start(study, name: str, settings: RunSettings, spec, stale: int, goal: int, log) -> None:
    trials = study.get_trials(deepcopy=False)
    finished, have = sum(t.state.is_finished() for t in trials), len(measured_trials(trials))
    log(f"[sweep] study {name!r} in {shown(settings.storage)}: {finished} trials so far"
        + (f" ({stale} left RUNNING by a killed worker, marked failed and queued again)" if stale else "")
        + f"; {max(goal - have, 0)} to measure (until it holds {goal} measured trials) on {spec.dataset} x "
          f"{spec.limit or 'all'}/category, {spec.max_new_tokens} new tokens")


def sessions(study) -> list[dict[str, Any]]:
    """Every process that ran trials on the study, oldest first: its id, date, command, device,
    baseline, drift, measured count and whether it wrote the report."""
    found = [{"id": key.removeprefix("session "), **value} for key, value in study.user_attrs.items()
             if key.startswith("session ")]
    return sorted(found, key=lambda record: record["date"])


def _start_session(study, settings: RunSettings, baseline: Baseline, device) -> dict[str, Any]:
    """Record this process in the study under a key of its own (workers never overwrite each other)."""
    worker = settings.worker
    record = {"date": now(), "command": settings.command, "git": git_commit(), "loadavg": loadavg(),
              "host": worker.host, "pid": worker.pid, "device": str(device), "worker": worker.index,
              "launch": worker.launch, "baseline": baseline.to_json()}
    study.set_user_attr(f"session {worker.session}", record)
    return record


def _update_session(study, worker: Worker, record: dict[str, Any], **fields) -> None:
    record.update(fields)
    study.set_user_attr(f"session {worker.session}", record)


def _leave_report(study, sweep: Sweep, name: str, goal: int, measured: int, trials, worker: Worker, log) -> dict:
    """A worker that did not finish last: say who writes the report; the best trial so far."""
    best = best_trial(study, sweep)
    newest = max((t for t in trials if t.state.is_finished()), key=lambda t: t.number, default=None)
    log(f"[sweep] done: {measured} trials measured here; the study holds {len(measured_trials(trials))}/{goal} "
        f"measured trials; the worker of trial #{getattr(newest, 'number', '?')} (the newest) writes the report "
        f"(or run the same command with --report-only)")
    return {"study": name, "reported": False, "budget": goal, "best": _best_entry(best) if best else None}


def _trials_with_progress(study, sweep: Sweep, objective: TrialObjective, wandb_log, worker: Worker, log) -> int:
    """``run_trials`` with a progress bar (one process) or tagged lines only (launched workers)."""
    from tqdm import tqdm

    missing = objective.target - len(measured_trials(study.get_trials(deepcopy=False)))
    prefix = "" if worker.index is None else f"[{worker.tag}] "
    bar = tqdm(total=max(missing, 0), desc="trials", unit="trial", file=sys.stderr, dynamic_ncols=True,
               disable=worker.index is not None)

    def on_trial(trial) -> None:
        if is_measured(trial):
            bar.update(1)
        tqdm.write(prefix + _trial_line(trial, sweep), file=sys.stderr)
        best = best_trial(study, sweep)
        if best is not None:
            unit = OBJECTIVES[sweep.spec.objectives()[0]].label
            bar.set_postfix_str(f"best #{best.number} {best.values[0]:.3g} {unit} [{best.user_attrs.get('label', '')}]",
                                refresh=True)
        if wandb_log is not None:
            log_trial(wandb_log, trial)

    try:
        return run_trials(study, objective, on_trial, log)
    finally:
        bar.close()


def _trial_line(trial, sweep: Sweep) -> str:
    attrs, metrics = trial.user_attrs, trial.user_attrs.get("metrics", {})
    text = f"#{trial.number} {trial.state.name.lower()} [{attrs.get('label', '?')}]"
    if "duplicate_of" in attrs:
        return f"{text} repeats #{attrs['duplicate_of']} (not measured again)"
    if trial.state.name == "FAIL":
        reason = attrs.get("error") or trial.system_attrs.get("fail_reason", "")
        return f"{text} {reason.splitlines()[0] if reason else ''}"
    if metrics:
        text += (f" {metrics['tokens_per_second']:.1f} tok/s {metrics['speedup']:.2f}x "
                 f"{metrics['tokens_per_step']:.2f} tok/step {metrics['identical']}/{metrics['prompts']} identical")
    if attrs.get("infeasible"):
        text += f" INFEASIBLE: {attrs['infeasible']}"
    return text


def _heldout(model, tokenizer, sweep: Sweep, best, prompts, log) -> dict[str, Any]:
    config = LookaheadConfig.model_validate(best.user_attrs["config"])
    held = heldout_prompts(sweep.spec, tokenizer, {p.prompt_id for p in prompts})
    log(f"[sweep] held-out check: trial #{best.number} [{config_label(config)}] vs plain greedy on {len(held)} "
        f"unseen prompts, interleaved")
    return measure_heldout(model, config, held, sweep.spec, name=config_label(config))


def _summarize(study, sweep, name, target, settings, prompts, start, end, started) -> dict[str, Any]:
    states = [t.state.name for t in study.trials]
    return {
        "study": name, "storage": shown(settings.storage), "model": target.model, "device": target.device,
        "space": sweep.source, "command": settings.command, "date": now(), "loadavg": loadavg(), "git": git_commit(),
        "trials": {s: states.count(s) for s in sorted(set(states))},
        "measured_by_session": dict(Counter(t.user_attrs.get("session") for t in measured_trials(study.trials))),
        "objective": sweep.spec.objective, "prompts": [p.prompt_id for p in prompts],
        "drift": drift(start, end),
    }


def _best_entry(best) -> dict[str, Any]:
    return {"trial": best.number, "label": best.user_attrs.get("label"), "values": best.values,
            "config": best.user_attrs["config"], "metrics": best.user_attrs.get("metrics", {})}


def _write_best(out: Path, best, summary: dict[str, Any], target: Target, sweep: Sweep, settings) -> None:
    config = LookaheadConfig.model_validate(best.user_attrs["config"])
    metrics, held = best.user_attrs.get("metrics", {}), summary.get("heldout")
    commands = use_commands(out / BEST_YAML, [*settings.imports, *sweep.spec.imports], settings.model_name, sweep.spec)
    comments = [f"Best lookahead config for {target.model} on {target.device}",
                f"study {summary['study']!r}, trial #{best.number}, {summary['date']}",
                f"sweep prompts: {metrics.get('tokens_per_second', 0):.1f} tokens/s, "
                f"{metrics.get('speedup', 0):.2f}x plain greedy, {metrics.get('tokens_per_step', 0):.2f} tokens/step"]
    if held and held.get("speedup") is not None:
        comments.append(f"held-out ({held['prompts']} unseen prompts): {held['speedup']:.2f}x plain greedy, "
                        f"identical outputs {100 * (held['identical'] or 0):.0f}%")
    (out / BEST_YAML).write_text(best_yaml(config, comments + commands))
    summary["best"].update({"yaml": str(out / BEST_YAML), "commands": commands,
                            "faster_than_greedy": None if not held else (held.get("speedup") or 0) > 1.0})


def _print_result(summary: dict[str, Any], out: Path, settings: RunSettings, log) -> None:
    import yaml

    drift_ = summary["drift"]
    log(f"[sweep] done in {summary['elapsed_seconds']:.0f} s; greedy drift over the session: "
        f"{100 * (drift_['wall_ratio'] - 1):+.1f}% wall time "
        f"({drift_['tokens_per_second_start']:.1f} -> {drift_['tokens_per_second_end']:.1f} tokens/s)")
    best = summary.get("best")
    if best is None:
        log("[sweep] no feasible completed trial yet: nothing to report (run more trials)")
        return
    held = summary.get("heldout") or {}
    lines = [f"# best: trial #{best['trial']} [{best['label']}]: {best['metrics'].get('speedup', 0):.2f}x greedy "
             f"on the sweep prompts"]
    if held.get("speedup") is not None:
        lines.append(f"# held-out: {held['speedup']:.2f}x plain greedy on {held['prompts']} unseen prompts "
                     f"({held['tokens_per_second']:.1f} vs {held['greedy_tokens_per_second']:.1f} tokens/s, "
                     f"{held['tokens_per_step']:.2f} tokens/step, identical {100 * (held['identical'] or 0):.0f}%)")
    lines.append(f"# config ({best['yaml']}):")
    lines.append(yaml.safe_dump(best["config"], sort_keys=False).rstrip())
    lines.append("# use it:")
    lines += best["commands"]
    if settings.report and (out / REPORT_HTML).exists():
        lines.append(f"# report: {out / REPORT_HTML}")
    lines.append(f"# dashboard: pip install optuna-dashboard && optuna-dashboard {shown(settings.storage)}")
    print("\n".join(lines))
    if best.get("faster_than_greedy") is False:
        log(f"[sweep] WARNING: the best configuration is not faster than plain greedy on held-out prompts "
            f"({held['speedup']:.2f}x; {best['metrics'].get('speedup', 0):.2f}x on the sweep prompts was noise or "
            f"overfitting to {summary['trials'].get('COMPLETE', 0)} trials). Try: more trials (rerun the same command), "
            f"more prompts per trial (--limit 2), decoding at the thread count you measured with, or plain decoding "
            f"(--window 0 --guess-set 0) on this device.")


def _wandb(settings: RunSettings, name: str, target: Target, out: Path):
    from experiments.wandb_log import WandbLogger

    device_kind = target.device.split(" (")[-1].rstrip(")")  # "cpu, 1 thread", "cuda"
    return WandbLogger(settings.wandb_project, slug(name), out, tags=[target.model, device_kind],
                       config={"study": name, "model": target.model, "device": target.device})


# --------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None, *, model_and_tokenizer=None) -> int:
    """Parse, load, sweep; returns the exit status. ``model_and_tokenizer`` replaces loading
    ``--model`` (tests pass a tiny model)."""
    return run_command(build_parser(), argv, lambda args: run(args, model_and_tokenizer))


def run(args: argparse.Namespace, model_and_tokenizer=None) -> int:
    storage = check_storage(args.storage)  # before anything slow: a bad URL is one line, status 2
    _check_worker_flags(args)
    try:
        sweep = read_sweep(args)
    except SpaceError as error:
        raise CliError(str(error)) from None
    if args.workers is not None and args.worker_index is None:
        return _launch(args, sweep, storage, model_and_tokenizer)
    worker = Worker(index=args.worker_index, **({"launch": args.launch} if args.launch else {}))
    opened = connect(storage, args.heartbeat, args.grace)  # a server that is down fails here, not after loading
    set_threads(sweep.spec.threads)
    model_and_tokenizer = model_and_tokenizer or load_model_from_args(args, dtype=sweep.spec.dtype)
    settings = RunSettings(storage=storage, out=args.out, model_name=args.model, heldout=not args.no_heldout,
                           report=not args.no_report, wandb=args.wandb, wandb_project=args.wandb_project,
                           command=shown(command_line("python -m experiments.sweep", args.argv), storage),
                           imports=list(args.imports),
                           heartbeat=args.heartbeat, grace=args.grace, worker=worker)
    log = (lambda text: print(text.replace("[sweep]", f"[{worker.tag}]", 1), file=sys.stderr))
    try:
        summary = run_sweep(sweep, *model_and_tokenizer, settings, log=log, storage=opened)
    except KeyboardInterrupt:
        print(f"\n[{worker.tag}] interrupted: finished trials are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    return 0 if summary.get("best") else 1


def _check_worker_flags(args: argparse.Namespace) -> None:
    """``--report-only`` is ``--trials 0``; ``--devices`` goes with ``--workers``."""
    if args.report_only:
        if args.trials:
            raise CliError(f"--report-only measures nothing: drop --trials {args.trials}")
        if args.workers is not None:
            raise CliError("--report-only runs in one process: drop --workers")
        args.trials = 0
    if args.devices is not None and args.workers is None:
        raise CliError(f"--devices {args.devices}: goes with --workers N (one process: --device {args.devices})")
    if args.grace <= args.heartbeat:
        raise CliError(f"--grace {args.grace}: must exceed --heartbeat {args.heartbeat} (a few heartbeats, "
                       f"e.g. --grace {6 * args.heartbeat})")


def _launch(args: argparse.Namespace, sweep: Sweep, storage: str, model_and_tokenizer) -> int:
    """``--workers N``: N processes of this command, one per device, sharing the study."""
    devices = parse_devices(args.devices or args.device, args.workers)
    if model_and_tokenizer is not None:
        raise CliError("--workers: worker processes load the model themselves; give it by name (--model)")
    connect(storage, args.heartbeat, args.grace)  # create the database's tables once, before the workers race to
    argv = sys.argv[1:] if args.argv is None else list(args.argv)
    return launch_workers(worker_commands(argv, devices, sweep.spec.threads),
                          lambda text: print(text, file=sys.stderr))


if __name__ == "__main__":
    sys.exit(main())
