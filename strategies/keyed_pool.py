"""Shared storage for pool policies that keep a bounded set of drafts per key token.

A policy subclasses :class:`KeyedPool` and says three things: how a draft ranks for offering
(``rank_key(draft, entry)``, highest first), which goes when a key is full (``victim_key(draft,
entry)``, lowest goes), and whether re-adding an existing n-gram refreshes it (``refresh_on_add``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import ClassVar, Sequence

from strategies.base import PoolPolicy


@dataclass
class Entry:
    source: str  # where it was first harvested (SOURCE_*)
    added: int  # tick of first insertion
    used: int  # tick of last insertion or win
    hits: int = 0  # times it won verification with >= 1 accepted token


class KeyedPool(PoolPolicy):
    refresh_on_add: ClassVar[bool] = True
    bounded: ClassVar[bool] = True
    # True for a policy whose rank and victim keys are both ``(entry.used,)`` (LRU): each key's
    # entries are then kept in use order (a use moves an entry last), so the victim is the first
    # and the offer the last ones reversed, with no scan or sort per call; the same choices
    use_ordered: ClassVar[bool] = False

    def __init__(self, params, *, ngram: int, guess_set: int) -> None:
        super().__init__(params, ngram=ngram, guess_set=guess_set)
        self._table: dict[int, dict[tuple[int, ...], Entry]] = {}
        self._tick = 0

    # ranking hooks -------------------------------------------------------------------------
    def rank_key(self, draft: tuple[int, ...], entry: Entry) -> tuple:
        """Higher ranks are offered first."""
        return (entry.used,)

    def victim_key(self, draft: tuple[int, ...], entry: Entry) -> tuple:
        """The entry with the lowest victim key is evicted first."""
        return (entry.used,)

    # PoolPolicy ----------------------------------------------------------------------------
    def add(self, key: int, draft: tuple[int, ...], source: str) -> None:
        self.add_many((key,), (draft,), source)

    def add_many(self, keys: Sequence[int], drafts: Sequence[tuple[int, ...]], source: str) -> None:
        table, refresh, ordered = self._table, self.refresh_on_add, self.use_ordered
        capacity = self.capacity if self.bounded else None
        for key, draft in zip(keys, drafts):  # one loop for a step's harvest: a method call per n-gram costs
            self._tick += 1
            entries = table.get(key)
            if entries is None:
                entries = table[key] = {}
            entry = entries.get(draft)
            if entry is not None:
                if refresh:
                    entry.used = self._tick
                    if ordered:
                        entries[draft] = entries.pop(draft)
                continue
            if capacity is not None and len(entries) >= capacity:
                if ordered:
                    victim = next(iter(entries))
                else:
                    victim = min(entries, key=lambda d: self.victim_key(d, entries[d]))
                del entries[victim]
            entries[draft] = Entry(source=source, added=self._tick, used=self._tick)

    def offer(self, key: int, limit: int) -> list[tuple[tuple[int, ...], str]]:
        entries = self._table.get(key)
        if not entries or limit <= 0:
            return []
        if self.use_ordered:
            return [(draft, entry.source) for draft, entry in islice(reversed(entries.items()), limit)]
        ranked = sorted(entries.items(), key=lambda item: self.rank_key(*item), reverse=True)
        return [(draft, entry.source) for draft, entry in ranked[:limit]]

    def feedback(self, key: int, draft: tuple[int, ...] | None, accepted: int) -> None:
        if draft is None or accepted <= 0:
            return
        entries = self._table.get(key, {})
        entry = entries.get(draft)
        if entry is not None:
            self._tick += 1
            entry.hits += 1
            entry.used = self._tick
            if self.use_ordered:
                entries[draft] = entries.pop(draft)

    def reset(self) -> None:
        self._table.clear()
        self._tick = 0

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._table.values())

    def drafts_for(self, key: int) -> list[tuple[int, ...]]:
        """Every stored draft of ``key`` in storage order: insertion order, or use order for a
        ``use_ordered`` policy (for inspection and tests)."""
        return list(self._table.get(key, {}))
