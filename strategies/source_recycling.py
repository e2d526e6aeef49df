"""``recycling``: Token Recycling's adjacency drafts (Luo et al., ACL 2025).

Every forward pass already computes, for each row it projects, the model's top-k next tokens;
Token Recycling keeps them: an adjacency table ``token -> its top-k successors``, overwritten
with the newest rows each step (the root, the accepted path and the window's top level: the rows
this engine projects anyway) and kept across ``generate()`` calls on one engine. A step expands
the root through the table into a tree, ``branches[d]`` children per node at depth d, e.g.
(4, 2, 1): 4 first tokens, 2 successors of each, 1 after that: 4 + 8 + 8 = 20 nodes.

Estimates are kept per (depth, rank of the successor): the top successor is right far more
often than the fourth.

Example: table {7: [3, 9], 3: [5, 1], 9: [2]}, branches (2, 1), root 7 -> drafts (3, 5), (9, 2).
"""

from __future__ import annotations

from typing import Literal, Sequence

from pydantic import Field

from strategies.base import Candidate, DraftSource, StepOutcome, register


@register("source", "recycling")
class RecyclingSource(DraftSource):
    class Params(DraftSource.Params):
        name: Literal["recycling"] = "recycling"
        persist: bool = Field(True, description="keep the adjacency table across generate() calls (as the paper)")
        top_k: int = Field(8, ge=1, le=64, description="successors stored per token")
        branches: tuple[int, ...] = Field((4, 2, 1), min_length=1, max_length=16,
                                          description="children per node at each depth: the tree's shape")
        seed_from_prompt: bool = Field(True, description="fill empty entries with the prompt's own bigrams")

    def __init__(self, params, *, config) -> None:
        super().__init__(params, config=config)
        self.table: dict[int, list[int]] = {}

    @property
    def top_k(self) -> int:  # the engine fills StepOutcome.top_tokens with this many
        return self.params.top_k

    @classmethod
    def node_cap(cls, params, config) -> int:
        total, width = 0, 1
        for branch in params.branches:
            width *= branch
            total += width
        return total

    def begin(self, prompt: Sequence[int]) -> None:
        super().begin(prompt)
        if self.params.seed_from_prompt:
            for token, successor in zip(prompt, prompt[1:]):
                self.table.setdefault(int(token), [int(successor)])

    def reset(self) -> None:
        super().reset()
        self.table.clear()

    def propose(self, context: Sequence[int], max_len: int) -> list[Candidate]:
        paths: list[tuple[tuple[int, ...], tuple]] = [((), ())]  # (tokens, keys) of the frontier
        depth_limit = min(max_len, len(self.params.branches))
        for depth in range(1, depth_limit + 1):
            grown = []
            for tokens, keys in paths:
                last = tokens[-1] if tokens else context[-1]
                for rank, token in enumerate(self.table.get(last, [])[: self.params.branches[depth - 1]]):
                    grown.append((tokens + (token,), keys + ((depth, rank),)))
            if not grown:
                break
            paths = grown + [p for p in paths if p[0] and not any(g[0][:-1] == p[0] for g in grown)]
        return [self.candidate(tokens, keys) for tokens, keys in paths if tokens]

    def observe(self, outcome: StepOutcome) -> None:
        super().observe(outcome)
        for token, successors in outcome.top_tokens.items():
            self.table[token] = successors[: self.params.top_k]
