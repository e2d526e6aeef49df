"""Sweep files for ``python -m experiments.sweep``: YAML -> settings and an Optuna search space.

Glossary:
    dimension   what one config value may be: a fixed value (``keep``), a list of choices
                (``[3, 4, 5]``) or a range (``{low: 0, high: 8, step: 2, log: false}``), which
                become Optuna's own ``CategoricalDistribution``, ``IntDistribution`` (int bounds)
                and ``FloatDistribution``.
    role block  a strategy field (``scheduler``, ``pool``, ``verifier``): a choice among the
                registered strategies of that role (``all`` is every one, user strategies
                imported with ``--import`` included), each with its own parameter dimensions:
                ``params`` for every chosen strategy that has the field, ``per_policy`` for one.
    param name  a dimension's name in the study: ``window``, ``pool`` (the strategy's name),
                ``pool.lfu.capacity`` (drawn only in trials that chose lfu).

Example (the ``space`` block)::

    space:
      window: {low: 0, high: 8}          # int range
      ngram: [3, 4, 5]                   # choices
      realign: keep                      # fixed
      sources: [[ngram], [ngram, suffix]]  # choices of a list field: each a list
      pool:
        choices: all
        params: {capacity: [null, 8]}
        per_policy: {unbounded: {capacity: null}}

Every value a dimension can take (each choice, both ends of a range) is validated by
``LookaheadConfig`` or the strategy's ``Params`` when the file is loaded, so a bad space fails
before any model loads, naming the key (``space.ngram.low: ngram must be >= 2 ...``).
docs/sweeps.md describes every key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.distributions import (
    BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution, distribution_to_json,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from experiments.cli import CliError, import_strategies
from experiments.harness import dump_config
from framework.config import LookaheadConfig
from strategies.base import ROLES, lookup, registered

ALL = ("all", "*")


class SpaceError(ValueError):
    """A sweep file that cannot be used; the message starts with the file and the key."""


# --------------------------------------------------------------------------------------------
# Dimensions: a fixed value or an Optuna distribution


def dimension(raw: Any, where: str) -> Any:
    """A YAML value -> a fixed value or a distribution (see the module doc)."""
    if isinstance(raw, dict) and set(raw) <= {"value"} | {"choices"} and len(raw) == 1:
        raw = raw.get("choices", raw.get("value"))
    if isinstance(raw, list):
        if not raw:
            raise SpaceError(f"{where}: give at least one choice")
        return raw[0] if len(raw) == 1 else CategoricalDistribution(raw)
    if not isinstance(raw, dict):
        return raw
    extra = set(raw) - {"low", "high", "step", "log"}
    if extra or not {"low", "high"} <= set(raw):
        raise SpaceError(f"{where}: expected a value, a list of choices or a range {{low, high[, step, log]}}, "
                         f"got keys {sorted(raw)}")
    numbers = [raw[k] for k in ("low", "high", "step") if raw.get(k) is not None]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
        raise SpaceError(f"{where}: low, high and step must be numbers, got {raw}")
    if raw["low"] > raw["high"]:
        raise SpaceError(f"{where}: low ({raw['low']}) is above high ({raw['high']})")
    try:
        if all(isinstance(v, int) for v in numbers):
            return IntDistribution(raw["low"], raw["high"], log=bool(raw.get("log")), step=raw.get("step") or 1)
        return FloatDistribution(raw["low"], raw["high"], log=bool(raw.get("log")), step=raw.get("step"))
    except ValueError as error:
        raise SpaceError(f"{where}: {error}") from None


def candidates(dim: Any, where: str) -> list[tuple[Any, str]]:
    """Values to validate, each with its key: every choice, both ends and a middle of a range."""
    if isinstance(dim, CategoricalDistribution):
        return [(value, f"{where}[{i}]") for i, value in enumerate(dim.choices)]
    if isinstance(dim, (IntDistribution, FloatDistribution)):
        middle = dim.low + (dim.high - dim.low) / 3 if isinstance(dim, FloatDistribution) and dim.step is None else None
        return [(dim.low, f"{where}.low"), (dim.high, f"{where}.high")] + ([(middle, where)] if middle else [])
    return [(dim, where)]


def draw(trial, name: str, dim: Any) -> Any:
    """Draw ``dim`` through the trial's public API (a fixed value is returned as it is)."""
    if isinstance(dim, CategoricalDistribution):
        return trial.suggest_categorical(name, dim.choices)
    if isinstance(dim, IntDistribution):
        return trial.suggest_int(name, dim.low, dim.high, step=dim.step, log=dim.log)
    if isinstance(dim, FloatDistribution):
        return trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log)
    return dim


