"""The strategy registry: ``register``, ``lookup`` and scoped registration."""

from __future__ import annotations

from typing import Literal, Sequence

import pytest

from framework import LookaheadConfig
from strategies import StrategyParams, lookup, register, registered, temporary_registrations
from strategies.base import ROLES, StepRecord, WindowScheduler

BUILT_IN = {"scheduler": {"static"}, "pool": {"fifo", "lfu", "lru", "unbounded"}, "verifier": {"greedy", "sampling"}}


def scheduler_class(name: str) -> type:
    """A fresh scheduler class whose Params name is ``Literal[name]`` (not registered yet)."""
    params = type("Params", (StrategyParams,), {"__annotations__": {"name": Literal[name]}, "name": name})

    def width(self, history: Sequence[StepRecord]) -> int:
        return 2

    return type(f"Scheduler_{name}", (WindowScheduler,), {"Params": params, "width": width})


def snapshot() -> dict[str, dict[str, type]]:
    return {role: registered(role) for role in ROLES}


def test_built_ins_are_registered():
    for role, names in BUILT_IN.items():
        assert names <= set(registered(role)), role


def test_only_the_strategies_package_registers_outside_a_scope():
    """Run after other tests, this catches a test that registered without ``temporary_registrations``."""
    for role in ROLES:
        for name, cls in registered(role).items():
            assert cls.__module__.startswith("strategies."), f"{role} {name!r} leaked from {cls.__module__}"


def test_registration_is_visible_inside_and_gone_after():
    before = snapshot()
    with temporary_registrations():
        cls = register("scheduler", "tmp_two")(scheduler_class("tmp_two"))
        assert lookup("scheduler", "tmp_two") is cls
        assert LookaheadConfig(scheduler="tmp_two").scheduler.name == "tmp_two"
    assert "tmp_two" not in registered("scheduler")
    assert snapshot() == before
    with pytest.raises(ValueError, match="unknown scheduler 'tmp_two'"):
        LookaheadConfig(scheduler="tmp_two")


def test_registration_is_gone_even_when_the_body_raises():
    before = snapshot()
    with pytest.raises(RuntimeError, match="boom"):
        with temporary_registrations():
            register("scheduler", "tmp_raise")(scheduler_class("tmp_raise"))
            raise RuntimeError("boom")
    assert "tmp_raise" not in registered("scheduler")
    assert snapshot() == before


def test_a_name_clash_inside_still_errors():
    with temporary_registrations():
        with pytest.raises(ValueError, match="already registered"):
            register("scheduler", "static")(scheduler_class("static"))
        register("scheduler", "tmp_clash")(scheduler_class("tmp_clash"))
        with pytest.raises(ValueError, match="already registered"):
            register("scheduler", "tmp_clash")(scheduler_class("tmp_clash"))
    assert lookup("scheduler", "static").__module__ == "strategies.scheduler_static"


def test_nested_blocks_restore_each_level_and_built_ins_survive():
    before = snapshot()
    with temporary_registrations():
        register("scheduler", "tmp_outer")(scheduler_class("tmp_outer"))
        with temporary_registrations():
            register("scheduler", "tmp_inner")(scheduler_class("tmp_inner"))
            assert {"tmp_outer", "tmp_inner"} <= set(registered("scheduler"))
        assert "tmp_inner" not in registered("scheduler")
        assert "tmp_outer" in registered("scheduler")
    assert snapshot() == before
    for role, names in BUILT_IN.items():
        assert names <= set(registered(role)), role


def test_register_checks_role_and_params():
    with temporary_registrations():
        with pytest.raises(ValueError, match="role must be one of"):
            register("sampler", "x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"Literal\['other'\]"):
            register("scheduler", "other")(scheduler_class("mismatch"))
        with pytest.raises(TypeError, match="nested `Params"):
            register("scheduler", "bare")(type("Bare", (), {}))
    assert not {"other", "bare", "mismatch"} & set(registered("scheduler"))
