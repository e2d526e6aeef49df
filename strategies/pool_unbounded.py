"""``unbounded``: never evicts (``capacity`` is ignored); still offers at most G drafts per step,
most verified hits first, then the most recent."""

from typing import Literal

from pydantic import Field

from strategies.base import PoolPolicy, register
from strategies.keyed_pool import Entry, KeyedPool


@register("pool", "unbounded")
class UnboundedPool(KeyedPool):
    bounded = False

    class Params(PoolPolicy.Params):
        name: Literal["unbounded"] = "unbounded"
        capacity: None = Field(None, description="no capacity: an unbounded pool never evicts")

    def rank_key(self, draft: tuple[int, ...], entry: Entry) -> tuple:
        return (entry.hits, entry.used)
