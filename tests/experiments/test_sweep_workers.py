"""Many sweep workers on one study (experiments/sweep_workers.py): against a throw-away PostgreSQL
server started here, two worker processes fill the study's budget exactly, never measure a config
twice and write one report, while one of them is killed with SIGKILL mid-trial (the heartbeat fails
its trial, the other worker measures it again). In one process on SQLite: a run counts and prints
only its own trials beside another worker's, a worker whose trial a late heartbeat failed goes on,
the budget is opened once and joined, ``--report-only`` measures nothing, and bad ``--storage`` or
``--workers`` flags fail in one line before any model loads."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml

from experiments import sweep
from experiments.sweep_report import SUMMARY_JSON
from experiments.sweep_workers import Worker, claim_target, fail_stale, is_measured, open_storage
from strategies import temporary_registrations
from tests.experiments.test_sweep import load_study, measured, run, write_sweep

# A pool that sleeps in every offer: a trial of the tiny model lasts about a second, so two workers
# overlap and a worker can be killed mid-trial.
SLOW_POOL = textwrap.dedent('''
    import time
    from typing import Literal

    from pydantic import Field

    from strategies.base import PoolPolicy, register
    from strategies.keyed_pool import KeyedPool


    @register("pool", "test_slow")
    class SlowPool(KeyedPool):
        class Params(PoolPolicy.Params):
            name: Literal["test_slow"] = "test_slow"
            lag: int = Field(0, ge=0, le=3, description="only there to make configs differ")

        def offer(self, key, limit):
            time.sleep(0.03)
            return super().offer(key, limit)
''')


# --------------------------------------------------------------------------------------------
# A throw-away PostgreSQL server


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server binaries (``pg_ctl`` on PATH, or Debian's layout)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    folders = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((folder for folder in folders if (folder / "pg_ctl").exists()), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_server():
    """A PostgreSQL server in a temporary folder on a free loopback port (as the ``postgres`` user
    when run as root: the server refuses root), stopped and deleted afterwards. Yields its URL
    without a database."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver: pip install '.[distributed]'")
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install -y postgresql")
    as_postgres = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run the PostgreSQL server as")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="lookahead-pg-"))
    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run([*as_postgres, binaries / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-N"],
                   check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_postgres, binaries / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w",
                    "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_postgres, binaries / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh database on the test server."""
    import psycopg

    name = f"sweep_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server.replace("+psycopg", "") + "/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server}/{name}"


# --------------------------------------------------------------------------------------------
# Worker processes on PostgreSQL


@pytest.fixture
def slow_sweep(tmp_path) -> Path:
    """A sweep file over the slow pool (1 GSM8K prompt, 32 tokens: ~1 s a trial), 4 trials."""
    (tmp_path / "slow_pool.py").write_text(SLOW_POOL)
    data = {"name": "slow", "dataset": "gsm8k", "limit": 1, "max_new_tokens": 32, "trials": 4, "warmup_tokens": 0,
            "imports": [str(tmp_path / "slow_pool.py")], "sampler": {"seed": 0, "startup_trials": 2},
            "pruner": {"after_prompts": None}, "heldout": {"limit": 1, "seed": 1},
            "space": {"window": {"low": 0, "high": 2}, "ngram": [2, 3], "guess_set": [1, 2],
                      "pool": {"name": "test_slow", "lag": [0, 1, 2, 3]}}}
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(data))
    with temporary_registrations():  # the launcher imports the pool to validate the file
        yield path


def worker_argv(space: Path, url: str, model: str, out: Path, *extra: str) -> list[str]:
    return ["--space", str(space), "--model", model, "--storage", url, "--out", str(out), "--no-heldout",
            "--heartbeat", "1", "--grace", "4", *extra]


def the_study(storage) -> optuna.Study:
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def table(study: optuna.Study) -> str:
    """The trials, one line each (for failure messages)."""
    return "\n".join(f"#{t.number} {t.state.name} {t.user_attrs.get('session')} {t.user_attrs.get('label')} "
                     f"repeats={t.user_attrs.get('duplicate_of')} retry_of={t.system_attrs.get('failed_trial')} "
                     f"{t.user_attrs.get('error', '')}" for t in study.trials)


def config_keys(trials) -> list[str]:
    return [json.dumps(t.user_attrs["config"], sort_keys=True) for t in trials]


