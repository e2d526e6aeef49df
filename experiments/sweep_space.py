"""Search spaces for ``python -m experiments.sweep``: a YAML file -> a validated, Optuna-ready space.

Glossary:
    dimension   what one config value may be: a fixed value, a list of choices, or an int/float
                range ``{low, high, step, log}``.
    field       a top-level ``LookaheadConfig`` field (window, ngram, guess_set, realign, ...). The
                valid keys are read from the config model at run time: a field the engine gains is
                sweepable as soon as it exists, with no edit here.
    role block  a strategy field (``scheduler``, ``pool``, ``verifier``): a choice among the
                *registered* strategies of that role, each with its own parameters. Those are
                conditional: sampled only in trials that chose that strategy, and validated by that
                strategy's own ``Params`` model.
    param name  a dimension's name in the Optuna study: ``window``, ``pool`` (the policy's name),
                ``pool.lfu.capacity`` (a parameter of one policy). Fixed values are no Optuna params.

Example (the ``space`` block of a sweep file)::

    space:
      window: {low: 0, high: 8}          # int range
      ngram: [3, 4, 5]                   # choices
      realign: keep                      # fixed
      pool:
        choices: all                     # every registered pool policy, user ones included
        params:                          # applied to each chosen policy that has the field
          capacity: [null, 8]
          seed_from_prompt: [true, false]

    a trial draws window=2, ngram=4, pool="lfu", pool.lfu.capacity=8, pool.lfu.seed_from_prompt=True
    and measures LookaheadConfig(window=2, ngram=4, realign="keep",
                                 pool={"name": "lfu", "capacity": 8, "seed_from_prompt": True}).

Every value a dimension can take (a fixed value, each choice, both ends of a range) is validated
by the engine's own models when the file is loaded, so a bad space fails before any model is
loaded, with a message naming the key (``space.ngram.low: Input should be greater than or equal
to 2 (got 1)``). docs/sweeps.md describes the file format.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import strategies  # noqa: F401  (registers the built-in strategies)
from framework.config import LookaheadConfig
from strategies.base import ROLES, lookup, registered

Scalar = Union[None, bool, int, float, str]
ALL = ("all", "*")  # role choices meaning "every registered strategy of this role"


class SpaceError(ValueError):
    """A search space that cannot be used; the message starts with the offending key."""


# --------------------------------------------------------------------------------------------
# Dimensions


class _Dimension(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def candidates(self) -> list[Any]:
        """The values checked against the config schema when the space is loaded."""
        raise NotImplementedError

    @property
    def free(self) -> bool:
        """True if Optuna samples it (False: a constant)."""
        return True


class Fixed(_Dimension):
    value: Scalar

    def suggest(self, trial, name: str) -> Any:
        return self.value

    def candidates(self) -> list[Any]:
        return [self.value]

    def contains(self, value: Any) -> bool:
        return value == self.value

    @property
    def free(self) -> bool:
        return False


class Choice(_Dimension):
    choices: list[Scalar] = Field(min_length=1)

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices) if self.free else self.choices[0]

    def candidates(self) -> list[Any]:
        return list(self.choices)

    def contains(self, value: Any) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    @property
    def free(self) -> bool:
        return len(self.choices) > 1


class IntRange(_Dimension):
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def candidates(self) -> list[Any]:
        return [self.low, self.high]

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high and (value - self.low) % self.step == 0


class FloatRange(_Dimension):
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def candidates(self) -> list[Any]:
        return [self.low, self.high]

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high


Dimension = Union[Fixed, Choice, IntRange, FloatRange]


def dimension(raw: Any, where: str) -> Dimension:
    """A YAML value -> a dimension: ``x`` fixed, ``[a, b]`` choices, ``{low, high[, step, log]}`` a
    range (int when the bounds are ints), ``{choices: [...]}``, ``{value: x}``."""
    if isinstance(raw, list):
        model, data = Choice, {"choices": raw}
    elif isinstance(raw, dict) and ("low" in raw or "high" in raw):
        ints = all(isinstance(raw.get(k), int) and not isinstance(raw.get(k), bool) for k in ("low", "high"))
        ints = ints and isinstance(raw.get("step", 1), int)
        model, data = (IntRange if ints else FloatRange), raw
    elif isinstance(raw, dict) and ("choices" in raw or "value" in raw):
        model, data = (Choice if "choices" in raw else Fixed), raw
    elif isinstance(raw, dict):
        raise SpaceError(f"{where}: expected a value, a list of choices or a range {{low: .., high: ..}}, "
                         f"got a mapping with keys {sorted(raw)}")
    else:
        model, data = Fixed, {"value": raw}
    try:
        dim = model.model_validate(data)
    except ValidationError as error:
        raise SpaceError(_explain(error, where)) from None
    if isinstance(dim, (IntRange, FloatRange)) and dim.low > dim.high:
        raise SpaceError(f"{where}: low ({dim.low}) is above high ({dim.high})")
    return dim


def _explain(error: ValidationError, where: str) -> str:
    """``where.key[index]: message (got value)`` for each error."""
    parts = []
    for item in error.errors():
        key = where
        for part in item["loc"]:
            key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
        parts.append(f"{key or 'value'}: {_message(item)} (got {item.get('input')!r})")
    return "; ".join(parts)


def _message(item: dict) -> str:
    return str(item["msg"]).removeprefix("Value error, ")


# --------------------------------------------------------------------------------------------
# Role blocks (conditional per-strategy parameters)


@dataclass(frozen=True)
class RoleSpace:
    """The strategies a role may take and, per strategy, its parameter dimensions."""

    role: str
    choices: tuple[str, ...]
    params: dict[str, dict[str, Dimension]]  # strategy name -> field -> dimension

    def suggest(self, trial) -> dict[str, Any]:
        name = self.choices[0] if len(self.choices) == 1 else trial.suggest_categorical(self.role, list(self.choices))
        block = {"name": name}
        for field, dim in self.params[name].items():
            block[field] = dim.suggest(trial, f"{self.role}.{name}.{field}")
        return block


class _RoleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    choices: str | list[str] = "all"
    params: dict[str, Any] = Field(default_factory=dict, description="dimensions for every chosen strategy "
                                   "that has the field")
    per_policy: dict[str, dict[str, Any]] = Field(default_factory=dict, description="dimensions for one strategy")
    derive: bool = Field(False, description="sweep the strategies' other fields too, where their Params "
                         "declare a range (bool, Literal, bounded numbers, or a json_schema_extra 'sweep' hint)")


def role_space(role: str, raw: Any, where: str) -> RoleSpace:
    """``"lru"``, ``[lru, lfu]``, ``"all"``, ``{name: lru, capacity: [4, 8]}`` or
    ``{choices: ..., params: {...}, per_policy: {name: {...}}, derive: bool}``."""
    choices_at = f"{where}.choices" if isinstance(raw, dict) and "choices" in raw else where
    if isinstance(raw, dict) and "name" in raw:
        raw = {"choices": [raw["name"]], "per_policy": {raw["name"]: {k: v for k, v in raw.items() if k != "name"}}}
    elif not isinstance(raw, dict):
        raw = {"choices": raw}
    try:
        spec = _RoleSpec.model_validate(raw)
    except ValidationError as error:
        raise SpaceError(_explain(error, where)) from None
    names = _role_choices(role, spec.choices, choices_at)
    fields = {name: _param_fields(role, name) for name in names}
    for field in spec.params:
        if not any(field in f for f in fields.values()):
            known = sorted({k for f in fields.values() for k in f})
            raise SpaceError(f"{where}.params.{field}: no chosen {role} has this parameter "
                             f"(theirs: {', '.join(known) or 'none'})")
    for name in spec.per_policy:
        if name not in names:
            raise SpaceError(f"{where}.per_policy.{name}: not among the chosen {role}s ({', '.join(names)})")
    params = {name: _strategy_dims(role, name, fields[name], spec, where) for name in names}
    return RoleSpace(role, tuple(names), params)


def _role_choices(role: str, choices: str | list[str], where: str) -> list[str]:
    if isinstance(choices, str) and choices in ALL:
        names = [n for n in sorted(registered(role)) if _sweepable(role, n)]
        if not names:
            raise SpaceError(f"{where}: no {role} can be swept")
        return names
    names = [choices] if isinstance(choices, str) else list(choices)
    if not names or len(set(names)) != len(names):
        raise SpaceError(f"{where}: give one or more distinct {role} names, got {choices!r}")
    for name in names:
        try:
            lookup(role, name)
        except ValueError as error:
            raise SpaceError(f"{where}: {error}") from None
        if not _sweepable(role, name):
            raise SpaceError(f"{where}: {role} {name!r} samples; a sweep decodes greedily and compares "
                             f"outputs to plain greedy, where the engine would replace it by a greedy one")
    return names


def _sweepable(role: str, name: str) -> bool:
    """Strategies that change nothing under greedy decoding (a sampling verifier) are left out."""
    return not getattr(lookup(role, name), "samples", False)


def _param_fields(role: str, name: str) -> dict:
    return {k: f for k, f in lookup(role, name).Params.model_fields.items() if k != "name"}


def _strategy_dims(role: str, name: str, fields: dict, spec: _RoleSpec, where: str) -> dict[str, Dimension]:
    dims: dict[str, tuple[Dimension, str]] = {}  # field -> (dimension, the key it came from)
    if spec.derive:
        for field, info in fields.items():
            label = f"{where}.{name}.{field}"
            if (dim := derived_dimension(info, label)) is not None:
                dims[field] = (dim, label)
    for field, raw in spec.params.items():
        if field in fields and fields[field].annotation is not type(None):  # skip fields fixed to None
            dims[field] = (dimension(raw, f"{where}.params.{field}"), f"{where}.params.{field}")
    for field, raw in spec.per_policy.get(name, {}).items():
        label = f"{where}.per_policy.{name}.{field}"
        if field not in fields:
            raise SpaceError(f"{label}: not a parameter of {role} {name!r} "
                             f"(its parameters: {', '.join(fields) or 'none'})")
        dims[field] = (dimension(raw, label), label)
    params_model = lookup(role, name).Params
    for field, (dim, label) in dims.items():
        for value in dim.candidates():
            try:
                params_model.model_validate({"name": name, field: value})
            except ValidationError as error:
                messages = "; ".join(_message(item) for item in error.errors())
                raise SpaceError(f"{label}: {messages}, for {role} {name!r} (got {value!r})") from None
    return {field: dim for field, (dim, _) in dims.items()}


def derived_dimension(field, where: str) -> Dimension | None:
    """A strategy parameter's own range, read off its ``Params`` declaration: an explicit
    ``json_schema_extra={"sweep": ...}`` hint (any YAML dimension), a bool, a Literal, or a number
    with both bounds. None: keep the default."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "sweep" in extra:
        return dimension(extra["sweep"], where)
    annotation = field.annotation
    if annotation is bool:
        return Choice(choices=[False, True])
    if typing.get_origin(annotation) is Literal:
        return Choice(choices=list(typing.get_args(annotation)))
    if annotation in (int, float):
        low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
        high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
        if low is not None and high is not None:
            return IntRange(low=low, high=high) if annotation is int else FloatRange(low=low, high=high)
    return None


