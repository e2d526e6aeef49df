"""experiments.ablate on a tiny random model with the bench's stub tokenizer: suite files, the run,
resuming, the statistics and the report (a few seconds)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from experiments import ablate, ablate_report, ablate_stats as stats
from experiments.ablate_suite import load_suite, shipped_suites
from experiments.bench import RECORDS
from experiments.harness import OVERALL, summarize
from tests.experiments.test_bench import PNG, StubTokenizer, read_jsonl
from tests.tiny_models import tiny_model

TWO_ARMS = """
name: two-arms
description: a test suite
reference: small
arms:
  - {name: pld, method: pld, pld: {num_tokens: 4}}
  - {name: small, config: {window: 2, ngram: 3, guess_set: 2}}
"""
QUICK = ["--dataset", "gsm8k", "--limit", "2", "--max-new-tokens", "8", "--threads", "1", "--no-wandb"]


def write_suite(tmp_path, text: str, name: str = "suite.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def run_ablate(tmp_path, *argv: str) -> int:
    return ablate.main([*argv, "--out", str(tmp_path / "run")], model_and_tokenizer=(tiny_model("llama"), StubTokenizer()))


def records_of(tmp_path) -> list[dict]:
    return [line for line in read_jsonl(tmp_path / "run" / RECORDS) if line["type"] == "record"]


# --------------------------------------------------------------------------------------------
# Suite files


@pytest.mark.parametrize("name", shipped_suites())
def test_every_shipped_suite_validates_and_fits_max_step_tokens(name):
    suite = load_suite(name)
    assert suite.name == name and suite.reference in {arm.name for arm in suite.arms}
    for arm in suite.arms:
        if arm.method == "lookahead":
            config = arm.lookahead_config()
            assert config.step_tokens() <= config.max_step_tokens


def test_shipped_suites_hold_the_issues_arms():
    assert set(shipped_suites()) >= {"paper-table3", "scaling-law", "wng-grid", "sampling"}
    table3 = {arm.name: arm for arm in load_suite("paper-table3").arms}
    assert table3["pld"].method == "pld" and table3["W=15 G=15"].paper.tokens_per_step == 1.96
    assert table3["W=15 G=15"].config["pool"]["seed_from_prompt"] is False
    assert table3["+prompt +output"].config["harvest_output"] is True
    scaling = load_suite("scaling-law")
    sizes = {(a.config["window"], a.config["ngram"], a.config["guess_set"]) for a in scaling.arms}
    assert sizes == {(w, n, w) for w in (1, 2, 4, 8, 16, 32, 64) for n in (5, 8, 11)}
    assert len(load_suite("wng-grid").arms) == 17  # the centre is in all three grids, kept once
    temperatures = [a.sampling.temperature if a.sampling else 0 for a in load_suite("sampling").arms]
    assert temperatures[:4] == [0, 0.3, 0.7, 1.0]


@pytest.mark.parametrize("arm, expected", [
    ("{name: a, windw: 3}", ["suite.yaml", "arm 'a': windw: unknown key", "go under config:"]),
    ("{name: a, config: {windw: 3}}", ["arm 'a'", "windw", "Extra inputs are not permitted"]),
    ("{name: a, config: {pool: {name: nope}}}", ["arm 'a'", "unknown pool 'nope'", "lru"]),
    ("{name: a, config: {window: 64, ngram: 11, guess_set: 200}}", ["arm 'a'", "max_step_tokens"]),
    ("{name: a, method: pld, config: {window: 2}}", ["arm 'a'", "only apply to method: lookahead"]),
    ("{name: a, method: beam}", ["arm 'a': method", "'lookahead', 'greedy' or 'pld'"]),
    ("{name: 'W={window}', grid: {window: [1, 2]}, tie: {guess_set: windw}}", ["tie.guess_set", "'windw'"]),
    ("{name: 'W', grid: {window: [1, 2]}}", ["two different arms are named 'W'"]),
    ("{name: 'W={windw}', grid: {window: [1]}}", ["no config key 'windw'"]),
])
def test_a_bad_arm_is_refused_naming_the_file_the_arm_and_the_key(tmp_path, capsys, arm, expected):
    path = write_suite(tmp_path, f"name: bad\narms:\n  - {arm}\n")
    assert ablate.main(["--suite", path, "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and all(text in err for text in expected), err


def test_suite_level_errors_name_the_key(tmp_path, capsys):
    for text, expected in [("name: x\narms: []\n", "arms"), ("name: x\nreference: zz\narms: [{name: a}]\n", "reference"),
                           ("name: x\nsclaing: {}\narms: [{name: a}]\n", "sclaing: unknown key"),
                           ("name: x\nscaling: {}\narms: [{name: a, config: {window: 0}}]\n", "scaling.x")]:
        assert ablate.main(["--suite", write_suite(tmp_path, text), "--check"]) == 2
        assert expected in capsys.readouterr().err
    assert ablate.main(["--suite", "no-such-suite", "--check"]) == 2
    assert "paper-table3" in capsys.readouterr().err  # the error lists the shipped suites


def test_a_grid_expands_with_ties_and_a_user_strategy_from_a_file(tmp_path, user_pool_file, capsys):
    path = write_suite(tmp_path, """
        name: grid
        arms:
          - name: "W={window} N={ngram}"
            config: {pool: {name: newest_first, depth: 1}}
            grid: {ngram: [3, 4], window: [1, 2]}
            tie: {guess_set: window}
    """)
    assert ablate.main(["--suite", path, "--import", str(user_pool_file), "--check"]) == 0
    out = capsys.readouterr().out
    assert "4 arms" in out and "W=2 N=4 G=2 pool=newest_first(depth=1)" in out


# --------------------------------------------------------------------------------------------
# The run


def test_two_arm_suite_end_to_end_writes_records_table_and_plot(tmp_path, capsys):
    assert run_ablate(tmp_path, "--suite", write_suite(tmp_path, TWO_ARMS), *QUICK) == 0
    lines = read_jsonl(tmp_path / "run" / RECORDS)
    assert [line["type"] for line in lines] == ["header"] + ["record"] * 6 + ["footer"]
    header = lines[0]
    assert header["mode"] == "steps-only" and header["baseline"] == "greedy" and header["parameters"] > 0
    assert [line["method"] for line in lines[1:4]] == ["greedy", "pld", "small"]  # the identity reference first
    assert all(line["identical"] for line in lines[1:-1]) and all(line["decode_fed_tokens"] > 0 for line in lines[1:-1])
    small = [line for line in lines if line.get("method") == "small"]
    assert all(line["decode_fed_tokens"] >= line["steps"] for line in small)
    table = (tmp_path / "run" / ablate_report.TABLE).read_text()
    assert "| small | W=2 N=3 G=2 |" in table and "(reference)" in table and "Speedup" not in table
    assert "| greedy |" not in table  # the hidden reference is not an arm of the suite
    assert (tmp_path / "run" / ablate_report.BARS_PNG).read_bytes()[:8] == PNG
    assert table.strip() in capsys.readouterr().out


def test_a_killed_run_resumes_without_rerunning_finished_pairs(tmp_path, capsys, monkeypatch):
    argv = ["--suite", write_suite(tmp_path, TWO_ARMS), *QUICK, "--limit", "3", "--no-plots"]
    assert run_ablate(tmp_path, *argv) == 0
    path = tmp_path / "run" / RECORDS
    lines = path.read_text().splitlines()
    # killed after prompt 1 (3 pairs) and prompt 2's greedy and pld, while writing prompt 2's `small`
    path.write_text("\n".join(lines[:6]) + "\n" + lines[6][:50])
    measured = []
    real = ablate.run_prompt
    monkeypatch.setattr(ablate, "run_prompt", lambda model, methods, item, *a, **k: (
        measured.extend((m.name, item.prompt_id) for m in methods) or real(model, methods, item, *a, **k)))
    assert run_ablate(tmp_path, *argv) == 0
    assert "dropped a torn last line" in capsys.readouterr().err
    ids = list(dict.fromkeys(line["prompt_id"] for line in records_of(tmp_path)))
    assert measured == [("small", ids[1])] + [(name, ids[2]) for name in ("greedy", "pld", "small")]
    pairs = [(line["method"], line["prompt_id"]) for line in records_of(tmp_path)]
    assert len(pairs) == 9 == len(set(pairs))
    assert all(line["identical"] for line in records_of(tmp_path))  # checked against the kept greedy run


def test_a_kill_mid_prompt_keeps_every_pair_already_decoded(tmp_path, monkeypatch):
    argv = ["--suite", write_suite(tmp_path, TWO_ARMS), *QUICK, "--no-plots"]
    real, calls = ablate.run_prompt, []

    def killed_on_the_fifth_pair(model, methods, item, *a, **k):
        calls.append((methods[0].name, item.prompt_id))
        if len(calls) == 5:
            raise KeyboardInterrupt  # prompt 2's pld: its greedy is done, small is not
        return real(model, methods, item, *a, **k)

    monkeypatch.setattr(ablate, "run_prompt", killed_on_the_fifth_pair)
    with pytest.raises(KeyboardInterrupt):
        run_ablate(tmp_path, *argv)
    assert len(records_of(tmp_path)) == 4  # written pair by pair, not prompt by prompt
    calls.clear()
    monkeypatch.setattr(ablate, "run_prompt", lambda model, methods, item, *a, **k: (
        calls.append((methods[0].name, item.prompt_id)) or real(model, methods, item, *a, **k)))
    assert run_ablate(tmp_path, *argv) == 0
    assert [name for name, _ in calls] == ["pld", "small"] and len(records_of(tmp_path)) == 6


def test_resuming_runs_an_added_arm_and_refuses_a_changed_one(tmp_path, capsys):
    path = write_suite(tmp_path, TWO_ARMS)
    assert run_ablate(tmp_path, "--suite", path, *QUICK, "--no-plots") == 0
    added = TWO_ARMS + "  - {name: wide, config: {window: 3, ngram: 3, guess_set: 3}}\n"
    assert run_ablate(tmp_path, "--suite", write_suite(tmp_path, added), *QUICK, "--no-plots") == 0
    assert "6 finished (arm, prompt) pairs kept" in capsys.readouterr().err
    assert [line["method"] for line in records_of(tmp_path)[6:]] == ["wide", "wide"]
    assert "| wide |" in (tmp_path / "run" / ablate_report.TABLE).read_text()
    changed = TWO_ARMS.replace("window: 2", "window: 1")
    assert run_ablate(tmp_path, "--suite", write_suite(tmp_path, changed), *QUICK, "--no-plots") == 2
    assert "differs in arm 'small'" in capsys.readouterr().err
    assert run_ablate(tmp_path, "--suite", path, *QUICK[:-3], "--threads", "1", "--max-new-tokens", "9") == 2
    assert "max_new_tokens" in capsys.readouterr().err


def test_sampling_arms_are_seeded_per_prompt_and_skip_the_identity_check(tmp_path):
    suite = write_suite(tmp_path, """
        name: sampled
        arms:
          - {name: hot, config: {window: 2, ngram: 3, guess_set: 2}, sampling: {temperature: 1.0, top_k: 20}}
          - {name: cold, config: {window: 2, ngram: 3, guess_set: 2}, sampling: {temperature: 0}}
    """)
    assert run_ablate(tmp_path, "--suite", suite, *QUICK, "--no-plots") == 0
    first = {(r["method"], r["prompt_id"]): r for r in records_of(tmp_path)}
    assert {r["identical"] for (m, _), r in first.items() if m == "hot"} == {None}
    assert all(r["identical"] for (m, _), r in first.items() if m == "cold")
    (tmp_path / "run" / RECORDS).unlink()
    assert run_ablate(tmp_path, "--suite", suite, *QUICK, "--no-plots") == 0
    again = {(r["method"], r["prompt_id"]): r["output_ids"] for r in records_of(tmp_path)}
    assert again == {key: r["output_ids"] for key, r in first.items()}


def test_timing_mode_adds_the_speedup_column_and_report_rerenders(tmp_path, capsys):
    suite = write_suite(tmp_path, TWO_ARMS)
    assert run_ablate(tmp_path, "--suite", suite, *QUICK, "--timing", "--repeats", "2", "--warmup", "0") == 0
    assert "Speedup" in (tmp_path / "run" / ablate_report.TABLE).read_text()
    (tmp_path / "run" / ablate_report.TABLE).unlink()
    assert ablate.main(["--report", str(tmp_path / "run"), "--no-plots"]) == 0
    assert "| pld |" in (tmp_path / "run" / ablate_report.TABLE).read_text()
    assert run_ablate(tmp_path, "--suite", suite, *QUICK, "--repeats", "2") == 2
    assert "--repeats: only with --timing" in capsys.readouterr().err


def test_wandb_logs_offline_into_the_output_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    argv = [a for a in QUICK if a != "--no-wandb"]
    assert run_ablate(tmp_path, "--suite", write_suite(tmp_path, TWO_ARMS), *argv, "--limit", "1", "--no-plots") == 0
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


# --------------------------------------------------------------------------------------------
# Statistics and the report


def test_bootstrap_point_is_summarizes_number_and_seeded():
    draws = stats.resample_indices(3, seed=0)
    interval = stats.ratio_interval([30, 10, 5], [10, 10, 5], draws)
    assert interval.value == pytest.approx(45 / 25) and interval.low < interval.value < interval.high
    assert stats.ratio_interval([30, 10, 5], [10, 10, 5], stats.resample_indices(3, seed=0)) == interval
    same = stats.difference_interval(([30, 10], [10, 10]), ([30, 10], [10, 10]), stats.resample_indices(2, 1))
    assert (same.value, same.low, same.high) == (0, 0, 0)  # paired: identical arms differ by exactly 0


def test_wilcoxon_and_holm():
    assert stats.wilcoxon_p([1, 2, 3], [1, 2, 3]) == 1.0 and stats.wilcoxon_p([1], [2]) is None
    assert stats.wilcoxon_p([2, 3, 4, 5, 6, 7, 8, 9], [1] * 8) == pytest.approx(2 / 256)  # exact: all 8 up
    assert stats.holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])


def test_log2_fit_recovers_a_line_and_vectorised_slopes_match_polyfit():
    intercept, slope, r2 = stats.log2_fit([1, 2, 4, 8], [1.0, 1.5, 2.0, 2.5])
    assert (intercept, slope, r2) == pytest.approx((1.0, 0.5, 1.0))
    samples = np.random.default_rng(0).random((5, 4))
    expected = [np.polyfit(np.log2([1, 2, 4, 8]), row, 1)[0] for row in samples]
    assert stats.slopes([1, 2, 4, 8], samples) == pytest.approx(expected)


def fake_record(method, prompt, accepted, config=None):
    return ablate.ArmRecord(prompt_id=prompt, category="c", method=method, new_tokens=sum(accepted),
                            forwards=len(accepted) + 1, steps=len(accepted), tokens_per_step=0.0,
                            tokens_per_forward=0.0, wall_seconds=1.0, peak_memory_mb=None, identical=True,
                            emitted_per_step=accepted, decode_fed_tokens=10 * len(accepted), config=config or {})


def test_scaling_report_fits_a_line_per_group_and_plots_it(tmp_path):
    path = write_suite(tmp_path, """
        name: law
        scaling: {x: window, by: ngram}
        arms:
          - {name: "W={window} N={ngram}", grid: {ngram: [3, 4], window: [1, 2, 4]}, tie: {guess_set: window}}
    """)
    suite = load_suite(path)
    gain = {1: 0, 2: 1, 4: 2}  # one more token every second step per doubling of W
    records = [fake_record(arm.name, f"p{p}", [1, 1 + gain[arm.config["window"]]] * (p + 2))
               for arm in suite.arms for p in range(3)]
    records += [fake_record("greedy", f"p{p}", [1] * 4) for p in range(3)]
    text, report = ablate_report.write_report(tmp_path, suite, {"seed": 0, "parameters": 1000}, records, "greedy")
    assert [group for group, _, _ in report.fits] == [3, 4]
    fit = report.fits[0][1]
    assert fit.slope.value == pytest.approx(0.5) and fit.r2 == pytest.approx(1.0) and fit.intercept == pytest.approx(1.0)
    overall = {s.method: s for s in summarize(records) if s.category == OVERALL}
    assert [row.tokens_per_step.value for row in report.rows] == pytest.approx(
        [overall[row.arm.name].tokens_per_step for row in report.rows])  # one rule for the point estimate
    assert report.rows[0].gflop_per_step == pytest.approx(2 * 1000 * 10 / 1e9)
    assert "| 3 | 3 | 1.00 | +0.500 [+0.500, +0.500] | 1.000 |" in text
    assert (tmp_path / ablate_report.SCALING_PNG).read_bytes()[:8] == PNG


def test_readme_ablate_commands_run_as_printed(tiny_dir, tmp_path, monkeypatch, capsys):
    from tests.test_docs_examples import ROOT, readme_commands

    monkeypatch.chdir(ROOT)
    commands = readme_commands("ablate")
    assert commands
    for i, argv in enumerate(commands):
        status = ablate.main([*argv, "--model", tiny_dir, "--max-new-tokens", "4", "--no-wandb", "--no-plots",
                              "--dataset", "gsm8k", "--out", str(tmp_path / f"run{i}")])  # 1 prompt: fast
        assert status == 0, (argv, capsys.readouterr().err)
