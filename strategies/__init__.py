"""Pluggable strategies. Importing this package registers every built-in strategy.

To add one: write a class in a new module here (see docs/strategies.md), decorate it with
``@register(role, name)`` and import the module below (or import it yourself before building
a config that names it).
"""

from strategies import (  # noqa: F401  (imported for registration)
    pool_fifo,
    pool_lfu,
    pool_lru,
    pool_unbounded,
    scheduler_static,
    verifier_greedy,
    verifier_sampling,
)
from strategies.base import (  # noqa: F401
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
)