# --------------------------------------------------------------------------------------------
# The space


@dataclass(frozen=True)
class Space:
    """Dimensions per config field; fields it does not name keep ``LookaheadConfig``'s defaults."""

    fields: dict[str, Dimension]
    roles: dict[str, RoleSpace]

    def suggest(self, trial) -> dict[str, Any]:
        """One config (a dict for ``LookaheadConfig.model_validate``), drawn through ``trial``."""
        config = {field: dim.suggest(trial, field) for field, dim in self.fields.items()}
        config.update({role: space.suggest(trial) for role, space in self.roles.items()})
        return config

    def params_of(self, config: dict[str, Any], where: str = "config") -> dict[str, Any]:
        """The Optuna params that make ``suggest`` return ``config`` (to enqueue a known config).
        ``config`` is partial: fields it leaves out take the engine's defaults."""
        full = dump_config(LookaheadConfig.model_validate(config))
        params: dict[str, Any] = {}
        for field, dim in self.fields.items():
            self._check(dim, full[field], f"{where}.{field}")
            if dim.free:
                params[field] = full[field]
        for role, space in self.roles.items():
            block = full[role]
            name = block["name"]
            if name not in space.choices:
                raise SpaceError(f"{where}.{role}: {name!r} is not in the space ({', '.join(space.choices)})")
            if len(space.choices) > 1:
                params[role] = name
            for field, dim in space.params[name].items():
                self._check(dim, block[field], f"{where}.{role}.{field}")
                if dim.free:
                    params[f"{role}.{name}.{field}"] = block[field]
        return params

    @staticmethod
    def _check(dim: Dimension, value: Any, where: str) -> None:
        if not dim.contains(value):
            raise SpaceError(f"{where}: {value!r} is outside the space ({describe_dimension(dim)})")

    def describe(self) -> dict[str, Any]:
        """A JSON-ready, canonical description (the study fingerprint hashes it)."""
        return {
            "fields": {k: describe_dimension(d) for k, d in sorted(self.fields.items())},
            "roles": {r: {n: {k: describe_dimension(d) for k, d in sorted(s.params[n].items())} for n in s.choices}
                      for r, s in sorted(self.roles.items())},
        }

    def size(self) -> int | None:
        """How many distinct configs the space holds; None if a float range makes it infinite."""
        total = 1
        for dim in self.fields.values():
            total *= _count(dim) or 0
        for space in self.roles.values():
            total *= sum(_product(_count(d) for d in space.params[name].values()) for name in space.choices)
        return total or None

    def free_params(self) -> list[str]:
        """Names of the Optuna params a trial may draw."""
        names = [field for field, dim in self.fields.items() if dim.free]
        for role, space in self.roles.items():
            names += [role] if len(space.choices) > 1 else []
            names += [f"{role}.{n}.{k}" for n in space.choices for k, d in space.params[n].items() if d.free]
        return names


