"""``lfu``: a full key evicts the n-gram with the fewest verified hits (the least recently used
among ties). Most hits are offered first, then the most recent."""

from typing import Literal

from strategies.base import PoolPolicy, register
from strategies.keyed_pool import Entry, KeyedPool


@register("pool", "lfu")
class LFUPool(KeyedPool):
    class Params(PoolPolicy.Params):
        name: Literal["lfu"] = "lfu"

    def rank_key(self, draft: tuple[int, ...], entry: Entry) -> tuple:
        return (entry.hits, entry.used)

    def victim_key(self, draft: tuple[int, ...], entry: Entry) -> tuple:
        return (entry.hits, entry.used)
