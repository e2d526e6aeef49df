"""Strategy roles, their contracts and the open registry.

Glossary (docs/design.md maps the paper's symbols to these names once):
    window      the lookahead branch: ``levels`` (<= N-1) rows of ``width`` (W) guessed tokens.
    ngram       N, the length of a harvested n-gram (key token + N-1 continuation tokens).
    guess_set   G, the most candidate continuations verified in one step.
    draft       one candidate continuation (N-1 tokens) that the verification branch checks.
    root        the current token: the last committed token, fed at the start of every step.

Every role is an abstract class. An implementation is one class in one file under
``strategies/``, decorated with ``@register("<role>", "<name>")`` and carrying a nested
pydantic ``Params`` model whose ``name`` field is ``Literal["<name>"]``. The config
(``framework.LookaheadConfig``), the CLI and the sweeps look strategies up here by name, so a
new class is usable everywhere without touching the engine.

``with temporary_registrations(): ...`` scopes registrations (tests, notebooks): whatever the
body registers is gone on exit, even if it raises; the registry is restored as it was on entry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Literal, NamedTuple, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

Role = Literal["scheduler", "pool", "verifier", "source"]
ROLES: tuple[Role, ...] = ("scheduler", "pool", "verifier")  # one block each in the config
LIST_ROLES: tuple[Role, ...] = ("source",)  # a list of blocks in the config (``sources``)
ALL_ROLES: tuple[Role, ...] = ROLES + LIST_ROLES

# source tags of an n-gram: where it was harvested
SOURCE_PROMPT = "prompt"
SOURCE_LOOKAHEAD = "lookahead"
SOURCE_OUTPUT = "output"
SOURCE_NONE = "none"


class StrategyParams(BaseModel):
    """Base of every strategy's ``Params``: unknown keys are errors, ``name`` selects the class."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str


_REGISTRY: dict[str, dict[str, type]] = {role: {} for role in ALL_ROLES}


def register(role: Role, name: str):
    """Class decorator: make ``cls`` selectable as ``{"name": name}`` in the ``role`` block."""
    if role not in _REGISTRY:
        raise ValueError(f"role must be one of {ALL_ROLES}, got {role!r}")

    def decorate(cls: type) -> type:
        params = getattr(cls, "Params", None)
        if params is None or not issubclass(params, StrategyParams):
            raise TypeError(f"{cls.__name__} needs a nested `Params(StrategyParams)` model")
        declared = params.model_fields["name"].annotation
        if getattr(declared, "__args__", None) != (name,):
            raise TypeError(f"{cls.__name__}.Params.name must be Literal[{name!r}] to register as {name!r}")
        existing = _REGISTRY[role].get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"a {role} named {name!r} is already registered ({existing.__qualname__})")
        cls.name = name
        _REGISTRY[role][name] = cls
        return cls

    return decorate


@contextmanager
def temporary_registrations() -> Iterator[None]:
    """Undo, on exit, every registration made inside the block (and any other change to it).

    Example::

        with temporary_registrations():
            @register("scheduler", "two")
            class Two(WindowScheduler):
                class Params(StrategyParams):
                    name: Literal["two"] = "two"
                def width(self, history): return 2
            LookaheadConfig(scheduler="two")   # valid here
        LookaheadConfig(scheduler="two")       # ValueError: unknown scheduler 'two'
    """
    registry = _REGISTRY  # restored in place: holders of this dict see the restored contents
    saved = {role: dict(names) for role, names in registry.items()}
    try:
        yield
    finally:
        for role, names in registry.items():
            names.clear()
            names.update(saved[role])


def registered(role: Role) -> dict[str, type]:
    """Name -> class for every registered strategy of ``role`` (a copy)."""
    return dict(_REGISTRY[role])


def lookup(role: Role, name: str) -> type:
    """The class registered as ``name`` for ``role``; the error lists the valid names."""
    try:
        return _REGISTRY[role][name]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY[role])) or "(none registered)"
        raise ValueError(f"unknown {role} {name!r}; registered {role}s: {valid}") from None


def parse_params(role: Role, block: Any) -> StrategyParams:
    """Validate a strategy block (a dict with ``name``, a ``Params`` instance or a bare name)."""
    if isinstance(block, StrategyParams):
        block = block.model_dump()
    if isinstance(block, str):
        block = {"name": block}
    if not isinstance(block, dict) or "name" not in block:
        raise ValueError(f"the {role} block needs a 'name' key, e.g. {{'name': ...}}; got {block!r}")
    if not isinstance(block["name"], str):
        raise ValueError(f"the {role} name must be a string, e.g. {{'name': 'lru'}}; got {block['name']!r}")
    return lookup(role, block["name"]).Params.model_validate(block)


