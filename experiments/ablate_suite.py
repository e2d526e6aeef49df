"""Ablation suites for ``python -m experiments.ablate``: YAML -> validated arms -> harness methods.

Glossary:
    suite      a named list of arms measured on the same prompts (``experiments/ablations/*.yaml``).
    arm        one decoding method with one setting: our engine with a ``LookaheadConfig`` (and
               optionally a ``sampling`` block), or a baseline (``greedy``, ``pld``).
    grid       an arm that expands to the product of values of some config keys; ``tie`` copies
               one key's value into another in each point (``guess_set: window`` gives G = W).
    reference  the arm every other arm is compared with by the paired test (default: the first).

Example (a suite file)::

    name: my-ablation
    reference: base
    arms:
      - {name: pld, method: pld}
      - {name: base, config: {window: 15, ngram: 5, guess_set: 15}}
      - name: "W={window} N={ngram}"          # a grid: 3 x 2 arms, G = W in each
        config: {pool: {seed_from_prompt: false}}
        grid: {window: [2, 4, 8], ngram: [5, 11]}
        tie: {guess_set: window}

Every arm is validated when the file is loaded, before any model: an unknown key, an unknown
strategy or an impossible size fails naming the file and the arm (``suite x.yaml, arm 'base':
config.pool: unknown pool 'lfx'; registered pools: fifo, lfu, lru, unbounded``).
"""

from __future__ import annotations

import itertools
import re
import zlib
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from experiments.cli import CliError, assign, explain, flatten, normalize, validate
from experiments.harness import GreedyMethod, LookaheadMethod, Method, PromptLookupMethod, dump_config
from framework.config import LookaheadConfig
from framework.processors import eos_token_ids

SUITES_DIR = Path(__file__).resolve().parent / "ablations"


# --------------------------------------------------------------------------------------------
# The file's models


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PldParams(Strict):
    """Hugging Face prompt lookup's two knobs (HF's defaults, as in docs/results.md)."""

    num_tokens: int = Field(10, ge=1, description="prompt_lookup_num_tokens: draft tokens per step")
    max_ngram_size: int = Field(2, ge=1, description="max_matching_ngram_size: longest n-gram matched")


class Sampling(Strict):
    """Sampling settings for an arm. Every warper is fixed here: an unset one is off (not the
    model's generation_config default), so an arm means the same on every model."""

    temperature: float = Field(1.0, ge=0.0, description="0 means greedy (no sampling)")
    top_k: int = Field(0, ge=0, description="0: off")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="1.0: off")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="None: off")

    def generate_kwargs(self) -> dict[str, Any]:
        if self.temperature == 0:
            return {"do_sample": False}
        return {"do_sample": True, **self.model_dump()}


class PaperNumbers(Strict):
    """What the paper reports for this arm (LLaMA-2-7B-chat, MT-Bench, A100), shown side by side."""

    tokens_per_step: float | None = Field(None, gt=0)
    speedup: float | None = Field(None, gt=0)


class ArmSpec(Strict):
    """One arm (or, with ``grid``, a family of arms) as written in the file."""

    name: str = Field(min_length=1, description="unique; with grid, {key} placeholders take each point's values")
    method: Literal["lookahead", "greedy", "pld"] = "lookahead"
    config: dict[str, Any] = Field(default_factory=dict, description="LookaheadConfig fields (lookahead only)")
    pld: PldParams | None = Field(None, description="prompt lookup's knobs (pld only)")
    sampling: Sampling | None = Field(None, description="sample instead of greedy decoding (lookahead only)")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="config key (dotted) -> values")
    tie: dict[str, str] = Field(default_factory=dict, description="config key -> the key whose value it copies")
    paper: PaperNumbers | None = None

    @model_validator(mode="after")
    def _fits_method(self) -> "ArmSpec":
        lookahead_only = {"config": self.config, "sampling": self.sampling, "grid": self.grid, "tie": self.tie}
        misplaced = [key for key, value in lookahead_only.items() if value and self.method != "lookahead"]
        if misplaced:
            raise ValueError(f"{', '.join(misplaced)} only apply to method: lookahead (this arm is {self.method})")
        if self.pld is not None and self.method != "pld":
            raise ValueError(f"pld: only applies to method: pld (this arm is {self.method})")
        empty = [key for key, values in self.grid.items() if not values]
        if empty:
            raise ValueError(f"grid.{empty[0]}: give at least one value")
        return self


class ScalingFit(Strict):
    """Fit tokens per step = a + b * log2(x) over the arms, one line per value of ``by``."""

    x: str = Field("window", description="config key on the (log2) x axis; every arm needs it > 0")
    by: str = Field("ngram", description="config key that groups the arms into fitted lines")


