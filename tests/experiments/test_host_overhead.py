"""``python -m experiments.host_overhead``: the per-prompt host figures; with ``--stages``, each
stage of the step timed outside the model; with ``--replay``, the decodes again on the model's
recorded outputs."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import LlamaForCausalLM

from experiments import host_overhead
from experiments.cli import CliError
from framework import LookaheadConfig, LookaheadEngine, layout


def test_prints_the_host_figures_and_the_stages(tiny_dir, capsys):
    status = host_overhead.main(["--model", tiny_dir, "--dataset", "gsm8k", "--limit", "2", "--max-new-tokens", "6",
                                 "--window", "2", "--ngram", "3", "--guess-set", "2", "--threads", "1", "--stages"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert re.search(r"2 prompts, \d+ steps: host ms/step median [\d.]+, mean [\d.]+ \(hooks\); the engine's own: "
                     r"median [\d.]+, mean [\d.]+; model ms/step [\d.]+ \(its own timing\)", out)
    stages = dict(re.findall(r"(\w+) (-?[\d.]+)", out.split("stages, ms/step outside the model (all steps): ")[1]
                             .split("\n")[0]))
    steps = int(re.search(r"prompts, (\d+) steps", out).group(1))
    built = re.search(r"step layouts built \(a tree shape not cached yet\): (\d+) of (\d+) steps", out)
    assert built and 0 < int(built.group(1)) <= int(built.group(2)) == steps
    assert list(stages) == ["plan", "forward", "verify", "update_window", "commit", "between"]
    assert all(float(v) > 0 for k, v in stages.items() if k != "between")  # every stage ran, timed
    groups = re.findall(r"(\d+): ([\d.]+) \((\d+)\)", out.split("host ms/step by draft tokens accepted (median, steps): ")[1])
    assert groups and sum(int(n) for _, _, n in groups) == steps  # every timed step, in one group each
    assert all(0 <= int(a) <= 2 for a, _, _ in groups)  # at most N-1 = 2 draft tokens accepted


def test_prints_the_replayed_host_figure(tiny_dir, capsys):
    status = host_overhead.main(["--model", tiny_dir, "--dataset", "gsm8k", "--limit", "1", "--max-new-tokens", "6",
                                 "--window", "2", "--ngram", "3", "--guess-set", "2", "--threads", "1", "--replay", "2"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert re.search(r"replayed \(the model's outputs served from memory, 2 rounds\): host ms/step "
                     r"median [\d.]+, min [\d.]+, max [\d.]+", out)


@pytest.mark.parametrize("lazy", [True, False])  # body + head on demand, or the whole model's kept logits
def test_a_replay_commits_the_live_tokens_without_running_the_model(tiny_dir, lazy):
    model = LlamaForCausalLM.from_pretrained(tiny_dir).eval()
    engine = LookaheadEngine(model, LookaheadConfig(window=3, ngram=3, guess_set=3, lazy_logits=lazy))
    prompts = [torch.tensor([[1, 40, 41, 42, 40, 41]]), torch.tensor([[1, 50, 60, 50, 60, 50, 60]])]
    free_rows = engine.split[1].free_rows
    replay = host_overhead.Replay(engine)
    assert engine.split[1].free_rows == free_rows > 1  # the served head fills its calls as the live one does
    live = [engine.generate(ids, max_new_tokens=12).sequences for ids in prompts]
    recorded = len(replay.outputs)
    calls = []
    hook = model.model.register_forward_pre_hook(lambda *_: calls.append(1))
    figures = host_overhead.replayed_host(engine, prompts, live, 12, 2, replay)
    hook.remove()
    assert calls == [] and len(figures) == 2 and all(f > 0 for f in figures)
    assert len(replay.outputs) == recorded  # replaying records nothing new
    replay.play()  # and can start again
    assert [torch.equal(engine.generate(ids, max_new_tokens=12).sequences, tokens)
            for ids, tokens in zip(prompts, live)] == [True, True]


def test_every_replayed_pass_builds_the_layouts_its_live_decode_built(tiny_dir):
    """The engine caches a step layout per tree shape: a pass that found the last pass's layouts
    cached would time less work than the live decode did."""
    model = LlamaForCausalLM.from_pretrained(tiny_dir).eval()
    engine = LookaheadEngine(model, LookaheadConfig(window=3, ngram=3, guess_set=3))
    prompt = torch.tensor([[1, 40, 41, 42, 40, 41, 42, 40]])
    replay = host_overhead.Replay(engine)
    host_overhead.forget_layouts()
    live = [engine.generate(prompt, max_new_tokens=12).sequences]
    hits, misses = layout.step_layout.cache_info()[:2]
    assert misses > 0
    host_overhead.replayed_host(engine, [prompt], live, 12, 2, replay)
    assert layout.step_layout.cache_info()[:2] == (hits, misses)  # the last pass alone, as the live one


def test_a_replay_that_does_not_match_the_live_decode_stops(tiny_dir):
    model = LlamaForCausalLM.from_pretrained(tiny_dir).eval()
    engine = LookaheadEngine(model, LookaheadConfig(window=3, ngram=3, guess_set=3))
    prompt = torch.tensor([[1, 40, 41, 42, 40, 41]])
    replay = host_overhead.Replay(engine)
    live = [engine.generate(prompt, max_new_tokens=12).sequences]
    other = live[0].clone()
    other[0, -1] += 1  # the live decode's last token, as if it had been another
    with pytest.raises(host_overhead.ReplayError, match="other tokens"):
        host_overhead.replayed_host(engine, [prompt], [other], 12, 1, replay)
    assert host_overhead.replayed_host(engine, [prompt], live, 12, 1, replay)  # the true tokens pass
    del replay.outputs[len(replay.outputs) // 2:]  # fewer outputs than the decode asks for
    with pytest.raises(host_overhead.ReplayError, match="more outputs"):
        host_overhead.replayed_host(engine, [prompt], live, 12, 1, replay)


def test_an_engine_without_the_callables_to_replay_is_refused():
    class Older:  # an engine from before StepShapes: no `step`
        split, _prefill_tokens = None, None

    with pytest.raises(CliError, match="--replay: this engine has no step"):
        host_overhead.Replay(Older())
