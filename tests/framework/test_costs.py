"""The device cost model: lookup, persistence, calibration (with an injected clock), and the
engine's calibrate-once-then-cache behaviour."""

from __future__ import annotations

import json

import pytest
import torch

from framework import LookaheadConfig, LookaheadEngine
from framework.costs import CostModel, cache_file, calibrate, calibration_sizes
from tests.tiny_models import tiny_model


def test_cost_is_the_next_measured_size_up_and_linear_past_the_largest():
    costs = CostModel({1: 1.0, 8: 1.5, 32: 2.3})
    assert costs(1) == 1.0
    assert costs(2) == costs(8) == 1.5  # padding never makes a step cheaper
    assert costs(32) == 2.3
    assert costs(64) == pytest.approx(4.6)
    assert CostModel({1: 1.0})(500) == 500  # one point: linear from it
    assert CostModel.flat()(500) == 1.0


def test_a_cost_model_needs_the_one_token_cost():
    with pytest.raises(ValueError, match="1-token forward"):
        CostModel({8: 1.5})


def test_save_and_load_round_trip(tmp_path):
    costs = CostModel({1: 1.0, 4: 1.25}, {"model": "m"}, 0.05)
    costs.save(tmp_path / "c" / "costs.json")
    loaded = CostModel.load(tmp_path / "c" / "costs.json")
    assert loaded.points == {1: 1.0, 4: 1.25} and loaded.key == {"model": "m"} and loaded.seconds_per_forward == 0.05
    assert json.loads((tmp_path / "c" / "costs.json").read_text())["points"] == {"1": 1.0, "4": 1.25}


def test_calibration_sizes():
    assert calibration_sizes(1) == [1, 2]
    assert calibration_sizes(15) == [1, 2, 8, 15]
    assert calibration_sizes(121) == [1, 2, 8, 32, 121]
    assert calibration_sizes(121, (1, 128)) == [1, 128]


class FakeDevice:
    """forward(k) advances a fake clock by the cost table's time for k."""

    def __init__(self, seconds: dict[int, float]) -> None:
        self.seconds, self.now, self.calls = seconds, 0.0, []

    def forward(self, size: int) -> None:
        self.calls.append(size)
        self.now += self.seconds[size]

    def clock(self) -> float:
        return self.now


def test_calibrate_is_relative_to_one_token_and_monotone():
    device = FakeDevice({1: 0.05, 2: 0.08, 8: 0.07, 32: 0.12})  # 8 cheaper than 2: a kernel quirk
    points, one = calibrate(device.forward, [1, 2, 8, 32], repeats=3, clock=device.clock)
    assert one == pytest.approx(0.05)
    assert points == pytest.approx({1: 1.0, 2: 1.6, 8: 1.6, 32: 2.4})  # 8 raised to 2's cost
    assert device.calls == [1, 2, 8, 32] * 4  # one unrecorded round, then 3 timed rounds


def test_the_engine_calibrates_once_and_reuses_the_cached_curve(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKAHEAD_CACHE", str(tmp_path))
    monkeypatch.delenv("LOOKAHEAD_COST_MODEL")
    model = tiny_model("llama")
    config = LookaheadConfig(scheduler="adaptive")
    first = LookaheadEngine(model, config)
    first.generate(torch.tensor([[3, 4, 5, 3, 4]]), max_new_tokens=4)
    files = list((tmp_path / "costs").glob("*.json"))
    assert len(files) == 1 and files[0] == cache_file(first.costs.key)
    assert sorted(first.costs.points) == calibration_sizes(first.step.largest)
    files[0].write_text(json.dumps({"points": {"1": 1.0, "2": 9.0}}))  # a hand-made curve: read, not re-measured
    second = LookaheadEngine(model, config)
    second.generate(torch.tensor([[3, 4, 5, 3, 4]]), max_new_tokens=4)
    assert second.costs.points == {1: 1.0, 2: 9.0}


def test_the_environment_names_a_cost_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKAHEAD_CACHE", str(tmp_path))
    CostModel({1: 1.0, 2: 3.0}).save(tmp_path / "mine.json")
    monkeypatch.setenv("LOOKAHEAD_COST_MODEL", str(tmp_path / "mine.json"))
    engine = LookaheadEngine(tiny_model("llama"), LookaheadConfig())
    engine.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=2)
    assert engine.costs.points == {1: 1.0, 2: 3.0}
    monkeypatch.setenv("LOOKAHEAD_COST_MODEL", "flat")
    flat = LookaheadEngine(tiny_model("llama"))
    flat.generate(torch.tensor([[3, 4]]), max_new_tokens=1)
    assert flat.costs.points == CostModel.flat().points and not (tmp_path / "costs").exists()


def test_a_given_cost_model_is_used_as_is(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKAHEAD_CACHE", str(tmp_path))
    engine = LookaheadEngine(tiny_model("llama"), LookaheadConfig(scheduler="adaptive"), cost_model=CostModel.flat())
    engine.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=3)
    assert engine.costs.points == CostModel.flat().points and not (tmp_path / "costs").exists()
