"""What a sweep leaves behind: the best config as YAML and as CLI flags, a PNG/HTML report of the
study, and (with ``--wandb``) one W&B run per trial plus a summary run.

The best-config file is a plain ``LookaheadConfig`` mapping with comments on top, so both
``python -m experiments.bench --config best.yaml`` and ``LookaheadConfig.model_validate(
yaml.safe_load(...))`` read it. The flags are checked by parsing them with
``experiments.generate``'s own parser: a field no flag can set is named, and the file is the way.
"""

from __future__ import annotations

import html
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

from experiments.harness import flatten_config
from experiments.sweep_space import OBJECTIVES, dump_config
from framework.config import LookaheadConfig
from strategies.base import ROLES

BEST_YAML, SUMMARY_JSON, REPORT_HTML = "best.yaml", "summary.json", "report.html"


# --------------------------------------------------------------------------------------------
# Labels and flags


def config_label(config: LookaheadConfig) -> str:
    """``W=2 N=4 G=3`` plus every other value that differs from the defaults, strategy
    parameters included: ``W=2 N=4 G=3 pool=lfu(capacity=8,seed_from_prompt=False)``."""
    data, default = dump_config(config), dump_config(LookaheadConfig())
    parts = [f"W={config.window}", f"N={config.ngram}", f"G={config.guess_set}"]
    for key, value in data.items():
        if key in ("window", "ngram", "guess_set") or value == default.get(key):
            continue
        if key in ROLES:
            base = dump_config(LookaheadConfig.model_validate({key: {"name": value["name"]}}))[key]
            extra = ",".join(f"{k}={v}" for k, v in value.items() if k != "name" and base.get(k) != v)
            parts.append(f"{key}={value['name']}" + (f"({extra})" if extra else ""))
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def cli_flags(config: LookaheadConfig) -> tuple[list[str], list[str]]:
    """Flags for ``python -m experiments.generate`` / ``experiments.bench`` that build ``config``,
    and the ``field=value`` settings no flag can express (use the YAML file for those)."""
    from experiments.generate import CONFIG_FLAGS, PARAM_FLAGS

    data, default = dump_config(config), dump_config(LookaheadConfig())
    flags: list[str] = []
    for key, value in data.items():
        if key in ROLES:
            flags += _role_flags(key, value, default[key], PARAM_FLAGS)
        elif key in ("window", "ngram", "guess_set") or value != default[key]:
            flags += _flag(CONFIG_FLAGS.get(key), value)
    unexpressed = [f"{k}={v}" for k, v in flatten_config(data).items() if flatten_config(_parse_flags(flags)).get(k) != v]
    return flags, unexpressed


def _role_flags(role: str, block: dict, default: dict, param_flags: dict) -> list[str]:
    flags = [] if block == default else [f"--{role}", str(block["name"])]
    base = dump_config(LookaheadConfig.model_validate({role: {"name": block["name"]}}))[role]
    for field, value in block.items():
        if field != "name" and value != base.get(field):
            flags += _flag(param_flags.get((role, field)), value)
    return flags


def _flag(flag: str | None, value: Any) -> list[str]:
    if flag is None:
        return []
    if flag.startswith("--no-"):  # a switch that turns a default-True setting off
        return [flag] if value is False else []
    return [flag, str(value)]


def _parse_flags(flags: list[str]) -> dict[str, Any]:
    from experiments.generate import build_config, build_parser

    return dump_config(build_config(build_parser().parse_args(["--prompt", "-", *flags])))


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


class WandbLog:
    """One W&B run per trial (grouped by study, logged when the trial ends, so W&B's own work
    never overlaps a timing) and a summary run. Offline unless ``WANDB_MODE`` says otherwise."""

    def __init__(self, project: str, group: str, out: Path, tags: Sequence[str], context: dict[str, Any]) -> None:
        os.environ.setdefault("WANDB_MODE", "offline")
        import wandb

        self.wandb, self.project, self.group, self.out = wandb, project, group[:120], out
        self.tags, self.context = [t[:60] for t in tags], context
        out.mkdir(parents=True, exist_ok=True)

    def _run(self, name: str, job_type: str, config: dict[str, Any]):
        return self.wandb.init(project=self.project, group=self.group, name=name, job_type=job_type, tags=self.tags,
                               config={**self.context, **config}, dir=str(self.out), reinit="create_new")

    def trial(self, trial) -> None:
        attrs = trial.user_attrs
        run = self._run(f"trial-{trial.number:03d}", "trial",
                        {"trial": trial.number, "params": trial.params, "lookahead": attrs.get("config", {})})
        for index, row in enumerate(attrs.get("per_prompt", [])):
            run.log({f"prompt/{k}": v for k, v in row.items() if isinstance(v, (int, float)) and v is not None},
                    step=index)
        run.summary.update({**attrs.get("metrics", {}), "state": trial.state.name,
                            "feasible": all(c <= 0 for c in trial.constraints.values()),
                            "duplicate_of": attrs.get("duplicate_of")})
        run.finish()

    def summary(self, study, summary: dict[str, Any], images: Sequence[Path]) -> None:
        run = self._run("summary", "summary", {"best": summary.get("best", {}).get("config", {})})
        columns = ["trial", "state", "label", "values", "speedup", "tokens_per_step"]
        data = [[t.number, t.state.name, t.user_attrs.get("label", ""), json.dumps(t.values),
                 t.user_attrs.get("metrics", {}).get("speedup"), t.user_attrs.get("metrics", {}).get("tokens_per_step")]
                for t in study.trials]
        run.log({"trials": self.wandb.Table(columns=columns, data=data)})
        images = {p.stem: self.wandb.Image(str(p)) for p in images if p.exists()}
        if images:
            run.log(images)
        run.summary.update(flatten_config({k: v for k, v in summary.items() if k in ("best", "heldout", "drift")}))
        run.finish()
