"""A pool policy that evicts the n-gram with the fewest tokens in common with the prompt.

Intuition: on tasks that copy from their input (summarization, retrieval-augmented answers),
n-grams made of prompt tokens are the likeliest to be accepted again. Among equal overlaps the
least recently used goes first, as in ``lru``.
"""

from typing import Literal, Sequence

from pydantic import Field

from strategies.base import PoolPolicy, register
from strategies.keyed_pool import Entry, KeyedPool


@register("pool", "prompt_overlap")
class PromptOverlapPool(KeyedPool):
    class Params(PoolPolicy.Params):
        name: Literal["prompt_overlap"] = "prompt_overlap"
        min_overlap: int = Field(1, ge=0, description="drafts with at least this many prompt tokens are offered first")

    def begin(self, prompt: Sequence[int]) -> None:
        self.prompt_tokens = frozenset(prompt)

    def overlap(self, draft: tuple[int, ...]) -> int:
        return sum(token in self.prompt_tokens for token in draft)

    def victim_key(self, draft: tuple[int, ...], entry: Entry) -> tuple:
        return (self.overlap(draft), entry.used)

    def rank_key(self, draft: tuple[int, ...], entry: Entry) -> tuple:
        return (self.overlap(draft) >= self.params.min_overlap, entry.used)
