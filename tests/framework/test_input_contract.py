"""The engine's input contract: what generate() and the constructor accept, and the message for
everything else (never a wrong answer, a hang or a raw traceback from deep inside)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from framework import LookaheadConfig, LookaheadEngine
from tests.tiny_models import VOCAB, greedy_reference, tiny_model

PROMPT = torch.tensor([[5, 6, 7, 8, 5, 6]])


@pytest.fixture(scope="module")
def engine():
    return LookaheadEngine(tiny_model("llama"), LookaheadConfig(window=2, ngram=3, guess_set=2))


@pytest.mark.parametrize("ids", [torch.tensor([[1.7, 52.9, 3.2]]), torch.tensor([[True, False, True]]),
                                 torch.tensor([[1.0, 2.0]], dtype=torch.float64)])
def test_float_and_bool_prompts_are_refused(engine, ids):
    with pytest.raises(ValueError, match=r"input_ids must hold integer token ids \(torch.long\), got dtype"):
        engine.generate(ids, max_new_tokens=2)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int16, torch.uint8])
def test_every_integer_dtype_decodes_like_long(engine, dtype):
    out = engine.generate(PROMPT.to(dtype), max_new_tokens=4)
    assert out.sequences.dtype == dtype
    assert torch.equal(out.sequences.long(), greedy_reference(engine.model, PROMPT, 4))


def test_a_config_of_the_wrong_type_is_refused_by_name():
    with pytest.raises(TypeError, match="config must be a LookaheadConfig or a dict of its fields, got str"):
        LookaheadEngine(tiny_model("llama"), "w=4")


@pytest.mark.parametrize("eos", [3, np.int64(3), [3, 4], (3,), torch.tensor(3), torch.tensor([3, 4])])
def test_eos_as_int_list_or_tensor(engine, eos):
    out = engine.generate(PROMPT, max_new_tokens=6, eos_token_id=eos)
    assert out.sequences.shape[1] <= PROMPT.shape[1] + 6


@pytest.mark.parametrize("eos, match", [
    (2.0, "eos_token_id must be a token id"),
    ("<|im_end|>", r"resolve it with the tokenizer: tokenizer.convert_tokens_to_ids"),
    ([3, -1], "eos_token_id must be a token id"),
    (torch.tensor([2.0]), "eos_token_id must be a token id"),
    (True, "eos_token_id must be a token id"),
])
def test_bad_eos_is_refused_with_a_message(engine, eos, match):
    with pytest.raises(ValueError, match=match):
        engine.generate(PROMPT, max_new_tokens=2, eos_token_id=eos)


@pytest.mark.parametrize("generator", [0, "seed", np.random.default_rng(0)])
def test_a_generator_that_is_not_a_torch_generator_is_refused(engine, generator):
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        engine.generate(PROMPT, max_new_tokens=2, do_sample=True, generator=generator)


DTYPES = [torch.int64, torch.int32, torch.uint8, torch.bool, torch.float32, torch.float16]


@given(shape=st.lists(st.integers(0, 3), min_size=0, max_size=3), dtype=st.sampled_from(DTYPES),
       high=st.sampled_from([VOCAB, VOCAB + 5]), max_new_tokens=st.integers(-1, 3))
def test_any_input_ids_decode_or_raise_value_error(engine, shape, dtype, high, max_new_tokens):
    """Shapes and dtypes of every kind: a valid prompt decodes exactly, anything else is a ValueError."""
    ids = (torch.arange(int(np.prod(shape)) if shape else 1) % high).reshape(shape).to(dtype)
    try:
        out = engine.generate(ids, max_new_tokens=max_new_tokens)
    except ValueError as error:
        assert str(error)
        return
    assert ids.dim() == 2 and ids.shape[0] == 1 and not ids.is_floating_point() and ids.dtype != torch.bool
    assert torch.equal(out.sequences.long(), greedy_reference(engine.model, ids.long(), max_new_tokens))
