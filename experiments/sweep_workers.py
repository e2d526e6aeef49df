"""Many sweep workers on one study: the shared storage, the study's trial budget, the launcher.

Glossary:
    storage   where the study lives: SQLite (one machine, the default) or a database server such as
              PostgreSQL (``postgresql://user@host:port/db``), which workers on many machines share.
              Both get a heartbeat: a trial silent for ``grace`` seconds belongs to a dead worker;
              Optuna marks it failed (``fail_stale_trials``) and queues it again
              (``RetryHeartbeatStaleTrialCallback``), so another worker measures it.
    worker    one process measuring trials on one device; ``--workers N`` starts N of them (one
              launch), each also runnable by hand on another machine against the same storage.
    measured  a finished trial that measured a config: COMPLETE or PRUNED, not a repeat of an
              earlier trial's config (``duplicate_of``). Failed and withdrawn trials don't count.
    in flight a RUNNING trial; it may still become measured, so a worker waits rather than start
              one more trial than the budget needs.
    budget    the measured trials the study should hold when its workers stop (``target``),
              stored in the study: the first worker of a launch opens it (``trials`` more than the
              study holds); later workers of any launch join it while it is unfilled, so a
              restarted worker or a second machine completes it instead of adding its own.

Example: a study holds 12 measured trials; ``--workers 2 --trials 4`` opens the budget 16. Worker 0
measures #12 and #14, worker 1 measures #13 and is killed in #15. Worker 0 sees 15 measured + #15
in flight = 16 and waits; after ``grace`` seconds the heartbeat fails #15 and queues it again as
#16; worker 0 measures #16 and stops at 16. Nothing is measured twice, nothing is lost.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from experiments.cli import CliError, check_device
from experiments.runinfo import now

HEARTBEAT_SECONDS, GRACE_SECONDS = 10, 60  # a trial silent for a minute belongs to a dead process
MAX_RETRIES = 2  # a config whose worker died this many times is not queued again (it may kill workers)
DRIVERS = "pip install 'lookahead-decoding[distributed]' (psycopg) for PostgreSQL"


# --------------------------------------------------------------------------------------------
# Storage


def check_storage(text: str) -> str:
    """``--storage`` parsed and checked before any model loads; returns the URL to open.

    ``postgresql://`` gets the psycopg (3) driver where SQLAlchemy's default one is missing; a
    SQLite file's folder is created and must be writable. Errors name the flag and the fix."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(text)
    except ArgumentError:
        raise CliError(f"--storage {text}: not a database URL; use sqlite:///path/to/optuna.db or "
                       f"postgresql://user@host:port/database") from None
    try:
        url = _with_driver(url)
    except NoSuchModuleError:
        raise CliError(f"--storage {text}: unknown database kind {url.drivername!r}; use sqlite:///path/to/optuna.db "
                       f"or postgresql://user@host:port/database") from None
    except ImportError as error:
        raise CliError(f"--storage {text}: its driver is not installed ({error}); {DRIVERS}") from None
    if url.get_backend_name() == "sqlite":
        _check_sqlite_file(text, url.database)
    return url.render_as_string(hide_password=False)


def _with_driver(url):
    """The URL with a driver that imports: SQLAlchemy's default, else psycopg 3 for PostgreSQL."""
    try:
        url.get_dialect().import_dbapi()
    except ImportError:
        if url.drivername != "postgresql" or importlib.util.find_spec("psycopg") is None:
            raise
        url = url.set(drivername="postgresql+psycopg")
        url.get_dialect().import_dbapi()
    return url


def _check_sqlite_file(text: str, database: str | None) -> None:
    if not database or database == ":memory:":
        raise CliError(f"--storage {text}: give a file, e.g. sqlite:///sweeps/results/optuna.db (an in-memory "
                       f"study is lost when the run ends)")
    path = Path(database).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"--storage {text}: cannot create the folder {path.parent} ({error.strerror or error}); "
                       f"pick a writable path") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CliError(f"--storage {text}: {path if path.exists() else path.parent} is not writable; "
                       f"pick a writable path")


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS):
    """An RDB storage with a heartbeat: a trial whose process died is marked failed and queued
    again. Workers opening a new database at once race to create its tables: the loser retries."""
    import warnings

    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # the retry callback is "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace,
                                                  **_retry_callback(optuna))
        except (IntegrityError, ProgrammingError):
            if attempt == 2:
                raise
            time.sleep(0.5 + attempt)


