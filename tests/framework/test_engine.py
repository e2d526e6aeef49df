"""Engine behaviour around the core loop: stopping, streaming, errors, strategies, HF path."""

from __future__ import annotations

from typing import Literal, Sequence

import pytest
import torch

from framework import LookaheadConfig, LookaheadEngine, lookahead_generate
from strategies.base import StepRecord, StrategyParams, WindowScheduler, register, temporary_registrations
from tests.tiny_models import assert_same_or_near_tie, greedy_reference, tiny_model

LOOPING = torch.tensor([[5, 6, 7, 8, 9] * 4 + [5, 6]])


def llama(attn="sdpa"):
    return tiny_model("llama", attn)


def run(config=None, prompt=LOOPING, max_new_tokens=40, model=None, **kwargs):
    model = model or llama()
    return LookaheadEngine(model, config or LookaheadConfig(window=4, ngram=4, guess_set=4)).generate(
        prompt, max_new_tokens=max_new_tokens, **kwargs
    )


def test_multi_token_steps_happen_and_output_is_exact():
    model = llama()
    out = run(model=model)
    assert torch.equal(out.sequences, greedy_reference(model, LOOPING, 40))
    assert max(out.stats.emitted_per_step) == 4  # a full draft match plus its bonus token
    assert out.stats.steps < out.stats.new_tokens
    assert {"lookahead"} <= set(out.stats.sources)


@pytest.mark.parametrize("max_new_tokens", [1, 2, 7, 9, 10, 11, 12, 13])
def test_max_new_tokens_inside_an_accepted_run_never_overshoots(max_new_tokens):
    model = llama()
    out = run(model=model, max_new_tokens=max_new_tokens)
    assert out.stats.new_tokens == max_new_tokens
    assert torch.equal(out.sequences, greedy_reference(model, LOOPING, max_new_tokens))
    assert out.stats.stop_reason == "length"


def test_max_new_tokens_zero_returns_the_prompt():
    out = run(max_new_tokens=0)
    assert torch.equal(out.sequences, LOOPING)
    assert out.stats.steps == 0


def test_eos_inside_an_accepted_run_drops_what_follows():
    """Pick as EOS a token that greedy produces inside a multi-token step; HF stops there too."""
    model = llama()
    full = run(model=model)
    new = full.sequences[0, LOOPING.shape[1]:].tolist()
    # find a step that emitted >= 3 tokens and take its second token as EOS
    position = 0
    for emitted in full.stats.emitted_per_step:
        if emitted >= 3:
            eos = new[position + 1]
            break
        position += emitted
    else:
        pytest.fail("no multi-token step to place EOS in")
    first = new.index(eos)
    out = run(model=model, eos_token_id=eos)
    assert out.sequences[0, LOOPING.shape[1]:].tolist() == new[: first + 1]
    assert out.stats.stop_reason == "eos"
    reference = greedy_reference(model, LOOPING, 40, eos_token_id=eos)
    assert torch.equal(out.sequences, reference)


def test_eos_list_and_generation_config_default():
    model = tiny_model("llama", seed=0)
    new = run(model=model).sequences[0, LOOPING.shape[1]:].tolist()
    target = new[5]
    other = next(t for t in range(1, 96) if t not in new)  # never produced: only `target` can stop
    out = run(model=model, eos_token_id=[other, target])
    assert out.sequences[0, LOOPING.shape[1]:].tolist() == new[: new.index(target) + 1]
    model.generation_config.eos_token_id = target
    try:
        default = run(model=model)
        assert default.sequences[0, LOOPING.shape[1]:].tolist() == new[: new.index(target) + 1]
        assert default.stats.stop_reason == "eos"
    finally:
        model.generation_config.eos_token_id = None


class RecordingStreamer:
    def __init__(self):
        self.calls: list[list[int]] = []
        self.ended = False

    def put(self, value):
        self.calls.append(value.flatten().tolist())

    def end(self):
        self.ended = True


def test_streamer_gets_prompt_first_then_every_token_in_order():
    streamer = RecordingStreamer()
    out = run(streamer=streamer)
    assert streamer.calls[0] == LOOPING[0].tolist()
    streamed = [t for call in streamer.calls[1:] for t in call]
    assert streamed == out.sequences[0, LOOPING.shape[1]:].tolist()
    assert any(len(call) > 1 for call in streamer.calls[1:]), "several tokens per step expected"
    assert [len(c) for c in streamer.calls[1:]] == out.stats.emitted_per_step
    assert streamer.ended