class SuiteFile(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    reference: str | None = Field(None, description="the arm the paired test compares with (default: the first)")
    scaling: ScalingFit | None = None
    arms: list[ArmSpec] = Field(min_length=1)


# --------------------------------------------------------------------------------------------
# Arms, expanded and validated


class Arm(Strict):
    """One measured arm: a name, a method and everything it needs, validated."""

    name: str
    method: Literal["lookahead", "greedy", "pld"]
    config: dict[str, Any] | None = None  # the full LookaheadConfig as JSON (lookahead only)
    pld: PldParams | None = None
    sampling: Sampling | None = None
    paper: PaperNumbers | None = None

    def lookahead_config(self) -> LookaheadConfig:
        return LookaheadConfig.model_validate(self.config)

    @property
    def exact(self) -> bool:
        """Its output must equal plain greedy's (every arm that does not sample)."""
        return self.sampling is None or self.sampling.temperature == 0

    def describe(self) -> dict[str, Any]:
        """What identifies the arm in a run's header (resuming compares these)."""
        return self.model_dump(mode="json", exclude={"paper"}, exclude_none=True)


class Suite(Strict):
    name: str
    description: str = ""
    source: str  # the file it came from
    reference: str
    scaling: ScalingFit | None = None
    arms: list[Arm]

    def arm(self, name: str) -> Arm:
        return next(arm for arm in self.arms if arm.name == name)


def shipped_suites() -> list[str]:
    return sorted(path.stem for path in SUITES_DIR.glob("*.yaml"))


def suite_path(spec: str) -> Path:
    """``--suite NAME`` (a shipped suite) or ``--suite FILE.yaml``."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise CliError(f"--suite {spec}: no such file")
        return path
    if (SUITES_DIR / f"{spec}.yaml").is_file():
        return SUITES_DIR / f"{spec}.yaml"
    raise CliError(f"--suite {spec}: not a shipped suite ({', '.join(shipped_suites())}) nor a .yaml file")


def load_suite(spec: str) -> Suite:
    """Read, expand and validate a suite (strategies named by ``--import`` must be imported first)."""
    import yaml

    path = suite_path(spec)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise CliError(f"suite {path}: {error}") from None
    try:
        suite = SuiteFile.model_validate(raw)
    except ValidationError as error:
        raise CliError(f"suite {path}: {file_errors(error, raw)}") from None
    arms = unique_arms([arm for spec_ in suite.arms for arm in expand(spec_, path)], path)
    reference = suite.reference or arms[0].name
    if reference not in {arm.name for arm in arms}:
        raise CliError(f"suite {path}: reference: no arm is named {reference!r}; arms: {', '.join(a.name for a in arms)}")
    if suite.scaling is not None:
        check_scaling(suite.scaling, arms, path)
    return Suite(name=suite.name, description=suite.description, source=str(path), reference=reference,
                 scaling=suite.scaling, arms=arms)


def file_errors(error: ValidationError, raw: Any) -> str:
    """Pydantic's errors as ``arm 'NAME': key: message`` (an unknown key lists the valid ones)."""
    lines = []
    for item in error.errors():
        loc = list(item["loc"])
        where = ".".join(map(str, loc)) or "(top level)"
        if len(loc) >= 2 and loc[0] == "arms" and isinstance(loc[1], int):
            arm = raw["arms"][loc[1]] if isinstance(raw, dict) else {}
            name = arm.get("name", f"#{loc[1]}") if isinstance(arm, dict) else f"#{loc[1]}"
            where = f"arm {name!r}" + (": " + ".".join(map(str, loc[2:])) if loc[2:] else "")
        model = ArmSpec if loc[:1] == ["arms"] else SuiteFile
        if item["type"] == "extra_forbidden":
            message = f"unknown key; {model.__name__.removesuffix('Spec').lower()} keys: {', '.join(model.model_fields)}"
            if model is ArmSpec:
                message += " (LookaheadConfig fields go under config:)"
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def expand(spec: ArmSpec, path: Path) -> list[Arm]:
    """The arms of one entry: itself, or one per grid point (with ties applied)."""
    where = f"suite {path}, arm {spec.name!r}"
    keys = list(spec.grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*spec.grid.values())] if keys else [{}]
    return [build_arm(spec, point, where) for point in points]


