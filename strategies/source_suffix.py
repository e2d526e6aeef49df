"""``suffix``: drafts copied from the context after earlier occurrences of its own suffix.

Prompt lookup, SAM-Decoding and SuffixDecoding draft this way: where text is copied (summaries,
code edits, RAG), the longest suffix of the context that occurred before is usually followed by
what followed it then. The index maps every k-gram (k <= ``max_match``) of prompt + output to its
end positions, updated as tokens are committed (``max_match`` entries per token: linear in the
text, no rescan per step). A step looks up the context's suffixes from the longest down and
proposes the continuations of the most recent occurrences, up to ``branches`` distinct ones of up
to ``max_len`` tokens each; several matches sharing a prefix become one branch of the tree.

Estimates are kept per (match length, depth): a 6-token match predicts better than a 1-token one.

Example (max_match 2): context "a b c x a b" -> the suffix "a b" occurred at positions 0-1, so
it proposes "c x a b ..." (cut to max_len).
"""

from __future__ import annotations

from typing import Literal, Sequence

from pydantic import Field

from strategies.base import Candidate, DraftSource, StepOutcome, register


@register("source", "suffix")
class SuffixSource(DraftSource):
    class Params(DraftSource.Params):
        name: Literal["suffix"] = "suffix"
        max_len: int = Field(8, ge=1, le=64, description="longest draft, in tokens")
        max_match: int = Field(6, ge=1, le=32, description="longest suffix looked up (k-grams indexed per token)")
        min_match: int = Field(1, ge=1, description="shortest suffix worth a draft")
        branches: int = Field(2, ge=1, le=16, description="distinct continuations proposed per step")

    def __init__(self, params, *, config) -> None:
        super().__init__(params, config=config)
        self._text: list[int] = []
        self._ends: dict[tuple[int, ...], list[int]] = {}  # k-gram -> end positions, oldest first

    @classmethod
    def node_cap(cls, params, config) -> int:
        return params.max_len * params.branches

    def begin(self, prompt: Sequence[int]) -> None:
        super().begin(prompt)
        self._text, self._ends = [], {}  # the index is positional: one context at a time
        self._extend(prompt)

    def propose(self, context: Sequence[int], max_len: int) -> list[Candidate]:
        self._extend(context[len(self._text):])
        text, p = self._text, self.params
        found: list[Candidate] = []
        seen: set[tuple[int, ...]] = set()
        for k in range(min(p.max_match, len(text) - 1), p.min_match - 1, -1):
            for end in reversed(self._ends.get(tuple(text[-k:]), [])):
                if end >= len(text) - 1:
                    continue  # the suffix itself
                draft = tuple(text[end + 1 : end + 1 + min(max_len, p.max_len)])
                if draft and draft not in seen:
                    seen.add(draft)
                    bucket = min(k, 4)
                    found.append(self.candidate(draft, [(bucket, d) for d in range(1, len(draft) + 1)]))
                if len(found) >= p.branches:
                    return found
        return found

    def observe(self, outcome: StepOutcome) -> None:
        super().observe(outcome)
        self._extend(outcome.context[len(self._text):])

    def _extend(self, tokens: Sequence[int]) -> None:
        """Append ``tokens`` and index the k-grams ending at each."""
        for token in tokens:
            self._text.append(int(token))
            end = len(self._text) - 1
            for k in range(1, min(self.params.max_match, end + 1) + 1):
                self._ends.setdefault(tuple(self._text[end - k + 1 : end + 1]), []).append(end)