def test_text_streamer_protocol_with_skip_prompt(capsys):
    from transformers import TextStreamer

    class Tok:
        def decode(self, ids, **kwargs):
            return "".join(f"<{i}>" for i in ([ids] if isinstance(ids, int) else ids))

    out = run(streamer=TextStreamer(Tok(), skip_prompt=True), max_new_tokens=12)
    printed = capsys.readouterr().out
    assert printed.strip() == "".join(f"<{i}>" for i in out.sequences[0, LOOPING.shape[1]:].tolist())


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "fields, name",
    [({"window": -1}, "window"), ({"ngram": 1}, "ngram"), ({"guess_set": -2}, "guess_set"),
     ({"window": 2.5}, "window"), ({"pool": {"name": "nope"}}, "pool"), ({"windw": 3}, "windw")],
)
def test_bad_config_names_the_field(fields, name):
    with pytest.raises(ValueError, match=name):
        LookaheadConfig(**fields)


@pytest.mark.parametrize(
    "prompt, max_new_tokens, match",
    [
        (torch.zeros(1, 0, dtype=torch.long), 5, "empty"),
        (torch.tensor([[1, 2], [3, 4]]), 5, "batch size"),
        (torch.tensor([1, 2, 3]), 5, "2-D"),
        (torch.tensor([[1, 2, 3]]), -1, "max_new_tokens"),
        (torch.tensor([[1, 2, 3]]), 300, "max_new_tokens"),
        (torch.tensor([[1, 2, 500]]), 5, "vocabulary"),
    ],
)
def test_bad_generate_input_names_the_parameter(prompt, max_new_tokens, match):
    with pytest.raises(ValueError, match=match):
        run(prompt=prompt, max_new_tokens=max_new_tokens)


def test_encoder_decoder_is_refused():
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8))
    with pytest.raises(ValueError, match="encoder-decoder"):
        LookaheadEngine(model, LookaheadConfig())


def test_custom_generate_refuses_a_processor_it_cannot_honour():
    from transformers import LogitsProcessorList, NoBadWordsLogitsProcessor

    class Custom(NoBadWordsLogitsProcessor):
        pass

    model = llama()
    with pytest.raises(NotImplementedError, match="Custom"):
        model.generate(
            LOOPING, custom_generate=lookahead_generate, do_sample=False, max_new_tokens=5,
            logits_processor=LogitsProcessorList([Custom([[3]], eos_token_id=None)]),
        )


@pytest.mark.parametrize("window, guess_set", [(0, 0), (0, 4), (4, 0)])
def test_ablations_are_legitimate(window, guess_set):
    model = llama()
    out = run(LookaheadConfig(window=window, ngram=4, guess_set=guess_set, harvest_output=False, sources=["ngram"]),
              model=model)  # the paper's branches alone: G=0 leaves no draft source
    assert torch.equal(out.sequences, greedy_reference(model, LOOPING, 40))
    if guess_set == 0:
        assert out.stats.steps == out.stats.new_tokens
    assert set(out.stats.widths) == {window}
    if guess_set == 0:
        assert set(out.stats.drafts) == {0}
    else:
        assert max(out.stats.drafts) > 0
    assert max(out.stats.fed_tokens) <= 1 + 4 * 3 * (window > 0) + 4 * 3 * (guess_set > 0)


# ------------------------------------------------------------------ position limit
def test_window_shrinks_near_the_position_limit_of_learned_positions():
    """GPT-2's learned position table would index out of range if any slot passed the limit."""
    model = tiny_model("gpt2")
    limit = model.config.n_positions
    prompt = (torch.arange(limit - 20) % 90 + 1)[None]
    out = LookaheadEngine(model, LookaheadConfig(window=8, ngram=5, guess_set=4)).generate(
        prompt, max_new_tokens=20
    )
    assert out.sequences.shape[1] == limit
    assert_same_or_near_tie(model, greedy_reference(model, prompt, 20), out.sequences)
    assert out.stats.widths[-1] < 8


# ------------------------------------------------------------------ strategies
class AlternatingScheduler(WindowScheduler):
    """Test-only: W changes with the step statistics (wider after a step with no accepted draft)."""

    class Params(StrategyParams):
        name: Literal["test_alternating"] = "test_alternating"

    def width(self, history: Sequence[StepRecord]) -> int:
        if not history:
            return 1
        return 6 if history[-1].accepted == 0 else 2


@pytest.fixture(scope="module")
def alternating_scheduler():
    """``test_alternating`` is registered for this module's tests only."""
    with temporary_registrations():
        yield register("scheduler", "test_alternating")(AlternatingScheduler)


@pytest.mark.usefixtures("alternating_scheduler")
def test_a_scheduler_that_changes_width_mid_generation_stays_exact():
    model = llama()
    config = LookaheadConfig(window=4, ngram=4, guess_set=4, scheduler={"name": "test_alternating"})
    out = run(config, model=model, max_new_tokens=60)
    assert torch.equal(out.sequences, greedy_reference(model, LOOPING, 60))
    assert {1, 2, 6} <= set(out.stats.widths)
    assert out.stats.steps < out.stats.new_tokens