def test_two_workers_fill_the_budget_exactly_survive_a_killed_worker_and_report_once(
        slow_sweep, postgres_url, tiny_dir, tmp_path, capfd):
    """``--workers 2`` on PostgreSQL; one worker is killed with SIGKILL in its second trial. The
    heartbeat fails that trial and queues it again, the other worker measures its config (the
    retry itself, or a draw of the same config that waited for the dead trial, which the retry
    then repeats), and the study ends with exactly its budget, no configuration measured twice,
    one report."""
    argv = worker_argv(slow_sweep, postgres_url, tiny_dir, tmp_path / "out", "--workers", "2", "--devices", "cpu")
    storage = open_storage(postgres_url)  # this test's own look at the study
    status: list[int] = []
    launcher = threading.Thread(target=lambda: status.append(sweep.main(argv)))
    launcher.start()
    victim = kill_a_worker_mid_trial(storage)
    launcher.join(timeout=120)
    out, err = capfd.readouterr()
    study = the_study(storage)
    assert status == [1] and "killed by signal 9" in err, err  # the launcher says a worker died

    killed = study.trials[victim]
    assert killed.state.name == "FAIL" and "withdrawn" not in killed.user_attrs, table(study)
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim]  # queued again
    assert retry.state.is_finished(), table(study)  # ... and taken by the other worker
    done = [t for t in study.trials if is_measured(t)]
    assert killed.user_attrs["config"] in [t.user_attrs["config"] for t in done], table(study)  # not lost
    assert len(done) == 4, table(study)  # the budget of the whole study, not per worker
    assert len(set(config_keys(done))) == 4, table(study)  # no configuration measured twice
    workers = sweep.sessions(study)
    assert sorted(record["worker"] for record in workers) == [0, 1]
    assert {t.user_attrs["session"] for t in done} == {record["id"] for record in workers}  # both measured
    assert sum(bool(record.get("reported")) for record in workers) == 1  # one report, by the survivor
    assert out.count("# best: trial #") == 1
    assert "1 thread" in study.study_name  # workers default to one torch thread each on CPU
    summary = json.loads(next((tmp_path / "out").glob(f"*/{SUMMARY_JSON}")).read_text())
    assert sum(summary["measured_by_session"].values()) == 4 and summary["budget"] == 4


