import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from framework.attention import sliding_window_limit, tree_attention_mask
from framework.layout import ancestor_mask, build_draft_tree, chain_parents, layout_parents, step_layout, \
    tree_from_nodes


def test_hand_written_layout_w3_n3_g2():
    """docs/design.md's worked example: W=3, N=3 (2 levels), G=2 drafts of 2 tokens."""
    layout = step_layout(3, 2, chain_parents(2, 2))
    #             root d0t0 d0t1 d1t0 d1t1 (0,0) (0,1) (0,2) (1,0) (1,1) (1,2)
    assert layout.parents == (-1, 0, 1, 0, 3, 0, 5, 6, 5, 6, 7)
    assert layout.depths.tolist() == list(layout.depth_list) == [0, 1, 2, 1, 2, 1, 2, 3, 2, 3, 4]
    visible = {
        0: {0}, 1: {0, 1}, 2: {0, 1, 2}, 3: {0, 3}, 4: {0, 3, 4},
        5: {0, 5}, 6: {0, 5, 6}, 7: {0, 5, 6, 7},
        8: {0, 5, 8}, 9: {0, 5, 6, 9}, 10: {0, 5, 6, 7, 10},
    }
    expected = torch.zeros(11, 11, dtype=torch.bool)
    for row, cols in visible.items():
        expected[row, sorted(cols)] = True
    assert torch.equal(layout.tree_mask, expected)
    assert layout.window_start == 5
    assert list(layout.last_level_slots()) == [8, 9, 10]
    assert layout.node_slot(3) == 4
    assert layout.window_slot(1, 2) == 10


def test_branches_never_see_each_other():
    layout = step_layout(4, 3, chain_parents(3, 3))
    drafts = slice(1, layout.window_start)
    window = slice(layout.window_start, layout.size)
    assert not layout.tree_mask[drafts, window].any()
    assert not layout.tree_mask[window, drafts].any()
    # different drafts don't see each other either
    assert not layout.tree_mask[layout.node_slot(2), layout.node_slot(3)]


def test_empty_branches_collapse_to_the_root():
    assert step_layout(0, 0).size == 1
    assert step_layout(5, 0).size == 1  # no levels: no window; no drafts
    assert step_layout(0, 3).size == 1


def test_mask_rows_are_a_causal_chain_of_positions():
    """Along any ancestor path positions increase by one: every visible tree token of row i has a
    distinct depth below row i's, so the path reads as a contiguous causal sequence."""
    layout = step_layout(5, 4, build_draft_tree([(1, 2, 3, 4), (1, 2, 5, 6), (7, 8, 9, 9)]).parents)
    for row in range(layout.size):
        seen = layout.depths[layout.tree_mask[row]].tolist()
        assert sorted(seen) == list(range(int(layout.depths[row]) + 1))


def test_prefix_and_sliding_window_masks():
    layout = step_layout(2, 2, chain_parents(1, 2))
    allowed = tree_attention_mask(layout, past_length=5)
    assert allowed.shape == (layout.size, 5 + layout.size)
    assert allowed[:, :5].all()
    sliding = sliding_window_limit(allowed, layout, past_length=5, window=3)
    # the root sits at position 5: with window 3 it sees positions 3, 4 and itself
    assert sliding[0, :5].tolist() == [False, False, False, True, True]
    assert sliding[0, 5]


def test_ancestor_mask_rejects_forward_parents():
    with pytest.raises(ValueError, match="parents must come first"):
        ancestor_mask([-1, 2, 0])


def test_draft_tree_shares_prefixes():
    tree = build_draft_tree([(5, 6, 7), (5, 6, 9), (8, 1, 2)])
    assert tree.tokens == (5, 6, 7, 9, 8, 1, 2)
    assert tree.parents == (-1, 0, 1, 1, -1, 4, 5)
    assert tree.draft_nodes.tolist() == [[0, 1, 2], [0, 1, 3], [4, 5, 6]]
    layout = step_layout(0, 0, tree.parents)
    # node 3 (token 9) sees the root, 5, 6 and itself, not its sibling 7
    assert layout.tree_mask[layout.node_slot(3)].nonzero().flatten().tolist() == [0, 1, 2, 4]
    assert layout.depths.tolist() == [0, 1, 2, 3, 3, 1, 2, 3]


