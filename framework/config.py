"""``LookaheadConfig``: every knob of the engine, validated once.

Strategy blocks (``scheduler``, ``pool``, ``verifier``) are unions discriminated on ``name``
over the *registry* (a block without ``name`` means the default strategy of its role): a block ``{"name": "lfu", "capacity": 64}`` is validated by the ``Params``
model of the class registered as ``"lfu"``, so a strategy registered by a user module is
accepted without editing this file. An unknown name lists the registered ones.
"""

from __future__ import annotations

import math
import numbers
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, ValidationInfo, field_validator, model_validator,
)

import strategies  # noqa: F401  (registers the built-in strategies)
from strategies.base import StrategyParams, parse_params


def integral(value: Any) -> int | None:
    """``value`` as an int if it is an integral number (Python, numpy, a one-element tensor, or a
    float with no fraction); None for anything else (bools, strings, inf, nan, 2.5)."""
    if hasattr(value, "numel") and hasattr(value, "item"):  # a tensor: only a single integral value
        value = value.item() if value.numel() == 1 and not value.is_floating_point() else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


# the strategy a block names when it names none: {"capacity": 8} tunes the default pool (the
# config's own default scheduler is adaptive; a scheduler block without a name is static)
DEFAULT_STRATEGIES = {"scheduler": "static", "pool": "lru", "verifier": "greedy", "source": "ngram"}


def _block(role: str):
    def validate(value: Any) -> StrategyParams:
        if isinstance(value, dict) and "name" not in value:
            value = {"name": DEFAULT_STRATEGIES[role], **value}
        return parse_params(role, value)

    return BeforeValidator(validate)


# SerializeAsAny: dump each block with its own Params' fields, not just the base class's `name`
SchedulerBlock = Annotated[SerializeAsAny[StrategyParams], _block("scheduler")]
PoolBlock = Annotated[SerializeAsAny[StrategyParams], _block("pool")]
VerifierBlock = Annotated[SerializeAsAny[StrategyParams], _block("verifier")]
SourceBlock = Annotated[SerializeAsAny[StrategyParams], _block("source")]