def contains(dim: Any, value: Any) -> bool:
    if isinstance(dim, CategoricalDistribution):
        return any(value == c and type(value) is type(c) for c in dim.choices)
    if isinstance(dim, IntDistribution):
        return isinstance(value, int) and dim.low <= value <= dim.high and (value - dim.low) % dim.step == 0
    if isinstance(dim, FloatDistribution):
        return isinstance(value, (int, float)) and dim.low <= value <= dim.high
    return value == dim


def count(dim: Any) -> int | None:
    if isinstance(dim, CategoricalDistribution):
        return len(dim.choices)
    if isinstance(dim, IntDistribution):
        return (dim.high - dim.low) // dim.step + 1
    return None if isinstance(dim, FloatDistribution) else 1


def describe(dim: Any) -> Any:
    return json.loads(distribution_to_json(dim)) if isinstance(dim, BaseDistribution) else dim


def _check(validate, value: Any, where: str, suffix: str = "") -> None:
    try:
        validate(value)
    except ValidationError as error:
        messages = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        raise SpaceError(f"{where}: {messages}{suffix}" + ("" if "got " in messages else f" (got {value!r})")) from None


# --------------------------------------------------------------------------------------------
# The space


@dataclass(frozen=True)
class Space:
    """Dimensions per config field and, per role, per chosen strategy; a field the space does not
    name keeps ``LookaheadConfig``'s default."""

    fields: dict[str, Any]  # field -> fixed value or distribution
    roles: dict[str, dict[str, dict[str, Any]]]  # role -> strategy name -> param -> dimension

    def suggest(self, trial) -> dict[str, Any]:
        """One config (a mapping for ``LookaheadConfig.model_validate``), drawn through ``trial``."""
        config = {field: draw(trial, field, dim) for field, dim in self.fields.items()}
        if "sources" in config:
            config["sources"] = json.loads(config["sources"])
        for role, choices in self.roles.items():
            name = draw(trial, role, CategoricalDistribution(list(choices)) if len(choices) > 1 else next(iter(choices)))
            config[role] = {"name": name, **{k: draw(trial, f"{role}.{name}.{k}", d) for k, d in choices[name].items()}}
        return config

    def params_of(self, config: dict[str, Any], where: str = "config") -> dict[str, Any]:
        """The Optuna params that make ``suggest`` return ``config`` (a partial mapping: to enqueue)."""
        try:
            full = dump_config(LookaheadConfig.model_validate(config))
        except ValidationError as error:
            raise SpaceError(f"{where}: " + "; ".join(str(e["msg"]) for e in error.errors())) from None
        if "sources" in full:
            full["sources"] = json.dumps(full["sources"], sort_keys=True)
        wanted = {field: (dim, full[field], f"{where}.{field}") for field, dim in self.fields.items()}
        for role, choices in self.roles.items():
            name = full[role]["name"]
            if name not in choices:
                raise SpaceError(f"{where}.{role}: {name!r} is not in the space ({', '.join(choices)})")
            if len(choices) > 1:
                wanted[role] = (CategoricalDistribution(list(choices)), name, f"{where}.{role}")
            wanted.update({f"{role}.{name}.{k}": (d, full[role][k], f"{where}.{role}.{k}")
                           for k, d in choices[name].items()})
        params = {}
        for param, (dim, value, label) in wanted.items():
            if not contains(dim, value):
                raise SpaceError(f"{label}: {value!r} is outside the space ({describe(dim)})")
            if isinstance(dim, BaseDistribution):
                params[param] = value
        return params

    def describe(self) -> dict[str, Any]:
        """A JSON-ready, canonical description (the study fingerprint hashes it)."""
        return {"fields": {k: describe(d) for k, d in sorted(self.fields.items())},
                "roles": {r: {n: {k: describe(d) for k, d in sorted(p.items())} for n, p in sorted(c.items())}
                          for r, c in sorted(self.roles.items())}}

    def size(self) -> int | None:
        """How many distinct configs the space holds; None if a float range makes it infinite."""
        total = 1
        for dim in self.fields.values():
            total *= count(dim) or 0
        for choices in self.roles.values():
            per = [_product(count(d) for d in params.values()) for params in choices.values()]
            total *= sum(per)
        return total or None

    def free_params(self) -> list[str]:
        names = [f for f, d in self.fields.items() if isinstance(d, BaseDistribution)]
        for role, choices in self.roles.items():
            names += [role] if len(choices) > 1 else []
            names += [f"{role}.{n}.{k}" for n, p in choices.items() for k, d in p.items() if isinstance(d, BaseDistribution)]
        return names