def test_persistent_pool_survives_between_calls_and_default_does_not():
    model = llama()
    fresh = LookaheadEngine(model, LookaheadConfig(window=4, ngram=4, guess_set=4))
    fresh.generate(LOOPING, max_new_tokens=30)
    second = fresh.generate(LOOPING, max_new_tokens=30)
    persistent = LookaheadEngine(
        model, LookaheadConfig(window=4, ngram=4, guess_set=4, pool={"name": "lru", "persist": True})
    )
    persistent.generate(LOOPING, max_new_tokens=30)
    warm = persistent.generate(LOOPING, max_new_tokens=30)
    assert torch.equal(warm.sequences, second.sequences)
    assert warm.stats.steps < second.stats.steps  # the warm pool already knows the loop


def test_window_seed_changes_the_window_not_the_output():
    model = llama()
    outs = [run(LookaheadConfig(window=4, ngram=4, guess_set=4, window_seed=s), model=model) for s in (0, 1)]
    assert torch.equal(outs[0].sequences, outs[1].sequences)


# ------------------------------------------------------------------ generation config processors
def test_repetition_penalty_is_applied_row_by_row_like_hf():
    model = tiny_model("llama", seed=1)
    model.generation_config.repetition_penalty = 1.3
    try:
        reference = greedy_reference(model, LOOPING, 30)
        out = run(model=model, max_new_tokens=30)
        assert torch.equal(out.sequences, reference)
        unpenalised = greedy_reference(model, LOOPING, 30, repetition_penalty=1.0)
        assert not torch.equal(reference, unpenalised), "the penalty must matter in this test"
    finally:
        model.generation_config.repetition_penalty = None


def test_unsupported_generation_setting_is_refused_not_ignored():
    model = tiny_model("llama", seed=2)
    model.generation_config.forced_eos_token_id = 3
    try:
        with pytest.raises(NotImplementedError, match="forced_eos_token_id"):
            run(model=model)
    finally:
        model.generation_config.forced_eos_token_id = None


# ------------------------------------------------------------------ inside HF generate
def test_custom_generate_path_matches_plain_greedy():
    model = llama()
    ours = model.generate(
        LOOPING, custom_generate=lookahead_generate, window=4, ngram=4, guess_set=4,
        do_sample=False, max_new_tokens=33,
    )
    assert torch.equal(ours, greedy_reference(model, LOOPING, 33))


def test_custom_generate_takes_a_pool_block():
    model = llama()
    ours = model.generate(
        LOOPING, custom_generate=lookahead_generate, pool={"name": "lfu", "capacity": 8},
        do_sample=False, max_new_tokens=20,
    )
    assert torch.equal(ours, greedy_reference(model, LOOPING, 20))


# ------------------------------------------------------------------ logits on demand
@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_lazy_logits_give_the_same_steps_and_project_fewer_rows(arch):
    model = tiny_model(arch)
    head = model.get_output_embeddings()
    projected = []
    hook = head.register_forward_hook(lambda module, args, out: projected.append(args[0].shape[-2]))
    try:
        results = {}
        for lazy in (True, False):
            projected.clear()
            config = LookaheadConfig(window=4, ngram=4, guess_set=4, lazy_logits=lazy)
            results[lazy] = (run(config, model=model, max_new_tokens=40), sum(projected))
    finally:
        hook.remove()
    (lazy_out, lazy_rows), (eager_out, eager_rows) = results[True], results[False]
    assert torch.equal(lazy_out.sequences, eager_out.sequences)
    assert lazy_out.stats.emitted_per_step == eager_out.stats.emitted_per_step
    assert lazy_out.stats.sources == eager_out.stats.sources
    assert lazy_rows < eager_rows


@pytest.mark.parametrize("window", [0, 4])
def test_one_pass_reads_every_row_in_one_projection_per_step(window):
    """The accelerator path (``one_pass``, forced here on CPU): one head call per greedy step (so
    one device-to-host transfer of argmaxes), the same tokens and steps as rows read on demand."""
    model = llama()
    config = LookaheadConfig(window=window, ngram=4, guess_set=4)
    reference = LookaheadEngine(model, config).generate(LOOPING, max_new_tokens=40)
    engine = LookaheadEngine(model, config)
    engine.one_pass = True
    body, head = engine.split
    calls = []
    engine.split = (body, lambda rows: calls.append(rows.shape[0]) or head(rows))
    out = engine.generate(LOOPING, max_new_tokens=40)
    assert torch.equal(out.sequences, reference.sequences)
    assert out.stats.emitted_per_step == reference.stats.emitted_per_step
    assert len(calls) == out.stats.steps and max(calls) > 1


def test_models_with_scaled_logits_do_not_split_the_head():
    from framework.head import split_head

    model = tiny_model("gemma3")
    assert split_head(model) is not None
    model.config.final_logit_softcapping = 30.0
    try:
        assert split_head(model) is None
    finally:
        model.config.final_logit_softcapping = None