# --------------------------------------------------------------------------------------------
# WindowScheduler


@dataclass
class StepRecord:
    """What one decoding step did; schedulers and pools read these."""

    width: int  # window width fed this step
    drafts: int  # candidates verified this step
    accepted: int  # draft tokens accepted (the bonus token not counted)
    emitted: int  # tokens committed by the step (accepted + bonus, after EOS/length cut)
    source: str  # where the winning draft came from (SOURCE_*)
    fed_tokens: int  # tokens in the forward pass


class WindowScheduler(ABC):
    """Decides the lookahead window width W for the next step (and, through ``plan``, how many
    draft-tree nodes to feed).

    ``width`` may change from step to step; the engine grows the window with fresh columns or
    drops columns on the right to match, which never affects exactness (only the guesses).
    ``needs_costs``: the engine hands ``plan`` the device's cost curve (``framework.costs``),
    calibrated once per (model, device, dtype, threads) and cached on disk.
    """

    name: ClassVar[str]
    needs_costs: ClassVar[bool] = False

    class Params(StrategyParams):
        name: str

    def __init__(self, params: StrategyParams, *, window: int) -> None:
        self.params = params
        self.window = window  # the configured W

    def reset(self) -> None:
        """Called at the start of every generate()."""

    @abstractmethod
    def width(self, history: Sequence[StepRecord]) -> int:
        """Window width for the next step, given every earlier step of this generate()."""

    def plan(
        self,
        history: Sequence[StepRecord],
        values: Sequence[float],  # [n] the planned tree's node values, best first (reach probabilities)
        cost: Callable[[int], float] | None,  # fed tokens -> cost in one-token forwards (needs_costs)
        window_tokens: Callable[[int], int],  # window width -> tokens the window feeds
    ) -> tuple[int, int | None]:
        """Window width and draft budget (tree nodes kept, the best ``values`` first; None: all)
        of the next step. Default: ``width(history)`` and every node."""
        return self.width(history), None

    def summary(self) -> dict[str, float]:
        """What the scheduler chose and why over the last generate() (reported in the stats)."""
        return {}


# --------------------------------------------------------------------------------------------
# PoolPolicy


class PoolPolicy(ABC):
    """The n-gram pool: stores continuations per key token and ranks what it offers.

    An entry is ``key -> draft`` where ``draft`` is a tuple of N-1 tokens that followed
    ``key``. ``capacity`` bounds the entries per key (None: guess_set G). Each step the engine
    asks ``offer(key, limit=G)`` for the best-ranked drafts and reports back which one won.

    Example (lru, capacity 2)::

        add(7, (1, 2), "prompt"); add(7, (3, 4), "lookahead"); add(7, (5, 6), "lookahead")
        offer(7, 2) -> [(5, 6), (3, 4)]        # (1, 2) was least recently used: evicted
    """

    name: ClassVar[str]

    class Params(StrategyParams):
        name: str
        capacity: int | None = Field(None, ge=1, description="n-grams kept per key; None means guess_set (G)")
        seed_from_prompt: bool = Field(True, description="add the prompt's own n-grams before decoding")
        persist: bool = Field(False, description="keep the pool across generate() calls on one engine")

    def __init__(self, params: StrategyParams, *, ngram: int, guess_set: int) -> None:
        self.params = params
        self.ngram = ngram
        self.guess_set = guess_set
        self.capacity = params.capacity if params.capacity is not None else max(guess_set, 1)

    def begin(self, prompt: Sequence[int]) -> None:
        """Called at the start of every generate(), after ``reset`` unless the pool persists,
        before prompt seeding. Override to look at the prompt (default: nothing)."""

    @abstractmethod
    def add(self, key: int, draft: tuple[int, ...], source: str) -> None:
        """Insert (or refresh) one n-gram; evict by the policy's rule if the key is full."""

    @abstractmethod
    def offer(self, key: int, limit: int) -> list[tuple[tuple[int, ...], str]]:
        """At most ``limit`` drafts for ``key``, best first, each with its source tag."""

    @abstractmethod
    def feedback(self, key: int, draft: tuple[int, ...] | None, accepted: int) -> None:
        """Verification's verdict: ``draft`` won with ``accepted`` tokens (None: none offered/won)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget everything."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of n-grams stored over all keys."""

    def add_many(self, keys: Sequence[int], drafts: Sequence[tuple[int, ...]], source: str) -> None:
        for key, draft in zip(keys, drafts):
            self.add(key, draft, source)


# --------------------------------------------------------------------------------------------
# Verifier


