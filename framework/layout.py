"""The token layout of one lookahead step: which slot is which token, where it sits, what it sees.

One step feeds ``1 + n + levels*width`` tokens in this order::

    slot 0                  the root: the current (last committed) token, depth 0
    slots 1 .. n            the verification branch: the drafts merged into a token tree (a trie:
                            drafts sharing a prefix share its slots), node k at slot 1 + k with
                            parent = its prefix's node (the root for a first token), depth = its
                            index in the draft + 1
    then levels*width slots the lookahead branch, level-major: level l column j at depth
                            1 + j + l, parent = (l-1, j) for l > 0, (0, j-1) for l = 0 and
                            j > 0, the root for (0, 0)

A token sees the whole cached prefix, itself and its ancestors (the ancestor, or tree, mask), and
its position id is ``past_length + depth``. So a draft reads as a continuation of the root, level
0 of the window reads as one chain root -> (0,0) -> (0,1) -> ..., and column j above level 0 reads
as that chain cut at column j and continued upwards: level l of column j guesses the token at
depth 1 + j + l. The two branches never see each other. docs/design.md draws a worked example.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import torch


@dataclass(frozen=True)
class DraftTree:
    """Drafts merged by shared prefixes (a trie); parents always precede their children.

    Example: drafts (5, 6, 7), (5, 6, 9), (8, 1) -> nodes 5 6 7 9 8 1 with parents
    -1 0 1 1 -1 4; ``rows`` (one per leaf) = ((0, 1, 2), (0, 1, 3), (4, 5)), ``draft_nodes`` the
    same padded with -1: [[0, 1, 2], [0, 1, 3], [4, 5, -1]]. ``sources``/``keys`` say which
    candidate each node came from (attribution).
    """

    tokens: tuple[int, ...]  # [n] token of each node
    parents: tuple[int, ...]  # [n] parent node, -1 for the root
    rows: tuple[tuple[int, ...], ...]  # [g][<= L] the nodes of leaf path i, root first
    sources: tuple[str, ...] = ()  # [n] the source of the candidate that placed each node
    keys: tuple = ()  # [n] that candidate's statistic key for the node
    origins: tuple[str, ...] = ()  # [n] finer provenance (e.g. an n-gram's harvest tag)
    values: tuple[float, ...] = ()  # [n] the planner's estimate that verification reaches the node

    @property
    def size(self) -> int:
        return len(self.tokens)

    @cached_property
    def draft_nodes(self) -> torch.Tensor:  # [g, L] node of leaf path i's token t, -1 past the path's end
        """``rows`` as a tensor (built when first read: the greedy step's host path never does)."""
        length = max(map(len, self.rows), default=0)
        padded = [row + (-1,) * (length - len(row)) for row in self.rows]
        return torch.tensor(padded, dtype=torch.long).reshape(len(self.rows), length)

    def row_through(self, path: list[int] | tuple[int, ...]) -> int | None:
        """The first ``draft_nodes`` row that starts with the node path ``path`` (None if empty)."""
        if not path:
            return None
        depth, node = len(path) - 1, path[-1]
        return next(i for i, row in enumerate(self.rows) if len(row) > depth and row[depth] == node)

    def children(self) -> dict[int, dict[int, int]]:
        """parent node (-1: the root) -> {token: child node}, children in creation order."""
        table: dict[int, dict[int, int]] = {}
        for node, (token, parent) in enumerate(zip(self.tokens, self.parents)):
            table.setdefault(parent, {}).setdefault(token, node)
        return table


def likely_below(tree: DraftTree, node: int, count: int) -> list[int]:
    """The ``count`` nodes under ``node`` (-1: the root, i.e. the whole tree) most likely to be read
    next: by the planner's value (the estimate that verification reaches them), ties and trees
    without values in creation order. Rows worth projecting along with ``node``'s own.

    Example: nodes 5 6 7 9 with parents -1 0 1 1 and values 0.8 0.4 0.1 0.3:
    likely_below(tree, 0, 2) -> [1, 3] (6 at 0.4, then 9 at 0.3); likely_below(tree, -1, 1) -> [0].
    """
    if count <= 0:
        return []
    below = {node}
    for child, parent in enumerate(tree.parents):  # parents precede children: one pass finds the subtree
        if parent in below:
            below.add(child)
    below.discard(node)
    if not tree.values:
        return sorted(below)[:count]
    return sorted(below, key=lambda n: -tree.values[n])[:count]  # stable: ties in creation order


def tree_from_nodes(tokens: list[int], parents: list[int], **tags) -> DraftTree:
    """A ``DraftTree`` from nodes in parents-first order, with its leaf paths."""
    paths: list[tuple[int, ...]] = []  # each node's path from the root: its parent's, then itself
    for node, parent in enumerate(parents):
        paths.append((paths[parent] if parent >= 0 else ()) + (node,))
    has_child = set(parents)
    rows = tuple(path for node, path in enumerate(paths) if node not in has_child)
    return DraftTree(tuple(tokens), tuple(parents), rows, **{k: tuple(v) for k, v in tags.items()})


def build_draft_tree(drafts: list[tuple[int, ...]]) -> DraftTree:
    """Merge drafts into a trie, in order; equal-length drafts give ``draft_nodes`` row i = draft i."""
    index: dict[tuple[int, ...], int] = {}
    tokens: list[int] = []
    parents: list[int] = []
    rows = []
    for draft in drafts:
        row = []
        for t in range(len(draft)):
            prefix = draft[: t + 1]
            node = index.get(prefix)
            if node is None:
                node = index[prefix] = len(tokens)
                tokens.append(draft[t])
                parents.append(row[-1] if row else -1)
            row.append(node)
        rows.append(row)
    return DraftTree(tuple(tokens), tuple(parents), tuple(map(tuple, rows)))


@dataclass(frozen=True, eq=False)  # holds arrays: compared and hashed by identity
class StepLayout:
    width: int  # window columns fed (W for this step)
    levels: int  # window levels fed (<= N-1; fewer while the window fills)
    draft_nodes: int  # n, token-tree nodes of the verification branch
    parents: tuple[int, ...]  # [q] parent slot of each slot, -1 for the root
    depth_list: tuple[int, ...]  # [q] depth below the root (position = past_length + depth)
    depth_array: np.ndarray  # [q] int64, the same depths (the step's inputs are built in NumPy)
    mask_array: np.ndarray  # [q, q] bool, True where slot i may attend to slot j

    @property
    def size(self) -> int:
        return len(self.parents)

    @property
    def depths(self) -> torch.Tensor:  # [q] long, a view of depth_array
        return torch.from_numpy(self.depth_array)

    @property
    def tree_mask(self) -> torch.Tensor:  # [q, q] bool, a view of mask_array
        return torch.from_numpy(self.mask_array)

    @property
    def window_start(self) -> int:
        return 1 + self.draft_nodes

    def node_slot(self, node: int) -> int:
        return 1 + node

    def window_slot(self, level: int, column: int) -> int:
        return self.window_start + level * self.width + column

    def last_level_slots(self) -> range:
        """Slots of the window's top level, whose outputs form the next level."""
        start = self.window_slot(self.levels - 1, 0)
        return range(start, start + self.width) if self.levels else range(0)


def layout_parents(width: int, levels: int, node_parents: tuple[int, ...]) -> list[int]:
    """Parent slot of every slot (-1 for the root), in the order described in the module doc."""
    parents = [-1] + [1 + p if p >= 0 else 0 for p in node_parents]
    window_start = len(parents)
    for level in range(levels):
        for column in range(width):
            if level > 0:
                parents.append(window_start + (level - 1) * width + column)
            elif column > 0:
                parents.append(window_start + column - 1)
            else:
                parents.append(0)
    return parents


def ancestor_mask(parents: list[int] | tuple[int, ...]) -> torch.Tensor:  # [q, q] bool
    """Row i is True at i and at every ancestor of i. Parents must precede their children.

    Each slot's row is its parent's row plus itself (a step's bookkeeping, not model work)."""
    return torch.from_numpy(_ancestor_array(parents))


def _ancestor_array(parents: list[int] | tuple[int, ...]) -> np.ndarray:  # [q, q] bool
    # each row a byte-slice copy of its parent's in one buffer that NumPy views once: no Python
    # path per slot and no index list per pair (a pool-fed tree brings a new shape often)
    size = len(parents)
    flat = bytearray(size * size)  # zeros; row i at [i * size, (i + 1) * size)
    for slot, parent in enumerate(parents):
        if parent >= slot:
            raise ValueError(f"slot {slot} has parent {parent}: parents must come first")
        row = slot * size
        if parent >= 0:
            flat[row : row + size] = flat[parent * size : parent * size + size]
        flat[row + slot] = 1
    return np.frombuffer(flat, dtype=bool).reshape(size, size)


@lru_cache(maxsize=64)
def window_part(width: int, levels: int) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray]:
    """The lookahead branch alone after the root (slot 0 here, the window from slot 1): parents,
    depths and ancestor mask ``# [1 + W*L, 1 + W*L]``. The same every step of a shape, so built
    once; ``step_layout`` places it after the draft tree."""
    parents = layout_parents(width, levels, ())
    return tuple(parents), tuple(slot_depths(parents)), _ancestor_array(parents)


