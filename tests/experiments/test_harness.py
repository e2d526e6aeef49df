"""experiments.harness on tiny random models: forward counting, the identical flag, summaries."""

from __future__ import annotations

import pytest
import torch

from experiments.harness import (
    BASELINE, OVERALL, ForwardCounter, GreedyMethod, LookaheadMethod, MemoryMeter, PromptInput, PromptLookupMethod,
    Record, compare, config_label, measure, run_interleaved, run_prompt, summarize,
)
from framework import LookaheadConfig
from tests.tiny_models import tiny_model

SMALL = LookaheadConfig(window=3, ngram=3, guess_set=3)


def prompt_ids(length: int = 12, seed: int = 0) -> torch.Tensor:
    """A repetitive prompt (so prompt lookup and the pool find matches), ids off the pad id 0."""
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(3, 96, (length // 2,), generator=g)
    return torch.cat([head, head])[None]  # [1, length]


class FlipMethod:
    """Greedy, then one output token replaced: a deliberately broken method."""

    name = "flip"
    config = {"method": "flip"}

    def __init__(self, index: int) -> None:
        self.index = index

    def run(self, model, input_ids, max_new_tokens):
        sequences, _ = GreedyMethod().run(model, input_ids, max_new_tokens)
        sequences = sequences.clone()
        position = input_ids.shape[1] + self.index
        sequences[0, position] = (sequences[0, position] + 1) % model.config.vocab_size
        return sequences, None


def test_greedy_forwards_are_prefill_plus_one_per_token():
    model, ids = tiny_model("llama"), prompt_ids()
    record = measure(model, GreedyMethod(), ids, 10)
    assert record.new_tokens == 10 and record.stop_reason == "length"
    assert record.forwards == 10  # the prefill (yields token 1) + 9 one-token steps
    assert record.steps == 9 and record.emitted_per_step == [1] * 9
    assert record.tokens_per_step == 1.0 and record.tokens_per_forward == 1.0
    assert record.fed_tokens == ids.shape[1] + 9
    assert record.identical is None  # no baseline given: not assumed


def test_lookahead_hook_counts_agree_with_engine_stats():
    model, ids = tiny_model("llama"), prompt_ids(16)
    method = LookaheadMethod(SMALL)
    with ForwardCounter(model) as counter:
        _, stats = method.run(model, ids, 20)
    assert counter.forwards == stats.steps + 1  # the engine's prefill + its steps
    assert counter.emitted_per_step(ids.shape[1], stats.new_tokens) == stats.emitted_per_step
    record = measure(model, method, ids, 20)
    assert record.steps == stats.steps and record.tokens_per_step == pytest.approx(stats.tokens_per_step)
    assert sum(record.emitted_per_step) == record.new_tokens == 20


def test_prompt_lookup_counts_and_matches_greedy():
    model, ids = tiny_model("llama"), prompt_ids(16)
    greedy = measure(model, GreedyMethod(), ids, 20)
    pld = measure(model, PromptLookupMethod(), ids, 20, baseline_ids=greedy.output_ids)
    assert pld.identical and pld.mismatch_at is None
    assert pld.steps == pld.forwards - 1 == len(pld.emitted_per_step)
    assert sum(pld.emitted_per_step) < pld.new_tokens  # the first forward also committed tokens
    assert pld.kv_peak_tokens >= ids.shape[1] + pld.new_tokens - 1


def test_broken_method_is_flagged_not_identical():
    model, ids = tiny_model("llama"), prompt_ids()
    methods = [GreedyMethod(), FlipMethod(index=4), LookaheadMethod(SMALL)]
    records = run_prompt(model, methods, PromptInput("p0", "cat", ids), 8, repeats=2, rotate=1)
    by_name = {r.method: r for r in records}
    assert by_name[BASELINE].identical is True
    assert by_name["flip"].identical is False and by_name["flip"].mismatch_at == 4
    assert by_name[f"lookahead[{config_label(SMALL)}]"].identical is True
    assert all(len(r.wall_seconds_all) == 2 for r in records)


def test_compare_accepts_new_tokens_or_whole_sequences():
    record = Record("p", "c", "m", 3, 3, 2, 1.0, 1.0, 0.1, None, None, prompt_tokens=2, output_ids=[7, 8, 9])
    compare(record, torch.tensor([[1, 2, 7, 8, 9]]))
    assert record.identical is True
    compare(record, [7, 8])  # the baseline stopped earlier
    assert record.identical is False and record.mismatch_at == 2


def test_eos_handling_is_the_same_for_every_method():
    model, ids = tiny_model("qwen2", seed=1), prompt_ids(12, seed=3)
    free = measure(model, GreedyMethod(), ids, 16)
    eos = free.output_ids[5]
    stop = free.output_ids.index(eos)  # the first occurrence
    model.generation_config.eos_token_id = eos
    try:
        records = run_prompt(model, [GreedyMethod(), PromptLookupMethod(), LookaheadMethod(SMALL)],
                             PromptInput("p", "c", ids), 16)
    finally:
        model.generation_config.eos_token_id = None
    for record in records:
        assert record.new_tokens == stop + 1 and record.output_ids[-1] == eos, record.method
        assert record.stop_reason == "eos" and record.identical


def test_run_interleaved_streams_records_in_prompt_order():
    model = tiny_model("llama")
    prompts = [PromptInput(f"p{i}", "cat", prompt_ids(10, seed=i)) for i in range(2)]
    seen = []
    records = run_interleaved(model, [GreedyMethod(), LookaheadMethod(SMALL)], prompts, 6, on_record=seen.append)
    assert [(r.prompt_id, r.method) for r in seen] == [(r.prompt_id, r.method) for r in records]
    assert [r.prompt_id for r in records] == ["p0", "p0", "p1", "p1"]


def test_memory_meter_measures_cpu_growth():
    with MemoryMeter(torch.device("cpu"), interval=0.001) as meter:
        block = torch.ones(32 * 2**20 // 4)  # 32 MiB, touched
        block += 1
    assert meter.peak_mb is not None and meter.peak_mb > 16
    record = measure(tiny_model("llama"), GreedyMethod(), prompt_ids(), 4, track_memory=False)
    assert record.peak_memory_mb is None


def test_config_label_shows_every_non_default_field():
    config = LookaheadConfig(window=5, ngram=4, guess_set=5, pool={"name": "lfu", "capacity": 8}, realign="shift")
    assert config_label(config) == "W=5 N=4 G=5 pool=lfu(capacity=8) realign=shift"
    assert config_label(LookaheadConfig()) == "W=0 N=4 G=2"
    assert config_label(LookaheadConfig(pool={"name": "lru", "persist": True})) == "W=0 N=4 G=2 pool=lru(persist=True)"


def _record(prompt, category, method, wall, accepted, identical=True):
    new = sum(accepted) + 1
    return Record(prompt, category, method, new, len(accepted) + 1, len(accepted), 0.0, 0.0, wall, None,
                  identical, emitted_per_step=accepted)


def test_summary_speedup_is_the_median_of_paired_ratios():
    records = [
        _record("a", "X", "greedy", 2.0, [1, 1]), _record("a", "X", "m", 1.0, [3]),
        _record("b", "X", "greedy", 3.0, [1, 1]), _record("b", "X", "m", 3.0, [1, 1], identical=False),
        _record("c", "Y", "greedy", 1.0, [1, 1]), _record("c", "Y", "m", 4.0, [1]),
    ]
    rows = {(s.category, s.method): s for s in summarize(records, categories=["Y", "X"])}
    assert [k for k in rows][:2] == [("Y", "greedy"), ("Y", "m")]
    assert rows[("X", "m")].speedup == pytest.approx(1.5)  # median of 2.0 and 1.0
    assert rows[("X", "m")].tokens_per_step == pytest.approx(5 / 3)  # pooled over steps
    assert rows[("X", "m")].identical == 0.5
    assert rows[(OVERALL, "m")].speedup == pytest.approx(1.0)  # median of 2.0, 1.0, 0.25
    assert rows[(OVERALL, "greedy")].speedup == 1.0 and rows[(OVERALL, "m")].prompts == 3
