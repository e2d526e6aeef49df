"""experiments.sweep end to end on a tiny random model (one GSM8K prompt, a few tokens per trial):
the study is written and resumed, killed trials are failed, mismatches are infeasible, the best
config round-trips, W&B runs offline into a temp dir."""

from __future__ import annotations

import json
import shlex
import sqlite3
from pathlib import Path
from typing import Literal

import optuna
import pytest
import yaml
from pydantic import Field

from experiments import bench, generate, sweep
from experiments.harness import dump_config
from experiments.sweep_measure import Baseline, time_baseline
from experiments.sweep_report import BEST_YAML, REPORT_HTML, SUMMARY_JSON, read_config
from framework.config import LookaheadConfig
from strategies import temporary_registrations
from strategies.base import PoolPolicy, register
from strategies.keyed_pool import KeyedPool
from tests.experiments.test_bench import StubTokenizer
from tests.tiny_models import tiny_model

PNG = b"\x89PNG\r\n\x1a\n"
SPACE = {
    "window": {"low": 0, "high": 4},
    "ngram": {"low": 2, "high": 4},
    "guess_set": {"low": 0, "high": 4},
    "pool": {"choices": "all", "params": {"capacity": [None, 2]}},
}


def write_sweep(tmp_path: Path, space: dict | None = None, **top) -> Path:
    data = {"name": "tiny", "dataset": "gsm8k", "limit": 1, "max_new_tokens": 8, "threads": 1, "trials": 3,
            "warmup_tokens": 2, "sampler": {"seed": 0, "startup_trials": 2}, "pruner": {"after_prompts": None},
            "heldout": {"limit": 1, "seed": 1}, "enqueue": [{}], **top, "space": space or SPACE}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(tmp_path: Path, *argv: str, space_file: Path | None = None) -> int:
    space_file = space_file or tmp_path / "tiny.yaml"
    return sweep.main(["--space", str(space_file), "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", *argv],
                      model_and_tokenizer=(tiny_model("llama"), StubTokenizer()))


def load_study(tmp_path: Path) -> optuna.Study:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(url)
    return optuna.load_study(study_name=name, storage=url)


def study_dir(tmp_path: Path) -> Path:
    return tmp_path / sweep.slug(load_study(tmp_path).study_name)


def measured(study: optuna.Study) -> list:
    return [t for t in study.trials if t.state.is_finished() and "duplicate_of" not in t.user_attrs
            and t.state.name != "FAIL"]


def test_tiny_sweep_writes_the_study_best_config_and_report_then_resumes(tmp_path, capsys):
    write_sweep(tmp_path)
    assert run(tmp_path) == 0
    study = load_study(tmp_path)
    assert study.study_name.startswith("unnamed-llama | ") and "(cpu, 1 thread) | tiny-" in study.study_name
    first = measured(study)
    assert len(first) == 3 and first[0].user_attrs["config"] == dump_config(LookaheadConfig())  # enqueued default
    assert all(t.user_attrs["metrics"]["identical"] == 1 and t.constraints == {"output_mismatch": 0.0} for t in first)

    out = study_dir(tmp_path)
    summary = json.loads((out / SUMMARY_JSON).read_text())
    best = summary["best"]
    config = read_config(out / BEST_YAML)  # the file round-trips into LookaheadConfig
    assert dump_config(config) == best["config"] == study.trials[best["trial"]].user_attrs["config"]
    assert yaml.safe_load((out / BEST_YAML).read_text()) == dump_config(config)
    assert summary["heldout"]["prompts"] == 1 and summary["heldout"]["identical"] == 1.0
    assert summary["heldout"]["speedup"] > 0 and summary["drift"]["wall_ratio"] > 0
    for name in ("history.png", "slice.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert "history.png" in (out / REPORT_HTML).read_text()
    printed = capsys.readouterr().out
    assert "# held-out:" in printed and f"--config {out / BEST_YAML}" in printed
    assert "optuna-dashboard sqlite:///" in printed

    # a second run continues the same study with a sampler seeded by the trial count
    assert run(tmp_path, "--trials", "2", "--no-heldout", "--no-report") == 0
    study = load_study(tmp_path)
    again = measured(study)
    first_run, second_run = (record["id"] for record in sweep.sessions(study))
    assert len(again) == 5 and [t.user_attrs["session"] for t in again] == [first_run] * 3 + [second_run] * 2
    params = [json.dumps(t.user_attrs["config"], sort_keys=True) for t in again]
    assert len(set(params)) == len(params)  # no config measured twice
    assert not any("duplicate_of" in t.user_attrs for t in study.trials)  # nor even proposed again
    assert [bool(record.get("reported")) for record in sweep.sessions(study)] == [True, True]  # one process each


def test_a_trial_left_running_by_a_killed_run_is_failed_on_resume(tmp_path, capsys):
    write_sweep(tmp_path, trials=1)
    assert run(tmp_path, "--no-heldout", "--no-report") == 0
    study = load_study(tmp_path)
    storage = study._storage
    trial_id = storage.create_new_trial(study._study_id)  # as a process killed mid-trial leaves it
    storage.record_heartbeat(trial_id)
    with sqlite3.connect(tmp_path / "optuna.db") as db:
        db.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00.000000' WHERE trial_id = ?",
                   (trial_id,))
    assert load_study(tmp_path).trials[-1].state.name == "RUNNING"

    assert run(tmp_path, "--no-heldout", "--no-report") == 0
    assert "1 left RUNNING by a killed worker, marked failed and queued again" in capsys.readouterr().err
    trials = load_study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].system_attrs["failed_trial"] == 1  # the heartbeat's retry of the killed trial