def _count(dim: Dimension) -> int | None:
    if isinstance(dim, Fixed):
        return 1
    if isinstance(dim, Choice):
        return len(dim.choices)
    if isinstance(dim, IntRange):
        return (dim.high - dim.low) // dim.step + 1
    return None


def _product(counts) -> int:
    total = 1
    for count in counts:
        total *= count or 0
    return total


def dump_config(config: LookaheadConfig) -> dict[str, Any]:
    """The config as JSON-ready data, strategy parameters included (``serialize_as_any``: the blocks
    are declared as the ``StrategyParams`` base, whose plain dump keeps only ``name``)."""
    return config.model_dump(mode="json", serialize_as_any=True)


def describe_dimension(dim: Dimension) -> Any:
    if isinstance(dim, Fixed):
        return dim.value
    if isinstance(dim, Choice):
        return list(dim.choices)
    data = {"low": dim.low, "high": dim.high}
    if dim.step not in (None, 1):
        data["step"] = dim.step
    if dim.log:
        data["log"] = True
    return data


def build_space(raw: dict[str, Any], where: str = "space") -> Space:
    """Validate a ``space`` mapping against ``LookaheadConfig`` (read at run time) and the registry."""
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{where}: expected a mapping of LookaheadConfig fields to dimensions, got {raw!r}")
    known = LookaheadConfig.model_fields
    fields: dict[str, Dimension] = {}
    roles: dict[str, RoleSpace] = {}
    for key, value in raw.items():
        if key not in known:
            raise SpaceError(f"{where}.{key}: not a LookaheadConfig field (fields: {', '.join(known)})")
        if key in ROLES:
            roles[key] = role_space(key, value, f"{where}.{key}")
            continue
        fields[key] = dimension(value, f"{where}.{key}")
        for candidate, label in _labelled(fields[key], f"{where}.{key}"):
            _validate_field(key, candidate, label)
    return Space(fields, roles)


