"""Sweep files: the shipped ones validate, bad ones fail naming the key, and a strategy registered
later is swept from its own Params with no edit to the sweep code."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import yaml
from optuna.distributions import CategoricalDistribution, IntDistribution
from pydantic import Field

from experiments.sweep_space import SpaceError, load_sweep, parse_sweep
from framework.config import LookaheadConfig
from strategies import temporary_registrations
from strategies.base import PoolPolicy, register, registered
from strategies.keyed_pool import KeyedPool

ROOT = Path(__file__).resolve().parents[2]


def sweep_of(space: dict, **top) -> dict:
    return {"name": "t", **top, "space": space}


@pytest.mark.parametrize("name", ["default.yaml", "gpu.yaml"])
def test_shipped_sweep_files_validate(name):
    sweep = load_sweep(ROOT / "sweeps" / name)
    space = sweep.space
    assert {"window", "ngram", "guess_set", "pool"} <= set(space.free_params())
    assert set(space.roles["pool"]) == set(registered("pool"))  # choices: all
    assert "pool.unbounded.capacity" not in space.free_params()  # fixed per policy: it never evicts
    assert len(sweep.fingerprint()) == 8 and sweep.spec.trials > 0
    assert space.params_of({})  # the engine's defaults lie inside the space (enqueued first)


def test_default_sweep_is_cpu_sized():
    spec = load_sweep(ROOT / "sweeps" / "default.yaml").spec
    assert spec.dataset == "spec_bench" and spec.limit == 1 and spec.max_new_tokens == 64 and spec.trials == 12
    space = load_sweep(ROOT / "sweeps" / "default.yaml").space
    assert space.fields["window"].high <= 8 and space.fields["guess_set"].high <= 8
    assert space.size() is not None and space.size() > 100  # finite: the sweep knows when it is exhausted


BAD = [
    (sweep_of({"windw": 3}), "space.windw: not a LookaheadConfig field"),
    (sweep_of({"ngram": {"low": 1, "high": 4}}), "space.ngram.low: ngram must be >= 2"),
    (sweep_of({"window": {"low": 5, "high": 2}}), "space.window: low (5) is above high (2)"),
    (sweep_of({"window": "3"}), "space.window: window must be an integer"),
    (sweep_of({"realign": ["keep", "sideways"]}), "space.realign[1]:"),
    (sweep_of({"window": {"lo": 1, "high": 2}}), "space.window: expected a value, a list of choices or a range"),
    (sweep_of({"window": {"low": 0.5, "high": 4}}), "space.window.low: window must be an integer"),
    (sweep_of({"window": {"low": 0, "high": "8"}}), "space.window: low, high and step must be numbers"),
    (sweep_of({"window": []}), "space.window: give at least one choice"),
    (sweep_of({"window": {"low": 0.0, "high": 8.0}}), "space.window: window must be an integer"),
    (sweep_of({"window": {"low": 0, "high": 100000000}}), "space.window.high: window=100000000, ngram=4, guess_set=2 "
                                                          "would feed up to 300000015 tokens per step"),
    (sweep_of({"window": {"low": 0, "high": 300}, "ngram": [3, 8], "guess_set": 300}),
     "space (its largest W, N, G): window=300, ngram=8, guess_set=300 would feed up to"),
    (sweep_of({"pool": ["lru", "nope"]}), "space.pool: unknown pool 'nope'; registered pools:"),
    (sweep_of({"pool": {"choices": "all", "params": {"capcity": [4]}}}), "space.pool.params.capcity: no chosen pool"),
    (sweep_of({"pool": {"choices": ["lru"], "params": {"capacity": [0, 4]}}}),
     "space.pool.params.capacity[0]: Input should be greater than or equal to 1, for pool 'lru'"),
    (sweep_of({"pool": {"choices": ["lru"], "per_policy": {"lfu": {"capacity": 4}}}}),
     "space.pool.per_policy.lfu: not among the chosen pools"),
    (sweep_of({"pool": {"name": "lru", "seed": [True]}}), "space.pool.per_policy.lru.seed: not a parameter of pool"),
    (sweep_of({"verifier": "sampling"}), "space.verifier: verifier 'sampling' samples"),
    (sweep_of({"window": 2}, trails=3), "trails: Extra inputs are not permitted"),
    (sweep_of({"window": 2}, objective="fast"), "objective: give distinct names from speed, tokens_per_step"),
    (sweep_of({"window": 2}, dataset="nope"), "dataset:"),
    (sweep_of({"window": {"low": 0, "high": 8}}, enqueue=[{"window": 9}]), "enqueue[0].window: 9 is outside the space"),
    (sweep_of({"window": 2}, imports=["no_such_module_here"]), "imports: no_such_module_here: cannot import it"),
]


@pytest.mark.parametrize("raw, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_a_bad_space_fails_naming_the_key(raw, message):
    with pytest.raises(SpaceError) as error:
        parse_sweep(raw, source="bad.yaml")
    assert str(error.value).startswith("bad.yaml: ") and message in str(error.value)


def test_dimension_forms_and_suggest_round_trip():
    sweep = parse_sweep(sweep_of({
        "window": {"low": 0, "high": 8, "step": 2}, "ngram": [3, 5], "guess_set": 4, "realign": "keep",
        "pool": {"choices": ["lru", "lfu"], "params": {"capacity": [None, 8]},
                 "per_policy": {"lfu": {"persist": [False, True]}}},
    }))
    space = sweep.space
    assert space.fields["window"] == IntDistribution(0, 8, step=2)
    assert space.fields["ngram"] == CategoricalDistribution([3, 5]) and space.fields["guess_set"] == 4
    assert space.free_params() == ["window", "ngram", "pool", "pool.lru.capacity", "pool.lfu.capacity",
                                   "pool.lfu.persist"]
    config = {"window": 6, "ngram": 5, "guess_set": 4, "realign": "keep",
              "pool": {"name": "lfu", "capacity": 8, "persist": True}}
    params = space.params_of(config)
    assert params == {"window": 6, "ngram": 5, "pool": "lfu", "pool.lfu.capacity": 8, "pool.lfu.persist": True}

    class Replay:  # a stand-in for optuna.Trial that answers with ``params``
        def suggest_int(self, name, *a, **k):
            return params[name]

        suggest_categorical = suggest_int

    drawn = space.suggest(Replay())
    assert LookaheadConfig.model_validate(drawn) == LookaheadConfig.model_validate(config)


def test_fingerprint_follows_what_trials_measure_not_how_many():
    base = sweep_of({"window": {"low": 0, "high": 4}})
    first = parse_sweep(base).fingerprint()
    assert parse_sweep(base, overrides={"trials": 99}).fingerprint() == first
    assert parse_sweep(base, overrides={"max_new_tokens": 32}).fingerprint() != first
    assert parse_sweep(sweep_of({"window": {"low": 0, "high": 5}})).fingerprint() != first


def test_a_new_strategy_is_swept_with_its_own_params():
    with temporary_registrations():
        @register("pool", "test_newest_first")
        class NewestFirst(KeyedPool):
            class Params(PoolPolicy.Params):
                name: Literal["test_newest_first"] = "test_newest_first"
                depth: int = Field(2, ge=1, le=3)

        sweep = parse_sweep(sweep_of({"pool": {"choices": "all", "params": {"capacity": [None, 4]},
                                               "per_policy": {"test_newest_first": {"depth": {"low": 1, "high": 3}}}}}))
        dims = sweep.space.roles["pool"]["test_newest_first"]
        assert dims == {"capacity": CategoricalDistribution([None, 4]), "depth": IntDistribution(1, 3)}
        with pytest.raises(SpaceError, match=r"space.pool.per_policy.test_newest_first.depth.low: Input should be"):
            parse_sweep(sweep_of({"pool": {"name": "test_newest_first", "depth": {"low": 0, "high": 2}}}))
    with pytest.raises(SpaceError, match="unknown pool 'test_newest_first'"):  # gone after the block
        parse_sweep(sweep_of({"pool": "test_newest_first"}))


def test_yaml_file_errors_name_the_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "bad name", "space": {"window": 1}}))
    with pytest.raises(SpaceError, match=r"s.yaml: name: String should match pattern"):
        load_sweep(path)
    with pytest.raises(SpaceError, match="No such file"):
        load_sweep(tmp_path / "missing.yaml")


@pytest.mark.parametrize("compile", [False, True])
def test_the_printed_use_it_commands_carry_the_compiled_step_the_sweep_measured(compile):
    import shlex

    from experiments.sweep_report import use_commands

    spec = parse_sweep({"name": "s", "compile": compile, "space": {"window": [0, 2]}}, source="s.yaml")
    commands = use_commands(Path("best.yaml"), [], None, spec.spec)
    assert len(commands) == 2
    assert all(("--compile" in shlex.split(c)) == compile for c in commands)
