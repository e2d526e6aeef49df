"""Pluggable strategies. Importing this package registers every built-in strategy.

To add one: write a class in a new module here (see docs/strategies.md), decorate it with
``@register(role, name)`` and import the module below (or import it yourself before building
a config that names it). To register one only for a while (a test), do it inside
``with temporary_registrations():``.
"""

from strategies import (  # noqa: F401  (imported for registration)
    pool_fifo,
    pool_lfu,
    pool_lru,
    pool_unbounded,
    scheduler_adaptive,
    scheduler_static,
    source_ngram,
    source_recycling,
    source_suffix,
    verifier_greedy,
    verifier_sampling,
)
from strategies.base import (  # noqa: F401
    Candidate,
    DraftSource,
    StepOutcome,
    PoolPolicy,
    StepRecord,
    StrategyParams,
    Verdict,
    Verifier,
    WindowScheduler,
    lookup,
    parse_params,
    register,
    registered,
    temporary_registrations,
)