def _product(counts) -> int:
    total = 1
    for value in counts:
        total *= value or 0
    return total


def build_space(raw: Any, where: str = "space") -> Space:
    """Validate a ``space`` mapping against ``LookaheadConfig`` and the registry."""
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{where}: expected a mapping of LookaheadConfig fields to dimensions, got {raw!r}")
    fields, roles = {}, {}
    for key, value in raw.items():
        if key not in LookaheadConfig.model_fields:
            raise SpaceError(f"{where}.{key}: not a LookaheadConfig field "
                             f"(fields: {', '.join(LookaheadConfig.model_fields)})")
        if key in ROLES:
            roles[key] = role_space(key, value, f"{where}.{key}")
            continue
        if key == "sources":  # a list per choice: Optuna's choices are its canonical JSON text
            value = [value] if isinstance(value, list) and value and not isinstance(value[0], list) else value
            value = [_sources_text(choice, f"{where}.sources[{i}]") for i, choice in enumerate(value)]
        fields[key] = dimension(value, f"{where}.{key}")
        for candidate, label in candidates(fields[key], f"{where}.{key}"):
            _check(lambda v: LookaheadConfig.model_validate({key: json.loads(v) if key == "sources" else v}),
                   candidate, label)
    sizes = {k: max(v for v, _ in candidates(fields[k], k)) for k in ("window", "ngram", "guess_set") if k in fields}
    _check(LookaheadConfig.model_validate, sizes, f"{where} (its largest W, N, G)")  # the step-size bound
    return Space(fields, roles)


def _sources_text(choice: Any, where: str) -> str:
    """One ``sources`` choice (e.g. ``[ngram, suffix]``) as the canonical JSON of its validated blocks."""
    if not isinstance(choice, list):
        raise SpaceError(f"{where}: a sources choice is a list of sources, e.g. [ngram, suffix]; got {choice!r}")
    _check(lambda v: LookaheadConfig.model_validate({"sources": v}), choice, where)
    return json.dumps(dump_config(LookaheadConfig(sources=choice))["sources"], sort_keys=True)


class _RoleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    choices: str | list[str] = "all"
    params: dict[str, Any] = Field(default_factory=dict)  # for every chosen strategy that has the field
    per_policy: dict[str, dict[str, Any]] = Field(default_factory=dict)  # for one strategy