def test_an_output_that_differs_from_greedy_is_infeasible_never_best(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "time_baseline", lambda *a, **k: corrupt(time_baseline(*a, **k)))
    write_sweep(tmp_path, trials=2)
    assert run(tmp_path, "--no-heldout", "--no-report") == 1  # no feasible trial: nothing to report
    trials = measured(load_study(tmp_path))
    assert len(trials) == 2
    assert all(t.constraints == {"output_mismatch": 1.0} and "outputs differ" in t.user_attrs["infeasible"]
               for t in trials)
    assert sweep.best_trial(load_study(tmp_path), sweep.load_sweep(tmp_path / "tiny.yaml")) is None


def test_a_config_is_measured_once_and_a_small_space_stops_when_exhausted(tmp_path):
    write_sweep(tmp_path, space={"window": 2, "ngram": [2, 3, 4], "guess_set": 2, "pool": "lru"}, trials=1, enqueue=[])
    assert run(tmp_path, "--no-heldout", "--no-report") == 0
    first = load_study(tmp_path).trials[0]
    load_study(tmp_path).enqueue_trial(first.params)  # drawn again first in the next run
    assert run(tmp_path, "--no-heldout", "--no-report") == 0
    study = load_study(tmp_path)
    repeat = study.trials[1]
    assert repeat.user_attrs["duplicate_of"] == 0 and repeat.values == first.values and len(measured(study)) == 2
    assert run(tmp_path, "--trials", "5", "--no-heldout", "--no-report") == 0
    assert len(measured(load_study(tmp_path))) == 3  # the whole space, then it stops


def test_speed_and_memory_is_multi_objective(tmp_path):
    write_sweep(tmp_path, trials=2)
    assert run(tmp_path, "--objective", "speed,memory", "--no-heldout", "--no-report") == 0
    study = load_study(tmp_path)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"] and "tiny-" in study.study_name
    assert all(len(t.values) == 2 for t in measured(study))
    assert json.loads((study_dir(tmp_path) / SUMMARY_JSON).read_text())["best"]["trial"] in {0, 1}