@dataclass(frozen=True)
class Verdict:
    """The verification branch's outcome for one step.

    tokens:   the committed tokens in order: the accepted draft prefix, then one bonus token
              (the model's own choice after it). Always 1..L+1 tokens.
    row:      index of the draft whose first ``accepted`` KV entries are kept (None if 0).
    accepted: how many draft tokens were accepted (``len(tokens) - 1``); "emitted" is
              ``len(tokens)``, the accepted tokens plus the bonus token.
    path:     from ``verify_tree``: the accepted nodes of the draft tree (``len == accepted``).
    """

    tokens: tuple[int, ...]
    row: int | None
    accepted: int
    path: tuple[int, ...] = ()  # tree verifiers: the accepted draft-tree nodes, root first

    @classmethod
    def of_walk(cls, tree: Any, path: list[int], token: int) -> Verdict:
        """The verdict of a tree walk that accepted the nodes ``path`` and ends with ``token``;
        ``row`` is the first leaf path through the last accepted node."""
        return cls(tokens=tuple(tree.tokens[n] for n in path) + (token,), row=tree.row_through(path),
                   accepted=len(path), path=tuple(path))


class Verifier(ABC):
    """Checks candidate drafts against the model's own next-token choices.

    Inputs are scores after the logits processors (and, when sampling, the warpers) that the
    model's generation config asks for, row by row in each row's own context:

        root_scores   # [V]        predicts the token after the root (current) token
        draft_tokens  # [g, L]     g drafts of L tokens (g may be 0)
        draft_scores  # [g, L, V]  draft_scores[i, t] predicts the token after draft_tokens[i, t]

    ``preserves_distribution``: True if, under sampling, the committed tokens follow exactly the
    law of sampling one token at a time from the same scores. ``do_sample=True`` refuses a
    verifier that does not declare it.
    """

    name: ClassVar[str]
    preserves_distribution: ClassVar[bool] = False
    samples: ClassVar[bool] = False  # True: expects softmax-able warped scores and a generator
    walks_tree: ClassVar[bool] = False  # True: implements verify_tree (reads rows on demand)
    takes_choices: ClassVar[bool] = False  # True: verify_tree accepts choices= (argmaxes the engine has)

    class Params(StrategyParams):
        name: str

    def __init__(self, params: StrategyParams) -> None:
        self.params = params

    @abstractmethod
    def verify(
        self,
        root_scores: torch.Tensor,  # [V]
        draft_tokens: torch.Tensor,  # [g, L]
        draft_scores: torch.Tensor,  # [g, L, V]
        generator: torch.Generator | None = None,
    ) -> Verdict:
        """Choose the committed tokens of this step."""

    def verify_tree(
        self,
        root_scores: torch.Tensor | None,  # [V]; None only with choices
        tree: Any,  # framework.layout.DraftTree: tokens, parents, draft_nodes [g, L]
        node_scores: Callable[[list[int]], torch.Tensor],  # nodes -> [k, V] scores, computed on demand
        generator: torch.Generator | None = None,
        choices: Callable[[list[int]], list[int]] | None = None,
    ) -> Verdict:
        """Like ``verify`` but reading node rows only when needed (``walks_tree = True``);
        ``Verdict.row`` is any draft whose first ``accepted`` nodes are the accepted path.

        ``choices`` (passed only to verifiers that declare ``takes_choices``, and only when the
        scores are the raw logits): nodes (-1: the root) -> the argmax of each node's scores,
        from the engine, which may already have them (one pass over rows it projected together).
        With ``choices`` the engine may pass ``root_scores=None``: ``node_scores([-1])`` reads them."""
        raise NotImplementedError(f"{type(self).__name__} does not walk the draft tree")


# --------------------------------------------------------------------------------------------
# DraftSource


@dataclass(frozen=True)
class Candidate:
    """One proposed continuation of the root, as a draft source offers it.

    tokens: the draft, 1 .. the source's max length tokens.
    probs:  per token, the source's estimate that it is accepted given the tokens before it were
            (``len(probs) == len(tokens)``, each in [0, 1]); the planner ranks tree nodes by the
            product along the path, the expected number of accepted tokens is its sum.
    keys:   per token, the statistic the estimate came from (e.g. its depth): what the source
            learns about when it observes the outcome.
    source: the source's name (attribution).
    origin: finer provenance, reported per step in ``stats.sources`` (e.g. an n-gram's harvest
            tag: prompt, lookahead, output); the source's name when it has none.
    """

    tokens: tuple[int, ...]
    probs: tuple[float, ...]
    keys: tuple[Any, ...]
    source: str
    origin: str = ""

    def __post_init__(self) -> None:
        if not self.origin:
            object.__setattr__(self, "origin", self.source)