def _labelled(dim: Dimension, where: str) -> list[tuple[Any, str]]:
    if isinstance(dim, (IntRange, FloatRange)):
        return [(dim.low, f"{where}.low"), (dim.high, f"{where}.high")]
    if isinstance(dim, Choice):
        return [(value, f"{where}[{i}]") for i, value in enumerate(dim.choices)]
    return [(dim.value, where)]


def _validate_field(field: str, value: Any, where: str) -> None:
    try:
        LookaheadConfig.model_validate({field: value})
    except ValidationError as error:
        messages = "; ".join(_message(item) for item in error.errors())
        raise SpaceError(f"{where}: {messages} (got {value!r})") from None


# --------------------------------------------------------------------------------------------
# The sweep file


class SamplerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, description="base seed; a study with k trials gets seed + k, so a resumed study "
                      "does not re-propose its trials")
    startup_trials: int = Field(5, ge=0, description="random trials before TPE models the results")
    multivariate: bool = Field(True, description="TPE models the parameters jointly (grouped by condition)")


class PrunerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after_prompts: int | None = Field(3, ge=1, description="stop a trial that is below the median of earlier "
                                      "trials after this many prompts; null: never prune")
    startup_trials: int = Field(4, ge=0, description="trials measured in full before pruning starts")


class HeldOutSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(1, ge=1, description="held-out prompts per category (never the sweep's prompts)")
    seed: int = Field(1, description="seed of the held-out sample")
    repeats: int = Field(1, ge=1, description="timed runs per (prompt, method); the median is kept")


