"""What a sweep leaves behind: the best config as YAML with the commands that use it, a PNG/HTML
report of the study, and (with ``--wandb``) one W&B run per trial plus a summary run.

The best-config file is a plain ``LookaheadConfig`` mapping with comments on top, so
``--config best.yaml`` in every command and ``LookaheadConfig.model_validate(yaml.safe_load(...))``
both read it.
"""

from __future__ import annotations

import html
import json
import shlex
import warnings
from pathlib import Path
from typing import Any, Sequence

from experiments.cli import flatten
from experiments.harness import dump_config
from experiments.sweep_space import OBJECTIVES
from framework.config import LookaheadConfig

BEST_YAML, SUMMARY_JSON, REPORT_HTML = "best.yaml", "summary.json", "report.html"


def use_commands(best: Path, imports: Sequence[str], model: str | None, spec) -> list[str]:
    """Commands that run the best config as saved, on the sweep's model, dtype and threads: one
    answer with a comparison, and the held-out check again (``--import`` for user strategies)."""
    common = [arg for item in imports for arg in ("--import", item)] + ["--config", str(best)]
    common += (["--model", model] if model else []) + (["--dtype", spec.dtype] if spec.dtype != "float32" else [])
    common += ["--threads", str(spec.threads)] if spec.threads else []
    common += ["--compile"] if spec.compile else []
    bench = ["--dataset", spec.dataset, "--limit", str(spec.heldout.limit), "--seed", str(spec.heldout.seed),
             "--max-new-tokens", str(spec.max_new_tokens), "--methods", "greedy,lookahead"]
    generate = ["--prompt", "Write a haiku about the sea.", "--max-new-tokens", str(spec.max_new_tokens), "--compare"]
    return [shlex.join(["python", "-m", "experiments.generate", *generate, *common]),
            shlex.join(["python", "-m", "experiments.bench", *bench, *common])]


def best_yaml(config: LookaheadConfig, comments: Sequence[str]) -> str:
    import yaml

    head = "".join(f"# {line}\n" for line in comments)
    return head + yaml.safe_dump(dump_config(config), sort_keys=False)


def read_config(path: str | Path) -> LookaheadConfig:
    """The config a best-config file holds (its comments are YAML comments)."""
    import yaml

    return LookaheadConfig.model_validate(yaml.safe_load(Path(path).read_text()))


# --------------------------------------------------------------------------------------------
# The study report (PNGs + one HTML page)


def write_report(study, out: Path, objectives: Sequence[str], summary: dict[str, Any]) -> list[str]:
    """history.png, importances.png, slice.png (and pareto.png for two objectives), then
    report.html showing them with the summary and the trial table. Returns the PNG names.
    A plot Optuna cannot draw yet (e.g. importances from one trial) is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    first = OBJECTIVES[objectives[0]]
    multi = len(objectives) > 1
    target = {"target": (lambda t: t.values[0]), "target_name": first.label} if multi else {"target_name": first.label}
    plots = {"history.png": lambda: ovm.plot_optimization_history(study, **target),
             "importances.png": lambda: ovm.plot_param_importances(study, **target),
             "slice.png": lambda: ovm.plot_slice(study, params=_unconditional(study) or None, **target)}
    if multi:
        names = [OBJECTIVES[o].label for o in objectives]
        plots["pareto.png"] = lambda: ovm.plot_pareto_front(study, target_names=names)
    written = []
    for name, draw in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as error:
            summary.setdefault("report_skipped", {})[name] = str(error)
            continue
        figure = _figure(axes)
        figure.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(name)
    (out / REPORT_HTML).write_text(_html(study, summary, written))
    return written


def _unconditional(study) -> list[str]:
    """The params every trial draws (``window``, ``pool``), not one strategy's (``pool.lfu.capacity``)."""
    return sorted({name for trial in study.trials for name in trial.params if "." not in name})


def _figure(axes):
    import numpy as np

    first = np.asarray(axes, dtype=object).flat[0]
    return first.figure


def _html(study, summary: dict[str, Any], images: list[str]) -> str:
    rows = []
    for trial in study.trials:
        attrs = trial.user_attrs
        values = ", ".join(f"{v:.3g}" for v in trial.values) if trial.values else ""
        feasible = "" if not trial.constraints else ("yes" if all(c <= 0 for c in trial.constraints.values()) else "no")
        repeat = f"#{attrs['duplicate_of']}" if "duplicate_of" in attrs else ""
        rows.append(f"<tr><td>{trial.number}</td><td>{trial.state.name}</td><td>{html.escape(attrs.get('label', ''))}"
                    f"</td><td>{values}</td><td>{attrs.get('metrics', {}).get('speedup', float('nan')):.2f}x</td>"
                    f"<td>{feasible}</td><td>{repeat}</td></tr>")
    table = ("<table border=1 cellpadding=3><tr><th>#</th><th>state</th><th>config</th><th>objective</th>"
             "<th>speedup (sweep)</th><th>feasible</th><th>repeat of</th></tr>" + "".join(rows) + "</table>")
    pictures = "".join(f'<h3>{name[:-4]}</h3><img src="{name}" style="max-width:100%">' for name in images)
    return (f"<html><head><meta charset='utf-8'><title>{html.escape(study.study_name)}</title></head><body>"
            f"<h1>{html.escape(study.study_name)}</h1>"
            f"<pre>{html.escape(json.dumps(summary, indent=2, default=str))}</pre>"
            f"<h2>Trials</h2>{table}<h2>Plots</h2>{pictures}</body></html>")


# --------------------------------------------------------------------------------------------
# Weights & Biases (imported only with --wandb)


def log_trial(logger, trial) -> None:
    """One W&B run per finished trial, grouped by study (logged after its timing)."""
    attrs = trial.user_attrs
    run = logger.run(f"trial-{trial.number:03d}", "trial",
                     {"trial": trial.number, "params": trial.params, "lookahead": attrs.get("config", {})})
    for index, row in enumerate(attrs.get("per_prompt", [])):
        run.log({f"prompt/{k}": v for k, v in row.items() if isinstance(v, (int, float))}, step=index)
    run.summary.update({**attrs.get("metrics", {}), "state": trial.state.name,
                        "feasible": all(c <= 0 for c in trial.constraints.values()),
                        "duplicate_of": attrs.get("duplicate_of")})
    logger.finish(run)


def log_summary(logger, study, summary: dict[str, Any], images: Sequence[Path]) -> None:
    """The study's summary run: the trial table, the report's plots, best / held-out / drift."""
    run = logger.run("summary", "summary", {"best": summary.get("best", {}).get("config", {})})
    rows = [{"trial": t.number, "state": t.state.name, "label": t.user_attrs.get("label", ""),
             "values": t.values, **{k: t.user_attrs.get("metrics", {}).get(k) for k in ("speedup", "tokens_per_step")}}
            for t in study.trials]
    run.log({"trials": logger.table(rows), **logger.images(images)})
    run.summary.update(flatten({k: v for k, v in summary.items() if k in ("best", "heldout", "drift")}))
    logger.finish(run)