class FedNode(NamedTuple):
    """A draft-tree node the step fed: its token, depth (1 = right after the root), the
    candidate it came from (source, key) and whether verification accepted it. (A named tuple:
    a step builds one per fed node.)"""

    token: int
    depth: int
    source: str
    key: Any
    accepted: bool


@dataclass
class StepOutcome:
    """What one step did, as every source observes it (``observe``).

    context:        every committed token, the prompt included (the new root last).
    root:           the root this step continued (the last token before ``committed``).
    committed:      the tokens this step committed (accepted draft tokens, then the bonus).
    accepted:       how many of them were draft tokens.
    nodes:          the fed draft-tree nodes (``FedNode``), accepted or not.
    window_ngrams:  n-grams the lookahead branch harvested this step: ``(key, continuation)``.
    top_tokens:     ``token -> its top-k next tokens`` for the rows the step projected (the root,
                    the accepted path, the window's top level); filled only when a source asks
                    (``DraftSource.top_k > 0``), else empty.
    """

    context: Sequence[int]
    root: int
    committed: tuple[int, ...]
    accepted: int
    nodes: list[FedNode]
    window_ngrams: list[tuple[int, tuple[int, ...]]]
    top_tokens: dict[int, list[int]]


class DraftSource(ABC):
    """Proposes candidate continuations of the root; learns from every step's outcome.

    One call proposes (``propose``), one call learns (``observe``), as Hugging Face's candidate
    generators do. Candidates may have any length up to the ``max_len`` the engine allows this
    step; the planner merges every source's candidates into one token tree under the step's
    draft budget, ranked by their ``probs``. ``top_k > 0`` asks the engine for the top-k next
    tokens of the rows it projected (``StepOutcome.top_tokens``).

    The base class keeps a running acceptance estimate per key (``estimate``): a Beta(1, 1) prior
    updated with every fed node of this source (accepted or not), decayed by ``decay`` so recent
    steps count more. State persists across ``generate()`` calls when ``params.persist`` is true.

    Example (a source that always proposes the root's own token twice)::

        @register("source", "echo")
        class Echo(DraftSource):
            class Params(DraftSource.Params):
                name: Literal["echo"] = "echo"

            def propose(self, context, max_len):
                tokens = (context[-1],) * min(2, max_len)
                return [self.candidate(tokens, keys=tuple(range(1, len(tokens) + 1)))]
    """

    name: ClassVar[str]
    top_k: ClassVar[int] = 0

    class Params(StrategyParams):
        name: str
        persist: bool = Field(False, description="keep the source's state across generate() calls on one engine")
        decay: float = Field(0.98, gt=0, le=1, description="weight of older outcomes in the acceptance estimates")

    def __init__(self, params: StrategyParams, *, config: Any) -> None:
        self.params = params
        self.config = config  # the engine's LookaheadConfig (ngram, guess_set, pool, ...)
        self._stats: dict[Any, list[float]] = {}  # key -> [accepted, fed], decayed

    @classmethod
    def node_cap(cls, params: StrategyParams, config: Any) -> int:
        """The most tree nodes this source proposes in one step (bounds the step's size)."""
        return 0

    def begin(self, prompt: Sequence[int]) -> None:
        """Called at the start of every generate(): forgets the last call's state unless ``persist``."""
        if not self.params.persist:
            self.reset()

    def reset(self) -> None:
        """Forget everything learned (override to clear a source's own state too)."""
        self._stats.clear()

    @abstractmethod
    def propose(self, context: Sequence[int], max_len: int) -> list[Candidate]:
        """Candidates continuing ``context`` (whose last token is the root), each <= ``max_len``."""

    def observe(self, outcome: StepOutcome) -> None:
        """Learn from a step: the base class updates the acceptance estimates of its own nodes."""
        decay = self.params.decay
        for node in outcome.nodes:
            if node.source != self.name:
                continue
            stats = self._stats.setdefault(node.key, [0.0, 0.0])
            stats[0] = stats[0] * decay + node.accepted
            stats[1] = stats[1] * decay + 1.0

    def estimate(self, key: Any) -> float:
        """Running acceptance rate of ``key``'s nodes (Beta(1, 1) prior: 0.5 before any)."""
        accepted, fed = self._stats.get(key, (0.0, 0.0))
        return (accepted + 1.0) / (fed + 2.0)

    def candidate(self, tokens: Sequence[int], keys: Sequence[Any], origin: str = "") -> Candidate:
        """A candidate of ``tokens`` whose probs are the running estimates of ``keys``."""
        return Candidate(tuple(tokens), tuple(self.estimate(k) for k in keys), tuple(keys), self.name, origin)
