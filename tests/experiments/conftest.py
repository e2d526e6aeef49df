"""Fixtures shared by the command tests: a tiny saved model with a character-level chat
tokenizer, and a strategy written in a file outside the repo."""

from __future__ import annotations

import textwrap

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from strategies import temporary_registrations

SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1 (bos), 2 (eos), as in SmolLM2
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]  # printable ASCII: ids 3..98
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character (no merges), ChatML-like specials and chat template."""
    tokenizers = pytest.importorskip("tokenizers", reason="the tiny test tokenizer is built with `tokenizers`")
    vocab = {token: i for i, token in enumerate(SPECIALS + CHARS)}
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.add_special_tokens(SPECIALS)
    backend.decoder = tokenizers.decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A fixed-seed float32 Llama (vocab 128, hidden 32, 2 layers) and its tokenizer, saved."""
    path = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=8192, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)

USER_POOL = textwrap.dedent('''
    """A user's pool policy, outside the repo: offers the newest n-grams first."""
    from typing import Literal

    from pydantic import Field

    from strategies.base import PoolPolicy, register
    from strategies.keyed_pool import KeyedPool


    @register("pool", "newest_first")
    class NewestFirst(KeyedPool):
        class Params(PoolPolicy.Params):
            name: Literal["newest_first"] = "newest_first"
            depth: int = Field(2, ge=1, le=3, description="a parameter of its own")
''')


@pytest.fixture
def user_pool_file(tmp_path):
    """``my_pools.py`` in a folder outside the repo; what it registers is gone after the test."""
    path = tmp_path / "outside" / "my_pools.py"
    path.parent.mkdir()
    path.write_text(USER_POOL)
    with temporary_registrations():
        yield path
