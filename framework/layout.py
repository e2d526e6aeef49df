"""The token layout of one lookahead step: which slot is which token, where it sits, what it sees.

One step feeds ``1 + g*L + levels*width`` tokens in this order::

    slot 0                      the root: the current (last committed) token, depth 0
    slots 1 .. g*L              the verification branch: draft i token t at slot 1 + i*L + t,
                                depth t + 1, parent = draft i token t-1 (token 0: the root)
    then levels*width slots     the lookahead branch, level-major: level l column j at
                                depth 1 + j + l, parent = (l-1, j) for l > 0, (0, j-1) for l = 0
                                and j > 0, the root for (0, 0)

A token sees the whole cached prefix, itself and its ancestors (the ancestor, or tree, mask), and
its position id is ``past_length + depth``. So a draft reads as a continuation of the root, level
0 of the window reads as one chain root -> (0,0) -> (0,1) -> ..., and column j above level 0 reads
as that chain cut at column j and continued upwards: level l of column j guesses the token at
depth 1 + j + l. The two branches never see each other. docs/design.md draws a worked example.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class StepLayout:
    width: int  # window columns fed (W for this step)
    levels: int  # window levels fed (<= N-1; fewer while the window fills)
    drafts: int  # g, drafts fed
    draft_len: int  # L, tokens per draft
    parents: tuple[int, ...]  # [q] parent slot of each slot, -1 for the root
    depths: torch.Tensor  # [q] depth below the root (position = past_length + depth)
    tree_mask: torch.Tensor  # [q, q] bool, True where slot i may attend to slot j

    @property
    def size(self) -> int:
        return len(self.parents)

    @property
    def draft_start(self) -> int:
        return 1

    @property
    def window_start(self) -> int:
        return 1 + self.drafts * self.draft_len

    def draft_slot(self, draft: int, token: int) -> int:
        return 1 + draft * self.draft_len + token

    def window_slot(self, level: int, column: int) -> int:
        return self.window_start + level * self.width + column

    def last_level_slots(self) -> range:
        """Slots of the window's top level, whose outputs form the next level."""
        start = self.window_slot(self.levels - 1, 0)
        return range(start, start + self.width) if self.levels else range(0)


def layout_parents(width: int, levels: int, drafts: int, draft_len: int) -> list[int]:
    """Parent slot of every slot (-1 for the root), in the order described in the module doc."""
    parents = [-1]
    for i in range(drafts):
        for t in range(draft_len):
            parents.append(0 if t == 0 else 1 + i * draft_len + t - 1)
    window_start = 1 + drafts * draft_len
    for level in range(levels):
        for column in range(width):
            if level > 0:
                parents.append(window_start + (level - 1) * width + column)
            elif column > 0:
                parents.append(window_start + column - 1)
            else:
                parents.append(0)
    return parents


def ancestor_mask(parents: list[int]) -> torch.Tensor:  # [q, q] bool
    """Row i is True at i and at every ancestor of i. Parents must precede their children."""
    size = len(parents)
    mask = torch.zeros(size, size, dtype=torch.bool)
    for slot, parent in enumerate(parents):
        if parent >= slot:
            raise ValueError(f"slot {slot} has parent {parent}: parents must come first")
        if parent >= 0:
            mask[slot] = mask[parent]
        mask[slot, slot] = True
    return mask


def depths_from_parents(parents: list[int]) -> torch.Tensor:  # [q] int64
    depths = [0] * len(parents)
    for slot, parent in enumerate(parents):
        depths[slot] = 0 if parent < 0 else depths[parent] + 1
    return torch.tensor(depths, dtype=torch.long)


@lru_cache(maxsize=256)
def step_layout(width: int, levels: int, drafts: int, draft_len: int) -> StepLayout:
    """The layout of a step with this shape; built once per shape and cached."""
    if min(width, levels, drafts, draft_len) < 0:
        raise ValueError("layout sizes must be >= 0")
    if levels == 0:
        width = 0
    if width == 0:
        levels = 0
    if drafts == 0 or draft_len == 0:
        drafts, draft_len = 0, 0
    parents = layout_parents(width, levels, drafts, draft_len)
    return StepLayout(
        width=width,
        levels=levels,
        drafts=drafts,
        draft_len=draft_len,
        parents=tuple(parents),
        depths=depths_from_parents(parents),
        tree_mask=ancestor_mask(parents),
    )