def test_leaf_rows_pad_into_draft_nodes_and_find_the_row_through_a_path():
    """A ragged tree: ``rows`` are the leaf paths, ``draft_nodes`` the same padded with -1, and
    ``row_through`` is the first row holding the path's last node at its depth (the tensor search
    it replaced)."""
    tree = build_draft_tree([(5, 6, 7), (5, 6, 9), (8, 1)])
    assert tree.rows == ((0, 1, 2), (0, 1, 3), (4, 5))
    assert tree.draft_nodes.tolist() == [[0, 1, 2], [0, 1, 3], [4, 5, -1]]
    assert tree_from_nodes(list(tree.tokens), list(tree.parents)).rows == tree.rows
    assert tree.row_through([]) is None
    for row in tree.draft_nodes.tolist():
        for depth in range(len(row)):
            path = row[: depth + 1]
            if path[-1] < 0:
                continue
            expected = int((tree.draft_nodes[:, depth] == path[-1]).nonzero()[0])
            assert tree.row_through(path) == expected
    assert [tree.row_through(p) for p in ([0], [0, 1, 3], [4, 5])] == [0, 1, 2]


def test_empty_draft_tree():
    tree = build_draft_tree([])
    assert tree.size == 0 and tree.draft_nodes.shape == (0, 0)


def reference_layout(layout) -> tuple[torch.Tensor, list[int]]:
    """Ancestor mask and depths by walking each slot's parents up to the root."""
    mask = torch.zeros(layout.size, layout.size, dtype=torch.bool)
    depths = []
    for slot in range(layout.size):
        node, depth = slot, 0
        while node >= 0:
            mask[slot, node] = True
            node, depth = layout.parents[node], depth + 1
        depths.append(depth - 1)
    return mask, depths


@given(drafts=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=5), max_size=8),
       width=st.integers(0, 6), levels=st.integers(0, 4))
@settings(max_examples=60, deadline=None)
def test_layout_mask_and_depths_match_a_walk_up_the_parents(drafts, width, levels):
    """The draft tree's block built per tree and the window's cached block, placed together,
    equal the ancestor relation of the whole step's parents."""
    tree = build_draft_tree([tuple(d) for d in drafts])
    layout = step_layout(width, levels, tree.parents)
    assert layout.parents == tuple(layout_parents(layout.width, layout.levels, tree.parents))  # one pass, in order
    mask, depths = reference_layout(layout)
    assert torch.equal(layout.tree_mask, mask)
    assert layout.depths.tolist() == list(layout.depth_list) == depths
    assert layout.size == 1 + layout.draft_nodes + layout.width * layout.levels


def test_likely_below_ranks_a_subtree_by_value_and_ties_by_creation():
    from framework.layout import likely_below, tree_from_nodes

    tree = tree_from_nodes([5, 6, 7, 9, 8], [-1, 0, 1, 1, -1], values=[0.8, 0.4, 0.1, 0.3, 0.3])
    assert likely_below(tree, 0, 2) == [1, 3]  # 6 (0.4), then 9 (0.3); 8 is not below 5
    assert likely_below(tree, -1, 3) == [0, 1, 3]  # 9 before 8 at 0.3: created first
    assert likely_below(tree, 1, 5) == [3, 2]
    assert likely_below(tree, 2, 3) == [] and likely_below(tree, 0, 0) == []
    plain = tree_from_nodes([5, 6, 7], [-1, 0, -1])  # no values: creation order
    assert likely_below(plain, -1, 2) == [0, 1]