def build_arm(spec: ArmSpec, point: dict[str, Any], where: str) -> Arm:
    """One arm at one grid point; the config is validated by ``LookaheadConfig``."""
    common = {"method": spec.method, "pld": spec.pld, "sampling": spec.sampling, "paper": spec.paper}
    if spec.method != "lookahead":
        return Arm(name=spec.name, **common)
    data = normalize(_copy(spec.config), f"{where}: config")
    origins = {key: f"{where}: config" for key in flatten(data)}
    for key, value in point.items():
        assign(data, key, value, f"{where}: grid.{key}")
        origins[key] = f"{where}: grid.{key}={value!r}"
    values = flatten(data)
    for key, source in spec.tie.items():
        if source not in values:
            raise CliError(f"{where}: tie.{key}: {source!r} is not set by config or grid; tie to one of "
                           f"{', '.join(values) or '(none)'}")
        assign(data, key, values[source], f"{where}: tie.{key}")
        origins[key] = f"{where}: tie.{key}={source}"
    config = validate(data, origins, f"{where}: config")
    return Arm(name=arm_name(spec.name, dump_config(config), where), config=dump_config(config), **common)


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    return {key: _copy(value) if isinstance(value, dict) else value for key, value in data.items()}


def arm_name(template: str, config: dict[str, Any], where: str) -> str:
    """``"W={window} pool={pool.name}"`` filled from the config."""
    values = flatten(config)

    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise CliError(f"{where}: name: no config key {key!r} to fill {{{key}}}")
        return str(values[key])

    return re.sub(r"\{([\w.]+)\}", fill, template)


def unique_arms(arms: list[Arm], path: Path) -> list[Arm]:
    """Arms in order; an exact repeat (a grid's centre written twice) is kept once, two different
    arms with one name are refused."""
    kept: dict[str, Arm] = {}
    for arm in arms:
        seen = kept.get(arm.name)
        if seen is not None and seen.describe() != arm.describe():
            raise CliError(f"suite {path}: two different arms are named {arm.name!r}; rename one "
                           f"(a grid's name needs a {{key}} for every key it varies)")
        kept.setdefault(arm.name, arm)
    return list(kept.values())


def check_scaling(scaling: ScalingFit, arms: list[Arm], path: Path) -> None:
    for arm in arms:
        if arm.method != "lookahead":
            continue
        values = flatten(arm.config)
        for role, key in (("x", scaling.x), ("by", scaling.by)):
            if key not in values:
                raise CliError(f"suite {path}: scaling.{role}: {key!r} is not a config key (arm {arm.name!r})")
        x = values[scaling.x]
        if not isinstance(x, (int, float)) or isinstance(x, bool) or x <= 0:
            raise CliError(f"suite {path}: scaling.x: arm {arm.name!r} has {scaling.x}={x!r}; log2 needs a "
                           f"number > 0 (drop the arm or fit another key)")


# --------------------------------------------------------------------------------------------
# Arms as harness methods


class SampledLookaheadMethod(LookaheadMethod):
    """Our engine, sampling. The generator is seeded from (seed, the prompt's tokens), the same
    for every arm and every repeat on one prompt: common random numbers, reproducible, resumable."""

    def __init__(self, config: LookaheadConfig, sampling: Sampling, seed: int, name: str,
                 compile: bool = False) -> None:
        super().__init__(config, name=name, compile=compile)
        self.sampling, self.seed = sampling, seed
        self.config["sampling"] = sampling.model_dump()

    def run(self, model, input_ids, max_new_tokens):
        generator = torch.Generator().manual_seed(prompt_seed(self.seed, input_ids))
        out = self.engine(model).generate(input_ids, max_new_tokens=max_new_tokens, generator=generator,
                                          eos_token_id=eos_token_ids(model.generation_config),
                                          **self.sampling.generate_kwargs())
        return out.sequences, out.stats


def prompt_seed(seed: int, input_ids: torch.Tensor) -> int:
    """A seed from the run's seed and the prompt's tokens ``[1, T]``."""
    return zlib.crc32(input_ids.cpu().numpy().tobytes(), seed & 0xFFFFFFFF)


def build_method(arm: Arm, seed: int, compile: bool = False) -> Method:
    """The harness method of one arm, named after it (``compile``: the engine's compiled step)."""
    if arm.method == "greedy":
        method = GreedyMethod()
        method.name = arm.name
        return method
    if arm.method == "pld":
        pld = arm.pld or PldParams()
        return PromptLookupMethod(pld.num_tokens, pld.max_ngram_size, name=arm.name)
    if arm.sampling is not None and not arm.exact:
        return SampledLookaheadMethod(arm.lookahead_config(), arm.sampling, seed, arm.name, compile)
    return LookaheadMethod(arm.lookahead_config(), name=arm.name, compile=compile)
