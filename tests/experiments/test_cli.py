"""experiments.cli: one way to name a configuration, errors that name the flag, and no input that
turns into a traceback (Hypothesis over argument lists)."""

from __future__ import annotations

import contextlib
import io
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments import bench, generate
from experiments.cli import CliError, auto_threads, parse_set, single_config
from framework import LookaheadConfig
from framework.models import encode_prompt, load_model
from strategies import temporary_registrations


def config_of(*argv: str) -> LookaheadConfig:
    return single_config(generate.build_parser().parse_args(["--prompt", "x", *argv]))


@pytest.mark.parametrize("item, expected", [
    ("window=4", ("window", 4)), ("pool.capacity=null", ("pool.capacity", None)),
    ("harvest_output=false", ("harvest_output", False)), ("pool.name=lfu", ("pool.name", "lfu")),
    ("realign=", ("realign", "")), ("window=[1, 2]", ("window", [1, 2])),
])
def test_set_values_are_yaml(item, expected):
    assert parse_set(item) == expected


@pytest.mark.parametrize("item", ["window", "=4", "pool..capacity=3", ".x=1"])
def test_a_set_without_a_key_is_refused(item):
    with pytest.raises(CliError, match=rf"--set {item}: expected KEY=VALUE"):
        parse_set(item)


def test_a_model_level_error_names_the_size_flag_that_caused_it():
    with pytest.raises(CliError, match=r"^--set window=10000: .* would feed up to 30015 tokens per step"):
        config_of("--set", "window=10000")
    with pytest.raises(CliError, match=r"^--guess-set 2000: .* would feed up to"):
        config_of("--guess-set", "2000")


def test_a_config_file_error_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pool: {name: lru, capacity: 0}\n")
    with pytest.raises(CliError, match=rf"--config {path}: pool.capacity: Input should be greater than or equal to 1"):
        config_of("--config", str(path))
    path.write_text("- {window: 1}\n- {window: 2}\n")
    with pytest.raises(CliError, match="holds 2 configs; this command takes one"):
        config_of("--config", str(path))
    path.write_text("[unclosed\n")
    with pytest.raises(CliError, match=rf"--config {path}:"):
        config_of("--config", str(path))


@pytest.mark.parametrize("cpus, load, threads", [(2, 0.1, 2), (2, 1.2, 1), (2, 5.0, 1), (8, 2.6, 5), (4, 0.0, 4)])
def test_auto_threads_are_the_free_cpus_at_least_one(monkeypatch, cpus, load, threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert auto_threads() == threads


def test_a_folder_that_is_not_a_model_says_so(tmp_path):
    with pytest.raises(OSError, match="holds no config.json, so it is not a Hugging Face model folder"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("chat", [True, False])
def test_an_empty_prompt_is_refused_on_both_paths(chat):
    from tests.experiments.conftest import tiny_tokenizer

    with pytest.raises(ValueError, match="the prompt is empty"):
        encode_prompt(tiny_tokenizer(), "  ", chat=chat)


def test_an_output_folder_that_cannot_be_made_is_refused_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    status = bench.main(["--out", str(tmp_path / "file" / "run"), "--model", str(tmp_path / "no-model")])
    assert status == 2 and "--out" in capsys.readouterr().err


FLAGS = ["--window", "--ngram", "--guess-set", "--set", "--config", "--import", "--threads", "--max-new-tokens",
         "--device", "--temperature", "--sample", "--no-chat", "--dtype"]
VALUES = st.sampled_from(["0", "-1", "3", "1e9", "nan", "inf", "x", "", "pool.capacity=0", "pool.name=lfu",
                          "pool=", "window=.inf", "pool.name=[lru]", "window_seed=1180591620717411303424",
                          "realign=shift", "/no/such/file.yaml", "cuda", "cpu", "no_such_module"])


@given(st.lists(st.sampled_from(FLAGS) | VALUES, max_size=6))
def test_any_argument_list_exits_1_or_2_with_one_error_line(argv):
    """Every argument list either fails on its flags (exit 2, one ``error:`` line or argparse's
    usage) or reaches the model loader, which fails on the missing model (exit 1); never a traceback."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()), temporary_registrations():
        status = generate.main(["--prompt", "x", *argv, "--model", "/no/such/model/folder"])
    err = stderr.getvalue()
    assert status in (1, 2) and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:") or ": error:" in line]
    assert len(lines) == 1, err
