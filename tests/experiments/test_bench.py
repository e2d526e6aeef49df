"""experiments.bench end to end on a tiny random model with a stub tokenizer (a few seconds)."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from experiments import bench, datasets
from experiments.harness import BASELINE, Record
from tests.tiny_models import VOCAB, tiny_model

PNG = b"\x89PNG\r\n\x1a\n"


class StubTokenizer:
    """Characters -> ids 3..95; a chat template that keeps the first 30 characters of each message
    (prompts stay short and tests fast)."""

    chat_template = "stub"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"[{m['role'][0]}]{m['content'][:30]}" for m in messages) + ("[a]" if add_generation_prompt else "")

    def encode(self, text, add_special_tokens=True):
        return [3 + ord(c) % (VOCAB - 3) for c in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(32 + i % 90) for i in ids)


def run_bench(tmp_path, *argv: str) -> int:
    return bench.main([*argv, "--out", str(tmp_path / "run")], model_and_tokenizer=(tiny_model("llama"), StubTokenizer()))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bench_end_to_end_writes_records_table_and_plots(tmp_path, capsys):
    status = run_bench(tmp_path, "--dataset", "gsm8k", "--limit", "2", "--max-new-tokens", "12", "--lookahead", "3,3,3",
                       "--lookahead", "2,3,2", "--threads", "1")
    out = tmp_path / "run"
    assert status == 0
    lines = read_jsonl(out / bench.RECORDS)
    assert [line["type"] for line in lines] == ["header"] + ["record"] * 8 + ["footer"]
    header = lines[0]
    assert header["torch_threads"] == 1 and header["device"] == "cpu" and header["prompts"] == 2
    assert {"torch", "transformers", "python"} <= set(header["versions"]) and header["loadavg"] is not None
    records = [Record.from_json(line) for line in lines[1:-1]]
    assert [r.method for r in records[:4]] == ["greedy", "pld", "lookahead[W=3 N=3 G=3]", "lookahead[W=2 N=3 G=2]"]
    assert all(r.identical for r in records)  # tiny fp32 models: exact
    assert all(r.new_tokens == 12 and r.forwards >= 2 and r.output_ids for r in records)
    table = (out / bench.TABLE).read_text()
    assert "| **Overall** | pld |" in table and "Mathematical Reasoning" in table and "100%" in table
    won = [r.sources for r in records if r.method.startswith("lookahead") and set(r.sources) - {"none"}]
    assert ("by the source of the winning draft" in table) == bool(won)
    assert table.strip() in capsys.readouterr().out  # printed last
    for name in (bench.SPEEDUP_PNG, bench.ACCEPTED_PNG):
        assert (out / name).read_bytes()[:8] == PNG


def test_second_turn_sees_the_baselines_first_answer(tmp_path):
    args = bench.build_parser().parse_args(["--turns", "2", "--max-new-tokens", "6", "--methods", "greedy,lookahead",
                                            "--no-memory"])
    prompt = datasets.load_dataset("mt_bench", limit_per_category=1)[0]
    tokenizer, seen = StubTokenizer(), []
    records = bench.run_benchmark(tiny_model("llama"), tokenizer, [prompt], bench.build_methods(args), args, seen.append)
    assert [(r.turn, r.method) for r in records] == [(0, "greedy"), (0, "lookahead[W=0 N=4 G=2]"),
                                                     (1, "greedy"), (1, "lookahead[W=0 N=4 G=2]")]
    answer = tokenizer.decode(records[0].output_ids)  # greedy's first answer, as text
    expected = f"[u]{prompt.turns[0][:30]}[a]{answer[:30]}[u]{prompt.turns[1][:30]}[a]"
    second = bench.second_turn(tokenizer, prompt, records[0]).input_ids[0].tolist()
    assert second == tokenizer.encode(expected)
    assert records[2].prompt_tokens == len(second) and seen == records


def test_report_rerenders_a_killed_run(tmp_path):
    assert run_bench(tmp_path, "--dataset", "gsm8k", "--limit", "1", "--max-new-tokens", "4", "--methods", "greedy",
                     "--no-plots", "--warmup", "0") == 0
    path = tmp_path / "run" / bench.RECORDS
    path.write_text(path.read_text() + '{"type": "record", "prompt_id": "cut')  # a line cut off by a kill
    (tmp_path / "run" / bench.TABLE).unlink()
    assert bench.main(["--report", str(tmp_path / "run"), "--no-plots"]) == 0
    assert "| **Overall** | greedy | 1 |" in (tmp_path / "run" / bench.TABLE).read_text()


def test_configs_from_yaml_files_and_flags(tmp_path):
    path = tmp_path / "configs.yaml"
    path.write_text("- {window: 5, ngram: 4, guess_set: 5, pool: {name: lfu}}\n- {label: small, window: 2, ngram: 3, guess_set: 2}\n")
    args = bench.build_parser().parse_args(["--methods", "lookahead", "--config", str(path), "--lookahead", "7,5,7",
                                            "--set", "pool.name=fifo"])
    names = [m.name for m in bench.build_methods(args)]
    assert names == [BASELINE, "lookahead[W=5 N=4 G=5 pool=fifo]", "small", "lookahead[W=7 N=5 G=7 pool=fifo]"]


def test_a_strategy_from_a_file_outside_the_repo(tmp_path, user_pool_file, capsys):
    status = run_bench(tmp_path, "--dataset", "gsm8k", "--limit", "1", "--max-new-tokens", "6", "--methods",
                       "greedy,lookahead", "--no-plots", "--import", str(user_pool_file),
                       "--set", "pool.name=newest_first", "--set", "pool.depth=1")
    assert status == 0, capsys.readouterr().err
    records = [Record.from_json(line) for line in read_jsonl(tmp_path / "run" / bench.RECORDS)[1:-1]]
    assert [r.method for r in records] == ["greedy", "lookahead[W=0 N=4 G=2 pool=newest_first(depth=1)]"]
    assert records[1].config["pool"] == {"name": "newest_first", "capacity": None, "seed_from_prompt": True,
                                         "persist": False, "depth": 1} and records[1].identical


def test_a_killed_run_resumes_without_measuring_finished_prompts_again(tmp_path, capsys, monkeypatch):
    argv = ["--dataset", "gsm8k", "--limit", "3", "--max-new-tokens", "3", "--methods", "greedy,lookahead",
            "--no-plots", "--threads", "1", "--warmup", "0"]
    assert run_bench(tmp_path, *argv) == 0
    path = tmp_path / "run" / bench.RECORDS
    lines = path.read_text().splitlines()
    first_two = [line for line in lines if '"type": "record"' in line][:4]  # 2 prompts x 2 methods
    torn = lines[0] + "\n" + "\n".join(first_two) + "\n" + first_two[0][:40]  # killed while writing prompt 2's
    path.write_text(torn.replace(first_two[-1] + "\n", ""))  # ... and prompt 2 only half written
    measured = []
    real_run_prompt = bench.run_prompt
    monkeypatch.setattr(bench, "run_prompt", lambda model, methods, item, *a, **k: (
        measured.append(item.prompt_id) or real_run_prompt(model, methods, item, *a, **k)))
    assert run_bench(tmp_path, *argv) == 0
    err = capsys.readouterr().err
    assert "dropped a torn last line" in err and "1 finished prompt turns kept" in err
    assert len(measured) == 2  # prompt 1 was kept; prompt 2 (half written) and 3 measured
    header, records = bench.read_run(path)
    assert len(records) == 6 and len({(r.prompt_id, r.method) for r in records}) == 6
    assert "| **Overall** | greedy | 3 |" in (tmp_path / "run" / bench.TABLE).read_text()


def test_a_different_run_into_a_used_folder_is_refused(tmp_path, capsys):
    argv = ["--dataset", "gsm8k", "--limit", "1", "--methods", "greedy", "--no-plots", "--threads", "1"]
    assert run_bench(tmp_path, *argv, "--max-new-tokens", "2") == 0
    before = (tmp_path / "run" / bench.RECORDS).read_text()
    assert run_bench(tmp_path, *argv, "--max-new-tokens", "4") == 2
    assert "holds a different run (it differs in max_new_tokens)" in capsys.readouterr().err
    assert (tmp_path / "run" / bench.RECORDS).read_text() == before


@pytest.mark.parametrize("argv, flag", [
    (["--lookahead", "5,4"], "--lookahead"),
    (["--lookahead", "5,1,5"], "--lookahead 5,1,5: ngram must be >= 2"),
    (["--set", "guess_set=-1"], "--set guess_set=-1: guess_set must be >= 0"),
    (["--methods", "greedy,beam"], "--methods"),
    (["--lookahead", "3,3,3", "--lookahead", "3,3,3"], "the same config twice"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, argv, flag):
    assert run_bench(tmp_path, *argv) == 2
    assert flag in capsys.readouterr().err


def test_bad_yaml_names_the_file(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("window: 5\nwindoww: 3\n")
    assert run_bench(tmp_path, "--config", str(path)) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "windoww" in err


def test_wandb_offline_run_lands_in_the_output_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert run_bench(tmp_path, "--dataset", "gsm8k", "--limit", "1", "--max-new-tokens", "4", "--methods", "greedy,pld",
                     "--warmup", "0", "--wandb") == 0
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_bench_imports_without_optuna_wandb_or_matplotlib(monkeypatch):
    """The GPU image has no optuna or wandb: a fresh import of the bench (and of the framework
    under it) must not need them, nor matplotlib (imported only to plot)."""
    ours = ("experiments", "framework", "strategies")
    before = set(sys.modules)
    for name in [n for n in sys.modules if n.split(".")[0] in ours]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("optuna", "wandb", "matplotlib"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    try:
        importlib.import_module("experiments.bench")
        importlib.import_module("experiments.harness")
    finally:  # drop the fresh copies that monkeypatch will not restore
        for name in [n for n in sys.modules if n.split(".")[0] in ours and n not in before]:
            del sys.modules[name]