def kill_a_worker_mid_trial(storage, timeout: float = 90.0) -> int:
    """Wait until a worker that measured a trial is running another (its config drawn), stop it
    (SIGSTOP), and if that trial still runs, SIGKILL the worker; returns the trial's number."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            study = the_study(storage)
        except ValueError:  # no study yet
            continue
        pids = {record["id"]: record["pid"] for record in sweep.sessions(study)}
        veterans = {t.user_attrs.get("session") for t in study.trials if is_measured(t)}
        running = [t for t in study.trials if t.state.name == "RUNNING" and "config" in t.user_attrs
                   and t.user_attrs.get("session") in veterans & set(pids)]
        if not running:
            continue
        pid = pids[running[0].user_attrs["session"]]
        os.kill(pid, signal.SIGSTOP)  # frozen: its trial cannot end between our look and the kill
        if the_study(storage).trials[running[0].number].state.name == "RUNNING":
            os.kill(pid, signal.SIGKILL)
            return running[0].number
        os.kill(pid, signal.SIGCONT)
    raise AssertionError("no worker started a second trial")


# --------------------------------------------------------------------------------------------
# In one process (SQLite)


def test_a_run_counts_and_prints_only_its_own_trials_beside_another_worker(tmp_path, monkeypatch, capsys):
    """The root cause of 25 trials for two `--trials 2` runs: the last trial of the study is often
    another worker's running one. Here another worker's trial starts during ours and ends during
    our next one: the study ends with exactly the budget, and only our trials are printed."""
    write_sweep(tmp_path, trials=3)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    measure, neighbour = sweep.measure_config, []

    def beside_another_worker(*args, **kwargs):
        if not neighbour:  # another worker starts a trial while ours runs
            other = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
            neighbour.append((other, other.ask()))
            neighbour[0][1].set_user_attr("config", {"window": 99})
            neighbour[0][1].set_user_attr("session", "neighbour")
        elif len(neighbour) == 1:  # ... and finishes it during our next one
            other, trial = neighbour[0]
            other.tell(trial, 1.0)
            neighbour.append(trial)
        return measure(*args, **kwargs)

    monkeypatch.setattr(sweep, "measure_config", beside_another_worker)
    assert run(tmp_path, "--no-heldout", "--no-report") == 0
    study = load_study(tmp_path)
    assert [t.user_attrs["session"] == "neighbour" for t in measured(study)] == [False, True, False]
    printed = [line.split()[0] for line in capsys.readouterr().err.splitlines() if line.startswith("#")]
    assert printed == ["#0", "#2"]


def test_a_worker_whose_trial_was_failed_by_a_late_heartbeat_goes_on(tmp_path, monkeypatch, capsys):
    """A stalled machine: our heartbeat is older than --grace, another worker fails our running
    trial and queues it again. We notice when we tell, say so, and fill the budget."""
    write_sweep(tmp_path, trials=2)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    measure, stalled = sweep.measure_config, []

    def stalls_once(*args, **kwargs):
        if not stalled:
            other = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=open_storage(url))
            (ours,) = [t for t in other.trials if t.state.name == "RUNNING"]
            with sqlite3.connect(tmp_path / "optuna.db") as db:
                db.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00.000000' WHERE trial_id = ?",
                           (ours._trial_id,))
            fail_stale(other)
            stalled.append(ours.number)
        return measure(*args, **kwargs)

    monkeypatch.setattr(sweep, "measure_config", stalls_once)
    assert run(tmp_path, "--no-heldout", "--no-report") == 0
    assert "trial #0 was marked failed by another worker" in capsys.readouterr().err
    trials = load_study(tmp_path).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0  # queued again, measured


def test_the_budget_is_opened_once_and_joined_until_filled():
    study = optuna.create_study()
    first, second, third = Worker(launch="a"), Worker(launch="b"), Worker(launch="c")
    assert claim_target(study, 3, first) == 3 and study.user_attrs["budget"]["launch"] == "a"
    assert claim_target(study, 5, second) == 3  # an unfilled budget is joined, not extended
    assert claim_target(study, 1, third) == 1  # ... by at most the trials asked for
    for value in (1.0, 2.0, 3.0):
        study.add_trial(optuna.create_trial(value=value))
    assert claim_target(study, 3, first) == 3  # its own launch's budget, filled
    assert claim_target(study, 2, second) == 5  # filled: a new launch opens the next budget
    assert claim_target(study, 0, third) == 3  # --trials 0 measures nothing


def test_report_only_measures_nothing_and_writes_the_report(tmp_path, capsys):
    write_sweep(tmp_path, trials=1)
    assert run(tmp_path, "--no-heldout", "--no-report") == 0
    summary = next(tmp_path.glob(f"*/{SUMMARY_JSON}"))
    summary.unlink()
    assert run(tmp_path, "--report-only", "--no-heldout", "--no-report") == 0
    assert len(load_study(tmp_path).trials) == 1 and summary.exists()
    assert "# best: trial #0" in capsys.readouterr().out


def no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the flags were checked")


@pytest.mark.parametrize("storage, message", [
    ("nonsense", "--storage nonsense: not a database URL"),
    ("sqlite://", "--storage sqlite://: give a file"),
    ("foo://host/db", "--storage foo://host/db: unknown database kind 'foo'"),
    ("mysql://user@host/db", "--storage mysql://user@host/db: its driver is not installed"),
])
def test_a_bad_storage_is_one_line_and_exit_2_before_any_model_loads(storage, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "load_model_from_args", no_model)
    write_sweep(tmp_path)
    assert sweep.main(["--space", str(tmp_path / "tiny.yaml"), "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1 and "Traceback" not in err


def test_a_sqlite_file_in_an_unwritable_place_is_refused_up_front(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "load_model_from_args", no_model)
    write_sweep(tmp_path)
    (tmp_path / "a_file").write_text("")
    storage = f"sqlite:///{tmp_path / 'a_file' / 'optuna.db'}"
    assert sweep.main(["--space", str(tmp_path / "tiny.yaml"), "--storage", storage]) == 2
    assert "cannot create the folder" in capsys.readouterr().err


def test_an_unreachable_server_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    pytest.importorskip("psycopg", reason="the PostgreSQL driver: pip install '.[distributed]'")
    monkeypatch.setattr(sweep, "load_model_from_args", no_model)
    write_sweep(tmp_path)
    storage = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/nothing"
    assert sweep.main(["--space", str(tmp_path / "tiny.yaml"), "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --storage postgresql") and err.count("\n") == 1
    assert "cannot open it" in err and "start the database or fix the URL" in err
    assert "nobody:***@" in err and "secret" not in err  # passwords never reach logs or reports


@pytest.mark.parametrize("flags, message", [
    (["--devices", "cpu"], "--devices cpu: goes with --workers N"),
    (["--workers", "2", "--devices", "cpu,cpu,cpu"], "--devices cpu,cpu,cpu: 3 devices for --workers 2"),
    (["--workers", "2", "--devices", "gpu"], "--devices gpu: 'gpu' is not a device name"),
    (["--report-only", "--trials", "3"], "--report-only measures nothing: drop --trials 3"),
    (["--heartbeat", "5", "--grace", "5"], "--grace 5: must exceed --heartbeat 5"),
    (["--workers", "2"], "--workers: worker processes load the model themselves"),
])
def test_bad_worker_flags_exit_2(flags, message, tmp_path, capsys):
    write_sweep(tmp_path)
    assert run(tmp_path, *flags) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


def test_workers_on_a_missing_gpu_are_refused(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    write_sweep(tmp_path)
    status = sweep.main(["--space", str(tmp_path / "tiny.yaml"), "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                         "--workers", "2", "--devices", "cuda:0,cuda:1"])
    assert status == 2 and "cuda:0 is not a usable CUDA device here" in capsys.readouterr().err

