"""The planner: every source's candidates merged into one token tree under the step's budget.

Each candidate token carries the source's estimate that it is accepted given its prefix was
(``Candidate.probs``); a tree node's value is the product along its path, the probability that
verification reaches it (shared prefixes keep the best value). The planner keeps the ``budget``
most valuable nodes: values never grow down a path and ties keep the order the candidates came
in, so the kept nodes always include their parents (a tree). Nodes below ``min_score`` are
dropped before feeding: the multi-stage verification the seed proposes, as an ablation knob.

Example: candidates (5, 6) with probs (0.8, 0.5) and (5, 9) with (0.6, 0.6) from another source,
budget 2: nodes 5 (value 0.8), 6 (0.4), 9 (0.36) -> the tree keeps 5 and 6.
"""

from __future__ import annotations

from typing import Sequence

from framework.layout import DraftTree, tree_from_nodes
from strategies.base import Candidate


def plan_tree(candidates: Sequence[Candidate], budget: int | None, min_score: float = 0.0,
              max_len: int | None = None) -> DraftTree:
    """The draft tree of the ``budget`` best nodes (None: all) of ``candidates``, each cut to ``max_len``."""
    index: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
    tokens, parents, values, tags = [], [], [], []  # per trie node, in creation order
    for candidate in candidates:
        value, parent = 1.0, -1
        for depth, (token, prob) in enumerate(zip(candidate.tokens[:max_len], candidate.probs)):
            value *= prob
            node = index.get((parent, token))
            if node is None:
                node = index[parent, token] = len(tokens)
                tokens.append(token)
                parents.append(parent)
                values.append(-1.0)
                tags.append(None)
            if value > values[node]:
                values[node] = value
                tags[node] = (candidate.source, candidate.keys[depth], candidate.origin)
            parent = node
    if budget is None or budget >= len(tokens):
        chosen = {n for n in range(len(tokens)) if values[n] >= min_score}
    else:  # the budget best; sorted() is stable, so ties keep creation order
        ranked = sorted(range(len(tokens)), key=values.__getitem__, reverse=True)
        chosen = {n for n in ranked[:budget] if values[n] >= min_score}
    kept: list[int] = []
    kept_set: set[int] = set()
    for node in range(len(tokens)):  # creation order: parents first, so a dropped parent drops its subtree
        if node in chosen and (parents[node] < 0 or parents[node] in kept_set):
            kept.append(node)
            kept_set.add(node)
    renumber = {node: i for i, node in enumerate(kept)}
    return tree_from_nodes(
        [tokens[n] for n in kept], [renumber[parents[n]] if parents[n] >= 0 else -1 for n in kept],
        sources=[tags[n][0] for n in kept], keys=[tags[n][1] for n in kept], origins=[tags[n][2] for n in kept],
        values=[values[n] for n in kept],
    )