class SweepSpec(BaseModel):
    """One sweep file: what each trial measures, how trials are drawn, and the search space."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="part of the study name")
    description: str = ""
    imports: list[str] = Field(default_factory=list, description="modules imported first (user strategies)")
    dataset: str = Field("spec_bench", description="experiments.datasets name")
    limit: int | None = Field(1, ge=1, description="prompts per category (a seeded sample); null: all")
    seed: int = Field(0, description="seed of the prompt sample")
    max_new_tokens: int = Field(64, ge=1)
    dtype: str = Field("float32", description="float32 keeps greedy exact on CPU")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null: torch's default")
    trials: int = Field(12, ge=0, description="trials to measure per run (a rerun adds as many)")
    objective: str = Field("speed", description="speed, tokens_per_step, speedup, memory, comma-separated")
    warmup_tokens: int = Field(16, ge=0, description="unrecorded tokens each new config decodes first")
    tie_tolerance: float = Field(1e-4, ge=0, description="a differing output is a near-tie (kept feasible) if "
                                 "the plain forward's top-2 logit gap there is below this")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    heldout: HeldOutSpec = Field(default_factory=HeldOutSpec)
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="configs measured first in a new "
                                          "study (partial LookaheadConfig mappings; {} is the engine default)")
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
        unknown = [n for n in names if n not in OBJECTIVES]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(f"give distinct names from {', '.join(OBJECTIVES)}, comma-separated")
        return ",".join(names)

    def objectives(self) -> list[str]:
        return self.objective.split(",")


@dataclass(frozen=True)
class Objective:
    metric: str  # key of the trial's metrics
    direction: str  # "maximize" or "minimize"
    label: str


OBJECTIVES: dict[str, Objective] = {
    "speed": Objective("tokens_per_second", "maximize", "tokens/s"),
    "tokens_per_step": Objective("tokens_per_step", "maximize", "tokens/step"),
    "speedup": Objective("speedup", "maximize", "speedup vs greedy"),
    "memory": Objective("peak_memory_mb", "minimize", "peak memory (MiB)"),
}


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file: its settings and its validated space."""

    spec: SweepSpec
    space: Space
    source: str  # the file it came from

    def fingerprint(self) -> str:
        """8 hex digits over everything that makes trials comparable (prompts, tokens, objective,
        dtype, the resolved space); the trial count, held-out and sampler settings are left out."""
        spec = self.spec
        data = {"dataset": spec.dataset, "limit": spec.limit, "seed": spec.seed, "max_new_tokens": spec.max_new_tokens,
                "dtype": spec.dtype, "objective": spec.objective, "space": self.space.describe()}
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> Sweep:
    """Read, apply command-line ``overrides`` (top-level keys), import ``imports``, validate."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SpaceError(f"{path}: {error}") from None
    return parse_sweep(raw, source=str(path), overrides=overrides)


def parse_sweep(raw: Any, source: str = "<sweep>", overrides: dict[str, Any] | None = None) -> Sweep:
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: expected a mapping (name, space, ...), got {type(raw).__name__}")
    raw = {**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise SpaceError(f"{source}: {_explain(error, '')}") from None
    for module in spec.imports:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise SpaceError(f"{source}: imports: cannot import {module!r} ({error})") from None
    try:
        space = build_space(spec.space)
        for index, config in enumerate(spec.enqueue):
            space.params_of(config, where=f"enqueue[{index}]")
    except SpaceError as error:
        raise SpaceError(f"{source}: {error}") from None
    except ValidationError as error:
        raise SpaceError(f"{source}: enqueue: {_explain(error, 'enqueue')}") from None
    return Sweep(spec, space, source)
