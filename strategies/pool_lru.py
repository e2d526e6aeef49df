"""``lru``: the reference implementation's pool. A full key evicts its least recently used
n-gram (re-harvesting or winning verification counts as a use); the most recent is offered first."""

from typing import Literal

from strategies.base import PoolPolicy, register
from strategies.keyed_pool import KeyedPool


@register("pool", "lru")
class LRUPool(KeyedPool):
    use_ordered = True  # rank and victim are the base class's (entry.used,): kept in use order

    class Params(PoolPolicy.Params):
        name: Literal["lru"] = "lru"