def role_space(role: str, raw: Any, where: str) -> dict[str, dict[str, Any]]:
    """``lru``, ``[lru, lfu]``, ``all``, ``{name: lru, capacity: [4, 8]}`` or
    ``{choices, params, per_policy}`` -> strategy name -> param -> dimension."""
    choices_at = f"{where}.choices" if isinstance(raw, dict) and "choices" in raw else where
    if isinstance(raw, dict) and "name" in raw:
        raw = {"choices": [raw["name"]], "per_policy": {raw["name"]: {k: v for k, v in raw.items() if k != "name"}}}
    elif not isinstance(raw, dict):
        raw = {"choices": raw}
    try:
        spec = _RoleSpec.model_validate(raw)
    except ValidationError as error:
        raise SpaceError("; ".join(f"{where}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())) from None
    names = _choices(role, spec.choices, choices_at)
    fields = {name: set(lookup(role, name).Params.model_fields) - {"name"} for name in names}
    for field in spec.params:
        if not any(field in f for f in fields.values()):
            known = sorted(set().union(*fields.values()))
            raise SpaceError(f"{where}.params.{field}: no chosen {role} has this parameter (theirs: "
                             f"{', '.join(known) or 'none'})")
    for name in spec.per_policy:
        if name not in names:
            raise SpaceError(f"{where}.per_policy.{name}: not among the chosen {role}s ({', '.join(names)})")
    space = {}
    for name in names:
        params_model = lookup(role, name).Params
        dims = {}
        shared = {k: (v, f"{where}.params.{k}") for k, v in spec.params.items()
                  if k in fields[name] and params_model.model_fields[k].annotation is not type(None)}
        own = {k: (v, f"{where}.per_policy.{name}.{k}") for k, v in spec.per_policy.get(name, {}).items()}
        for field, (value, label) in {**shared, **own}.items():
            if field not in fields[name]:
                raise SpaceError(f"{label}: not a parameter of {role} {name!r} "
                                 f"(its parameters: {', '.join(sorted(fields[name])) or 'none'})")
            dims[field] = dimension(value, label)
            for candidate, where_value in candidates(dims[field], label):
                _check(lambda v: params_model.model_validate({"name": name, field: v}), candidate, where_value,
                       f", for {role} {name!r}")
        space[name] = dims
    return space


def _choices(role: str, choices: str | list[str], where: str) -> list[str]:
    if isinstance(choices, str) and choices in ALL:
        names = [n for n in sorted(registered(role)) if not getattr(lookup(role, n), "samples", False)]
    else:
        names = [choices] if isinstance(choices, str) else list(choices)
        if not names or len(set(names)) != len(names):
            raise SpaceError(f"{where}: give one or more distinct {role} names, got {choices!r}")
    for name in names:
        try:
            strategy = lookup(role, name)
        except ValueError as error:
            raise SpaceError(f"{where}: {error}") from None
        if getattr(strategy, "samples", False):  # the sweep decodes greedily and compares with greedy
            raise SpaceError(f"{where}: {role} {name!r} samples; a sweep decodes greedily, where the engine "
                             f"would replace it by a greedy one")
    return names


# --------------------------------------------------------------------------------------------
# The sweep file


class SamplerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, description="base seed; a study with k trials gets seed + k")
    startup_trials: int = Field(5, ge=0, description="random trials before TPE models the results")
    multivariate: bool = Field(True, description="TPE models the parameters jointly (grouped by condition)")


class PrunerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after_prompts: int | None = Field(3, ge=1, description="prune below the median after this many prompts")
    startup_trials: int = Field(4, ge=0, description="trials measured in full before pruning starts")


class HeldOutSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(1, ge=1, description="held-out prompts per category (never the sweep's prompts)")
    seed: int = Field(1, description="seed of the held-out sample")
    repeats: int = Field(1, ge=1, description="timed runs per (prompt, method); the median is kept")


@dataclass(frozen=True)
class Objective:
    metric: str  # a field of harness.Summary
    direction: str  # "maximize" or "minimize"
    label: str


OBJECTIVES: dict[str, Objective] = {
    "speed": Objective("tokens_per_second", "maximize", "tokens/s"),
    "tokens_per_step": Objective("tokens_per_step", "maximize", "tokens/step"),
    "speedup": Objective("speedup", "maximize", "speedup vs greedy"),
    "memory": Objective("peak_memory_mb", "minimize", "peak memory (MiB)"),
}


class SweepSpec(BaseModel):
    """One sweep file: what each trial measures, how trials are drawn, and the search space."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="part of the study name")
    description: str = ""
    imports: list[str] = Field(default_factory=list, description="modules or .py files imported first")
    dataset: str = Field("spec_bench", description="experiments.datasets name")
    limit: int | None = Field(1, ge=1, description="prompts per category (a seeded sample); null: all")
    seed: int = Field(0, description="seed of the prompt sample")
    max_new_tokens: int = Field(64, ge=1)
    dtype: str = Field("float32", description="float32 keeps greedy exact on CPU")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null: chosen from the machine")
    compile: bool = Field(False, description="measure the engine's compiled step (LookaheadEngine(compile=True))")
    trials: int = Field(12, ge=0, description="trials to measure per run (a rerun adds as many)")
    objective: str = Field("speed", description="speed, tokens_per_step, speedup, memory, comma-separated")
    warmup_tokens: int = Field(16, ge=0, description="unrecorded tokens each new config decodes first")
    tie_tolerance: float = Field(1e-4, ge=0, description="a differing output is a near-tie (kept feasible) if "
                                 "the plain forward's top-2 logit gap there is below this")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    heldout: HeldOutSpec = Field(default_factory=HeldOutSpec)
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="configs measured first in a new study")
    space: dict[str, Any]

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from experiments.datasets import DATASET_NAMES

        if value not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {value!r}; valid: {', '.join(DATASET_NAMES)}")
        return value

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, value: str) -> str:
        names = [part.strip() for part in value.split(",") if part.strip()]
        if not names or any(n not in OBJECTIVES for n in names) or len(set(names)) != len(names):
            raise ValueError(f"give distinct names from {', '.join(OBJECTIVES)}, comma-separated")
        return ",".join(names)

    def objectives(self) -> list[str]:
        return self.objective.split(",")


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file: its settings, its validated space, and where it came from."""

    spec: SweepSpec
    space: Space
    source: str

    def fingerprint(self) -> str:
        """8 hex digits over what makes trials comparable (prompts, tokens, objective, dtype, the
        resolved space); the trial count, held-out and sampler settings are left out."""
        spec = self.spec
        data = {"dataset": spec.dataset, "limit": spec.limit, "seed": spec.seed, "max_new_tokens": spec.max_new_tokens,
                "dtype": spec.dtype, "objective": spec.objective, "space": self.space.describe()}
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> Sweep:
    """Read a sweep file, apply command-line ``overrides`` (top-level keys), import, validate."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SpaceError(f"{path}: {error}") from None
    return parse_sweep(raw, source=str(path), overrides=overrides)


def parse_sweep(raw: Any, source: str = "<sweep>", overrides: dict[str, Any] | None = None) -> Sweep:
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: expected a mapping (name, space, ...), got {type(raw).__name__}")
    raw = {**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    try:
        spec = SweepSpec.model_validate(raw)
        import_strategies(spec.imports, flag="imports:")
        space = build_space(spec.space)
        for index, config in enumerate(spec.enqueue):
            space.params_of(config, where=f"enqueue[{index}]")
    except ValidationError as error:
        raise SpaceError(f"{source}: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {str(e['msg']).removeprefix('Value error, ')} (got {e.get('input')!r})"
            for e in error.errors())) from None
    except (SpaceError, CliError) as error:
        raise SpaceError(f"{source}: {error}") from None
    return Sweep(spec, space, source)
