import pytest

from framework import LookaheadConfig


def test_defaults_construct():
    config = LookaheadConfig()
    assert config.scheduler.name == "static" and config.pool.name == "lru" and config.verifier.name == "greedy"


def test_dump_keeps_each_strategy_params_and_round_trips():
    config = LookaheadConfig(window=3, pool={"name": "lfu", "capacity": 3, "seed_from_prompt": False})
    dumped = config.model_dump()
    assert dumped["pool"] == {"name": "lfu", "capacity": 3, "seed_from_prompt": False, "persist": False}
    assert LookaheadConfig.model_validate(dumped) == config
    assert LookaheadConfig.model_validate_json(config.model_dump_json()) == config


def test_unknown_strategy_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered pools: fifo, lfu, lru"):
        LookaheadConfig(pool={"name": "mru"})


def test_strategy_params_are_strict():
    with pytest.raises(ValueError, match="capacity"):
        LookaheadConfig(pool={"name": "lru", "capacity": 0})
    with pytest.raises(ValueError, match="colour"):
        LookaheadConfig(pool={"name": "lru", "colour": "red"})