def test_wandb_offline_writes_one_run_per_trial_and_a_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    write_sweep(tmp_path, trials=1)
    assert run(tmp_path, "--wandb", "--no-heldout", "--no-report") == 0
    runs = sorted((study_dir(tmp_path) / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(run_dir.is_dir() for run_dir in runs)


def test_bad_flags_and_spaces_exit_2(tmp_path, capsys):
    write_sweep(tmp_path, space={"window": {"low": 0, "high": 4}, "ngram": {"low": 1, "high": 3}})
    assert run(tmp_path) == 2
    assert "space.ngram.low: ngram must be >= 2" in capsys.readouterr().err
    write_sweep(tmp_path)
    assert run(tmp_path, "--objective", "fastest") == 2
    assert "objective: give distinct names" in capsys.readouterr().err


def test_a_strategy_registered_later_is_swept_end_to_end(tmp_path):
    with temporary_registrations():
        @register("pool", "test_oldest_first")
        class OldestFirst(KeyedPool):
            class Params(PoolPolicy.Params):
                name: Literal["test_oldest_first"] = "test_oldest_first"
                lag: int = Field(0, ge=0, le=1)

            def rank_key(self, draft, entry):
                return (-entry.added - self.params.lag,)

        write_sweep(tmp_path, space={"window": 2, "ngram": 3, "guess_set": {"low": 1, "high": 3},
                                     "pool": {"name": "test_oldest_first", "lag": [0, 1]}}, trials=2, enqueue=[])
        assert run(tmp_path, "--no-heldout", "--no-report") == 0
    trials = measured(load_study(tmp_path))
    assert all(t.user_attrs["config"]["pool"]["name"] == "test_oldest_first" for t in trials)
    assert all("pool.test_oldest_first.lag" in t.params for t in trials)


def run_printed(command: str) -> int:
    """Run a printed ``python -m experiments.X ...`` command in this process, as typed."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"], command
    module = {"experiments.generate": generate, "experiments.bench": bench}[argv[2]]
    return module.main(argv[3:])


def test_the_printed_use_it_commands_run_as_printed(tmp_path, tiny_dir, user_pool_file, capsys, monkeypatch):
    """A user strategy from a file outside the repo, swept with --import on a model folder: the
    commands the sweep prints (and writes into best.yaml) run as printed."""
    monkeypatch.chdir(tmp_path)  # the bench writes bench_results/ under the working directory
    write_sweep(tmp_path, space={"window": 0, "ngram": 3, "guess_set": [1, 2],
                                 "pool": {"name": "newest_first", "depth": [1, 3]}}, trials=2, enqueue=[])
    status = sweep.main(["--space", str(tmp_path / "tiny.yaml"), "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
                         "--model", tiny_dir, "--import", str(user_pool_file), "--no-report"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    commands = [line for line in captured.out.splitlines() if line.startswith("python -m experiments.")]
    assert len(commands) == 2 and all(f"--import {user_pool_file}" in c and "--model" in c for c in commands)
    assert [c for c in (study_dir(tmp_path) / BEST_YAML).read_text().splitlines() if "python -m" in c] == \
        [f"# {c}" for c in commands]
    for command in commands:
        assert run_printed(command) == 0, capsys.readouterr().err
    assert "identical=yes" in capsys.readouterr().out


def test_set_overrides_any_key_of_the_sweep_file(tmp_path, capsys):
    write_sweep(tmp_path, trials=1)
    assert run(tmp_path, "--set", "space.window.high=1", "--set", "heldout.limit=1", "--no-heldout",
               "--no-report") == 0
    assert all(t.user_attrs["config"]["window"] <= 1 for t in measured(load_study(tmp_path)))
    assert run(tmp_path, "--set", "space.ngram.low=1") == 2
    assert "space.ngram.low: ngram must be >= 2" in capsys.readouterr().err


def test_a_best_config_slower_than_greedy_held_out_is_called_so(tmp_path, monkeypatch, capsys):
    slow = {"prompts": 1, "speedup": 0.5, "identical": 1.0, "tokens_per_step": 1.0, "tokens_per_second": 1.0,
            "greedy_tokens_per_second": 2.0}
    monkeypatch.setattr(sweep, "_heldout", lambda *a, **k: slow)
    write_sweep(tmp_path, trials=1)
    assert run(tmp_path, "--no-report") == 0
    err = capsys.readouterr().err
    assert "WARNING: the best configuration is not faster than plain greedy on held-out prompts (0.50x" in err
    assert json.loads((study_dir(tmp_path) / SUMMARY_JSON).read_text())["best"]["faster_than_greedy"] is False


def corrupt(baseline: Baseline) -> Baseline:
    for record in baseline.records.values():
        record.output_ids = [(token + 1) % 96 or 1 for token in record.output_ids]
    return baseline


def test_a_difference_at_a_near_tie_stays_feasible_and_is_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "time_baseline", lambda *a, **k: corrupt(time_baseline(*a, **k)))
    write_sweep(tmp_path, trials=1, tie_tolerance=1e9)  # every gap counts as a tie here
    assert run(tmp_path, "--no-heldout", "--no-report") == 0
    (trial,) = measured(load_study(tmp_path))
    assert trial.constraints == {"output_mismatch": 0.0} and trial.user_attrs["metrics"]["near_ties"] == 1


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruned_trials_keep_their_partial_measurements_and_are_never_best(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "make_pruner", lambda _sweep: AlwaysPrune())
    write_sweep(tmp_path, trials=2, limit=2, pruner={"after_prompts": 1})  # GSM8K: 2 prompts
    assert run(tmp_path, "--no-heldout", "--no-report") == 1
    trials = measured(load_study(tmp_path))
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(t.user_attrs["metrics"]["prompts"] == 1 and len(t.intermediate_values) == 1 for t in trials)


def test_ctrl_c_keeps_finished_trials_and_the_next_run_resumes(tmp_path, monkeypatch):
    write_sweep(tmp_path, trials=1)
    assert run(tmp_path, "--no-heldout", "--no-report") == 0

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(sweep, "measure_config", interrupted)
        assert run(tmp_path, "--no-heldout", "--no-report") == 130
    assert [t.state.name for t in load_study(tmp_path).trials] == ["COMPLETE", "FAIL"]
    assert run(tmp_path, "--no-heldout", "--no-report") == 0
    assert [t.state.name for t in load_study(tmp_path).trials] == ["COMPLETE", "FAIL", "COMPLETE"]
