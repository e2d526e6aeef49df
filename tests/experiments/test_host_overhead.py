"""``python -m experiments.host_overhead``: the per-prompt host figures and, with ``--stages``,
each stage of the step timed outside the model."""

from __future__ import annotations

import re

from experiments import host_overhead


def test_prints_the_host_figures_and_the_stages(tiny_dir, capsys):
    status = host_overhead.main(["--model", tiny_dir, "--dataset", "gsm8k", "--limit", "2", "--max-new-tokens", "6",
                                 "--window", "2", "--ngram", "3", "--guess-set", "2", "--threads", "1", "--stages"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert re.search(r"2 prompts, \d+ steps: host ms/step median [\d.]+, mean [\d.]+ \(hooks\); the engine's own: "
                     r"median [\d.]+, mean [\d.]+; model ms/step [\d.]+ \(its own timing\)", out)
    stages = dict(re.findall(r"(\w+) (-?[\d.]+)", out.split("stages, ms/step outside the model (all steps): ")[1]
                             .split("\n")[0]))
    assert list(stages) == ["plan", "forward", "verify", "update_window", "commit", "between"]
    assert all(float(v) > 0 for k, v in stages.items() if k != "between")  # every stage ran, timed
    groups = re.findall(r"(\d+): ([\d.]+) \((\d+)\)", out.split("host ms/step by draft tokens accepted (median, steps): ")[1])
    steps = int(re.search(r"prompts, (\d+) steps", out).group(1))
    assert groups and sum(int(n) for _, _, n in groups) == steps  # every timed step, in one group each
    assert all(0 <= int(a) <= 2 for a, _, _ in groups)  # at most N-1 = 2 draft tokens accepted
