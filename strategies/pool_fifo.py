"""``fifo``: a full key evicts the n-gram inserted first; re-harvesting does not refresh it.
Newest insertions are offered first."""

from typing import Literal

from strategies.base import PoolPolicy, register
from strategies.keyed_pool import Entry, KeyedPool


@register("pool", "fifo")
class FIFOPool(KeyedPool):
    refresh_on_add = False

    class Params(PoolPolicy.Params):
        name: Literal["fifo"] = "fifo"

    def rank_key(self, draft: tuple[int, ...], entry: Entry) -> tuple:
        return (entry.added,)

    def victim_key(self, draft: tuple[int, ...], entry: Entry) -> tuple:
        return (entry.added,)