def slot_depths(parents: list[int]) -> list[int]:
    """Depth of each slot below the root (slot 0), given parents that precede their children."""
    depths = [0] * len(parents)
    for slot, parent in enumerate(parents):
        depths[slot] = 0 if parent < 0 else depths[parent] + 1
    return depths


@lru_cache(maxsize=1024)
def step_layout(width: int, levels: int, node_parents: tuple[int, ...] = ()) -> StepLayout:
    """The layout of a step with this shape (cached per shape).

    ``node_parents``: the draft tree's parent of each node (-1: the root), see ``DraftTree``.
    The draft tree's block is built per tree, the window's comes from ``window_part``.
    """
    if width < 0 or levels < 0:
        raise ValueError("layout sizes must be >= 0")
    if levels == 0 or width == 0:
        width, levels = 0, 0
    tree_parents = [-1] + [1 + p if p >= 0 else 0 for p in node_parents]
    start = len(tree_parents)  # the window's first slot
    window_parents, window_depths, window_mask = window_part(width, levels)
    parents = tree_parents + [start + p - 1 if p > 0 else 0 for p in window_parents[1:]]
    mask = np.zeros((len(parents), len(parents)), dtype=bool)
    mask[:start, :start] = _ancestor_array(tree_parents)
    mask[start:, 0] = window_mask[1:, 0]
    mask[start:, start:] = window_mask[1:, 1:]
    depths = slot_depths(tree_parents) + list(window_depths[1:])
    depth_array = np.array(depths, dtype=np.int64)
    return StepLayout(
        width=width,
        levels=levels,
        draft_nodes=len(node_parents),
        parents=tuple(parents),
        depth_list=tuple(depths),
        depth_array=depth_array,
        mask_array=mask,
    )


def chain_parents(drafts: int, draft_len: int) -> tuple[int, ...]:
    """Node parents of ``drafts`` unmerged drafts of ``draft_len`` tokens (no shared prefixes)."""
    return tuple(-1 if t == 0 else i * draft_len + t - 1 for i in range(drafts) for t in range(draft_len))
