import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from framework import LookaheadConfig


def test_defaults_construct():
    config = LookaheadConfig()
    assert config.scheduler.name == "adaptive" and config.pool.name == "lru" and config.verifier.name == "greedy"


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


# --------------------------------------------------------------------------------------------
# The input contract: integral sizes of any kind, a bounded step, clear messages, never a crash


def test_integral_sizes_of_any_kind_are_accepted():
    import numpy as np
    import torch

    config = LookaheadConfig(window=np.int64(3), ngram=torch.tensor(4), guess_set=2.0)
    assert (config.window, config.ngram, config.guess_set) == (3, 4, 2)
    assert all(type(v) is int for v in (config.window, config.ngram, config.guess_set))


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 2.5, True, "3", None, [3], "inf"])
def test_a_non_integral_size_names_the_field(value):
    with pytest.raises(ValueError, match=r"window must be an integer, got"):
        LookaheadConfig(window=value)


def test_a_step_too_large_is_refused_with_the_number_it_would_feed():
    with pytest.raises(ValueError, match=r"window=10000, ngram=4, guess_set=2 would feed up to 30015 tokens per step"):
        LookaheadConfig(window=10000)
    paper = {"sources": ["ngram"]}  # the pool alone, as the paper (the defaults add an 8-token suffix copy)
    assert LookaheadConfig(window=15, ngram=5, guess_set=15, **paper).step_tokens() == 121  # the paper's setting fits
    assert LookaheadConfig(window=15, ngram=5, guess_set=15).step_tokens() == 129
    assert LookaheadConfig(window=64, ngram=11, guess_set=64, **paper).step_tokens() == 1281
    assert LookaheadConfig(window=1000, guess_set=0, ngram=3, max_step_tokens=5000).window == 1000  # raised knowingly


@pytest.mark.parametrize("fields, match", [
    ({"pool": {"name": ["lru"]}}, "the pool name must be a string"),
    ({"pool": {"name": None}}, "the pool name must be a string"),
    ({"pool": 3}, "the pool block needs a 'name' key"),
    ({"window_seed": 2**70}, "window_seed"),
    ({"window_seed": -1}, "window_seed"),
])
def test_junk_in_a_field_is_a_validation_error(fields, match):
    with pytest.raises(ValueError, match=match):
        LookaheadConfig(**fields)


def test_a_block_without_a_name_tunes_the_default_strategy():
    assert LookaheadConfig(pool={"capacity": 8}).pool == LookaheadConfig(pool={"name": "lru", "capacity": 8}).pool


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
FIELDS = ["window", "ngram", "guess_set", "pool", "scheduler", "verifier", "realign", "harvest_output",
          "window_seed", "lazy_logits", "max_step_tokens", "bogus"]


@given(st.dictionaries(st.sampled_from(FIELDS), JUNK | st.integers(0, 20), max_size=5))
def test_any_mapping_gives_a_config_or_a_validation_error(fields):
    """Wrong types, non-finite numbers, nested junk, unknown keys: a ValidationError, nothing else."""
    try:
        config = LookaheadConfig.model_validate(fields)
    except ValidationError as error:
        assert error.errors()  # and it has something to say
    else:
        assert config.step_tokens() <= config.max_step_tokens