class LookaheadConfig(BaseModel):
    """Lookahead decoding settings (paper symbols in brackets; see docs/design.md).

    Defaults were chosen from measurements of the default model (SmolLM2-135M-Instruct,
    float32) on a 2-core CPU (docs/results.md): there every token fed costs real time and the
    lookahead window costs more than it saves, so the defaults verify the pool's 2 drafts of 3
    tokens from the prompt's and the output's own n-grams and the best 8-token copy of the
    context's suffix, and the ``adaptive`` scheduler feeds each step the root alone or the best
    nodes of that tree, whichever the device's calibrated cost curve says pays (1.14x-1.39x plain
    greedy in four runs on the same Spec-Bench sample, within that machine's run-to-run spread;
    1.84 tokens per step). On a large GPU extra tokens are nearly free and the window pays: start from W=15,
    N=5, G=15 (sweeps/presets/compression.yaml) or run ``python -m experiments.sweep --space sweeps/gpu.yaml``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(0, ge=0, description="[W] lookahead window width; 0 disables the lookahead branch")
    ngram: int = Field(4, ge=2, description="[N] n-gram size: drafts are N-1 tokens, window has N-1 levels")
    guess_set: int = Field(2, ge=0, description="[G] most n-gram drafts verified per step (the ngram source); 0 turns them off (other sources still draft)")
    scheduler: SchedulerBlock = Field(
        default_factory=lambda: parse_params("scheduler", "adaptive"),
        description="window width and draft budget per step: adaptive (by the device's calibrated cost "
        "curve: the root alone or the tree, whichever pays) or static (the paper's: always W and every node)",
    )
    pool: PoolBlock = Field(default_factory=lambda: parse_params("pool", DEFAULT_STRATEGIES["pool"]))
    verifier: VerifierBlock = Field(default_factory=lambda: parse_params("verifier", DEFAULT_STRATEGIES["verifier"]))
    sources: list[SourceBlock] = Field(
        default_factory=lambda: [parse_params("source", DEFAULT_STRATEGIES["source"]),
                                 parse_params("source", {"name": "suffix", "max_len": 8, "branches": 1})],
        description="draft sources whose candidates the planner merges into one token tree: ngram (the "
        "paper's pool: window, prompt and output n-grams), suffix (copied text), recycling (Token Recycling)",
    )
    draft_budget: int | None = Field(
        None, ge=0,
        description="most draft-tree nodes fed per step, the best by estimated acceptance; None: every "
        "candidate (the ngram source alone: G drafts of N-1 tokens, as the paper)",
    )
    min_score: float = Field(
        0.0, ge=0.0, le=1.0,
        description="drop tree nodes whose estimated chance of being reached is below this before feeding "
        "(multi-stage verification; 0 keeps all)",
    )
    realign: Literal["keep", "shift"] = Field(
        "keep",
        description="after a step that accepts k draft tokens: 'keep' the window as it is and re-base it "
        "at the new root (the reference's behaviour); 'shift' drops its first k columns so every "
        "column keeps its absolute position, refilling on the right (an ablation)",
    )
    harvest_output: bool = Field(
        True,
        description="also add the n-grams of the committed output to the pool (prompt lookup over the "
        "generated text), tagged source 'output'",
    )
    window_seed: int = Field(0, ge=0, lt=2**64, description="seed of the generator that draws the window's initial tokens")
    max_step_tokens: int = Field(
        2048, ge=1,
        description="the most tokens one step may feed: 1 + W*(N-1) + G*(N-1) (root, window, drafts) must "
        "not exceed it. A guard against sizes that would take minutes per step (W=15 N=5 G=15 feeds 121; "
        "the paper's largest setting, W=G=64 N=11, 1281); raise it knowingly",
    )
    lazy_logits: bool = Field(
        True,
        description="project hidden states to the vocabulary only for the rows a tree-walking verifier "
        "reads (greedy: at most N per step); False projects every draft row (same output)",
    )

    @field_validator("window", "ngram", "guess_set", mode="before")
    @classmethod
    def _explain_sizes(cls, value: Any, info: ValidationInfo) -> Any:
        """W, N and G errors that say what the value means and what to pass instead."""
        low, meaning = {
            "window": (0, "window=0 disables the lookahead branch"),
            "ngram": (2, "ngram=2 verifies one-token drafts"),
            "guess_set": (0, "guess_set=0 turns the n-gram drafts off"),
        }[info.field_name]
        number = integral(value)
        if number is None:
            raise ValueError(f"{info.field_name} must be an integer, got {value!r}")
        if number < low:
            raise ValueError(f"{info.field_name} must be >= {low} ({meaning}), got {value!r}")
        return number

    @field_validator("sources")
    @classmethod
    def _distinct_sources(cls, value: list) -> list:
        names = [block.name for block in value]
        if len(set(names)) != len(names):
            raise ValueError(f"each source may appear once, got {names}")
        return value

    @model_validator(mode="after")
    def _bounded_step(self) -> "LookaheadConfig":
        fed = self.step_tokens()
        if fed > self.max_step_tokens:
            raise ValueError(
                f"window={self.window}, ngram={self.ngram}, guess_set={self.guess_set} would feed up to {fed} "
                f"tokens per step (1 + W*(N-1) + the draft tree: {fed - 1 - self.window * (self.ngram - 1)} "
                f"nodes), above max_step_tokens={self.max_step_tokens}; lower W, N, G or draft_budget, or raise "
                f"max_step_tokens if you mean it"
            )
        return self

    def step_tokens(self) -> int:
        """The most tokens one step feeds: the root, the window's W x (N-1), the draft tree (the
        budget, or every source's most: G x (N-1) for the ngram source alone)."""
        from strategies.base import lookup

        tree = sum(lookup("source", block.name).node_cap(block, self) for block in self.sources)
        if self.draft_budget is not None:
            tree = min(tree, self.draft_budget)
        return 1 + self.window * (self.ngram - 1) + tree

    def summary(self) -> str:
        return (
            f"W={self.window} N={self.ngram} G={self.guess_set} scheduler={self.scheduler.name} "
            f"pool={self.pool.name} verifier={self.verifier.name} sources={'+'.join(b.name for b in self.sources)}"
        )