def _retry_callback(optuna) -> dict[str, Any]:
    """Optuna >= 4.9 names it RetryHeartbeatStaleTrialCallback; older ones RetryFailedTrialCallback."""
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if retry is not None:
        return {"heartbeat_stale_trial_callback": retry(max_retry=MAX_RETRIES)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRIES)}


def connect(url: str, heartbeat: int, grace: int):
    """``open_storage`` with its errors as one ``--storage`` line (a server that is down, a wrong
    password, a file that is not a database)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return open_storage(url, heartbeat, grace)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise CliError(f"--storage {shown(url)}: cannot open it ({reason}); start the database or fix the URL") \
            from None


def shown(text: str, url: str | None = None) -> str:
    """``text`` (the storage ``url``, or a command line holding it) as logs and reports show it:
    the password as ``***``."""
    from sqlalchemy.engine import make_url

    password = make_url(url or text).password
    return text.replace(str(password), "***") if password else text


def sqlite_folder(url: str) -> Path | None:
    """The folder of a SQLite storage's file (results go next to it); None for a server."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return Path(parsed.database).expanduser().parent if parsed.get_backend_name() == "sqlite" else None


# --------------------------------------------------------------------------------------------
# Who runs the trials


@dataclass(frozen=True)
class Worker:
    """This process among the study's workers: its launch (one command's workers), its index in
    the launch (None: a run of its own) and where it runs."""

    launch: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    index: int | None = None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    @property
    def session(self) -> str:
        """This process's id in the study (its trials' ``session`` attribute)."""
        return self.launch if self.index is None else f"{self.launch}-w{self.index}"

    @property
    def tag(self) -> str:
        return "sweep" if self.index is None else f"sweep w{self.index}"

    def seed_offset(self) -> int:
        """Added to the sampler's seed: 0 for a run of its own (reproducible as before); for a
        launched worker a number from its host and index, so workers that start together on an
        empty study do not draw the same configs in lockstep."""
        return 0 if self.index is None else 1 + zlib.crc32(f"{self.host}/{self.index}".encode()) % 1_000_003


# --------------------------------------------------------------------------------------------
# The budget


def is_measured(trial) -> bool:
    return trial.state.name in ("COMPLETE", "PRUNED") and "duplicate_of" not in trial.user_attrs


def measured_trials(trials: Sequence) -> list:
    return [t for t in trials if is_measured(t)]


def in_flight(trials: Sequence, before: int | None = None) -> list:
    """RUNNING trials not withdrawn (those numbered below ``before`` only, if given)."""
    return [t for t in trials if t.state.name == "RUNNING" and "withdrawn" not in t.user_attrs
            and (before is None or t.number < before)]


def claim_target(study, trials: int, worker: Worker) -> int:
    """The measured trials the study should hold when this worker stops (see ``budget`` above):
    the budget of this worker's launch; else the study's unfilled budget (no more of it than
    ``trials``); else a new budget of ``trials`` more than the study holds."""
    measured = len(measured_trials(study.get_trials(deepcopy=False)))
    if trials == 0:
        return measured
    budget = study.user_attrs.get("budget") or {}
    if budget.get("launch") == worker.launch:
        return budget["target"]
    if budget.get("target", 0) > measured:
        return min(budget["target"], measured + trials)
    study.set_user_attr("budget", {"target": measured + trials, "trials": trials, "launch": worker.launch,
                                   "date": now()})
    return measured + trials


def poll_seconds(heartbeat: int) -> float:
    """How often a waiting worker looks at the study again."""
    return max(0.2, min(2.0, heartbeat / 2))


def fail_stale(study) -> None:
    """Optuna's ``fail_stale_trials`` (experimental: its warning is silenced)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def wait_until_quiet(study, poll: float) -> list:
    """Wait until no trial runs (a dead worker's trial runs until the heartbeat fails it, within
    ``grace`` seconds); returns the study's trials then."""
    while True:
        fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        if not in_flight(trials):
            return trials
        time.sleep(poll)


