"""``ngram``: the lookahead paper's n-gram pool as a draft source.

Its pool (the config's ``pool`` block: lru, fifo, lfu, unbounded or a user policy) stores
``key -> N-1 continuation tokens``, harvested from the prompt (``seed_from_prompt``), from the
lookahead branch's window (every step's ``window_ngrams``) and from the committed output
(``harvest_output``). It proposes the pool's best ``guess_set`` (G) drafts for the root, each
N-1 tokens long: today's verification branch, so configs keep their meaning and their outputs.
Its settings are the config's ``ngram``, ``guess_set``, ``pool`` and ``harvest_output``.

Example (N=3, G=2): the prompt "a b c a b d" seeds a -> (b, c), b -> (c, a), ...; at root "a" it
offers (b, c) and, once harvested, (b, d).
"""

from __future__ import annotations

from typing import Literal, Sequence

from framework.ngrams import sequence_ngrams
from strategies.base import (
    SOURCE_LOOKAHEAD, SOURCE_OUTPUT, SOURCE_PROMPT, Candidate, DraftSource, StepOutcome, lookup, register,
)


@register("source", "ngram")
class NgramSource(DraftSource):
    class Params(DraftSource.Params):
        name: Literal["ngram"] = "ngram"

    def __init__(self, params, *, config) -> None:
        super().__init__(params, config=config)
        self.ngram, self.guess_set = config.ngram, config.guess_set
        self.pool = lookup("pool", config.pool.name)(config.pool, ngram=config.ngram, guess_set=config.guess_set)
        self._harvested = 0  # output n-grams with keys before this index are in the pool
        self._offered: list[tuple[int, ...]] = []

    @classmethod
    def node_cap(cls, params, config) -> int:
        return config.guess_set * (config.ngram - 1)

    def begin(self, prompt: Sequence[int]) -> None:
        """The pool's own settings decide: ``persist`` keeps it, ``seed_from_prompt`` seeds it."""
        super().begin(prompt)  # the acceptance estimates
        if not self.config.pool.persist:
            self.pool.reset()
        self.pool.begin(list(prompt))
        if self.config.pool.seed_from_prompt and self.guess_set > 0:
            self._add_ngrams(prompt, 0, SOURCE_PROMPT)
        self._harvested = max(len(prompt) - self.ngram + 1, 0)  # keys from here on may reach the output

    def propose(self, context: Sequence[int], max_len: int) -> list[Candidate]:
        if self.guess_set == 0:
            return []
        offered = self.pool.offer(context[-1], self.guess_set)
        self._offered = [draft for draft, _ in offered]
        keys = tuple(range(1, self.ngram))
        return [self.candidate(draft, keys[: len(draft)], origin=tag) for draft, tag in offered]

    def observe(self, outcome: StepOutcome) -> None:
        super().observe(outcome)
        accepted = tuple(outcome.committed[: outcome.accepted])
        won = next((d for d in self._offered if accepted and d[: len(accepted)] == accepted), None)
        self.pool.feedback(outcome.root, won, outcome.accepted if won is not None else 0)
        if outcome.window_ngrams:
            keys, drafts = zip(*outcome.window_ngrams)
            self.pool.add_many(keys, drafts, SOURCE_LOOKAHEAD)
        if self.config.harvest_output and self.guess_set > 0:
            self._harvested = self._add_ngrams(outcome.context, self._harvested, SOURCE_OUTPUT)

    def _add_ngrams(self, tokens: Sequence[int], start: int, tag: str) -> int:
        """Pool every n-gram of ``tokens`` whose key index is >= ``start``; returns the next start."""
        pairs = sequence_ngrams(tokens, self.ngram, start)  # only the part not yet harvested
        self.pool.add_many([key for key, _ in pairs], [draft for _, draft in pairs], tag)
        return start + len(pairs)