def writes_report(trials: Sequence, worker: Worker, asked: bool = False) -> bool:
    """Whether this process writes the study's report, looked at once no trial runs: when
    ``asked`` (``--report-only``, ``--trials 0``); a run of its own that drew no trial; else the
    process whose trial is the newest finished one (unique, the same answer in every worker)."""
    if asked or (worker.index is None and not any(t.user_attrs.get("session") == worker.session for t in trials)):
        return True
    finished = [t for t in trials if t.state.is_finished() and "session" in t.user_attrs]
    return bool(finished) and max(finished, key=lambda t: t.number).user_attrs["session"] == worker.session


# --------------------------------------------------------------------------------------------
# The launcher: --workers N


def parse_devices(text: str | None, workers: int) -> list[str]:
    """``--devices cuda:0,cuda:1`` (one per worker) or one device for all (``cpu``); unset: one
    GPU per worker if there are enough, else ``cpu``."""
    import torch

    if text is None:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(workers)] if gpus >= workers else ["cpu"] * workers
    names = [part.strip() for part in text.split(",") if part.strip()]
    if len(names) not in (1, workers):
        raise CliError(f"--devices {text}: {len(names)} devices for --workers {workers}; give one per worker "
                       f"or one for all")
    for name in names:
        check_device(name, f"--devices {text}")
    return names * workers if len(names) == 1 else names


def worker_commands(argv: Sequence[str], devices: Sequence[str], threads: int | None) -> list[list[str]]:
    """The command of each worker: this command's flags, then its device, its index and the
    launch they share (later flags win); 1 torch thread each unless ``threads`` is set."""
    launch = uuid.uuid4().hex[:8]
    extra = [] if threads is not None else ["--threads", "1"]
    return [[sys.executable, "-m", "experiments.sweep", *argv, *extra, "--device", device,
             "--worker-index", str(index), "--launch", launch] for index, device in enumerate(devices)]


def launch_workers(commands: Sequence[Sequence[str]], log) -> int:
    """Start the workers, wait for all of them; their output goes to this terminal. Returns 0 if
    every worker succeeded, 130 if interrupted, else the first failure's status (a signal: 1)."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    processes = [subprocess.Popen(list(command), env=env) for command in commands]
    log(f"[sweep] started {len(processes)} workers (pids {', '.join(str(p.pid) for p in processes)}); "
        f"waiting for them")
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:  # Ctrl-C reached the workers too (one process group); else pass it on
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGINT)
        for process in processes:
            process.wait()
        return 130
    log("[sweep] workers done: " + ", ".join(f"w{i} {_exit_text(code)}" for i, code in enumerate(codes)))
    failed = [code for code in codes if code != 0]
    return 0 if not failed else (failed[0] if failed[0] > 0 else 1)


def _exit_text(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"


def worker_flags(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--devices``, ``--report-only``, ``--heartbeat``, ``--grace`` (and the two
    flags the launcher hands its workers)."""
    from experiments.cli import int_at_least

    group = parser.add_argument_group("many workers (docs/sweeps.md: many GPUs, many machines)")
    group.add_argument("--workers", type=int_at_least(1), default=None, metavar="N",
                       help="start N worker processes on this machine, one per --devices entry, and wait for them; "
                            "they share the study (and its --trials budget) through --storage")
    group.add_argument("--devices", default=None, metavar="LIST",
                       help="with --workers: cuda:0,cuda:1,... (one per worker) or one device for all (cpu); "
                            "default: one GPU each if there are enough, else cpu")
    group.add_argument("--report-only", action="store_true",
                       help="measure nothing: re-check the best trial on held-out prompts and write the report")
    group.add_argument("--heartbeat", type=int_at_least(1), default=HEARTBEAT_SECONDS, metavar="SECONDS",
                       help=f"a running trial's heartbeat (default {HEARTBEAT_SECONDS})")
    group.add_argument("--grace", type=int_at_least(1), default=GRACE_SECONDS, metavar="SECONDS",
                       help=f"a trial silent this long belongs to a dead worker: it is failed and queued again "
                            f"(default {GRACE_SECONDS})")
    group.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    group.add_argument("--launch", default=None, help=argparse.SUPPRESS)
