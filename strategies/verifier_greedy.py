"""``greedy``: accept the longest draft prefix equal to the model's own argmax choices, plus the
bonus token (the argmax after that prefix). Exact for greedy decoding: every committed token is
the argmax the model gives in the committed context.

Example: root argmax 5; draft [5, 9, 2] whose rows' argmaxes are [9, 4, ...]: tokens 5 and 9
agree, 2 != 4, so the step commits (5, 9, 4): accepted 2, bonus 4.
"""

from typing import Literal

import torch

from framework.argmax import argmax_list, argmax_rows
from strategies.base import StrategyParams, Verdict, Verifier, register


def greedy_accept_lengths(
    root_choice: torch.Tensor,  # []      argmax after the root
    draft_tokens: torch.Tensor,  # [g, L]
    draft_choices: torch.Tensor,  # [g, L]  argmax after each draft token
) -> torch.Tensor:  # [g] accepted prefix length per draft
    """Length of the longest prefix of each draft that matches the greedy choices."""
    g, length = draft_tokens.shape
    # the choice that draft token t must equal: root's for t=0, else the row of token t-1
    expected = torch.cat([root_choice.expand(g, 1), draft_choices[:, : length - 1]], dim=1)  # [g, L]
    agree = (draft_tokens == expected).to(torch.int64)
    return agree.cumprod(dim=1).sum(dim=1)


@register("verifier", "greedy")
class GreedyVerifier(Verifier):
    preserves_distribution = False
    walks_tree = True
    takes_choices = True

    class Params(StrategyParams):
        name: Literal["greedy"] = "greedy"

    def verify(self, root_scores, draft_tokens, draft_scores, generator=None) -> Verdict:
        root_choice = root_scores.argmax(dim=-1)
        if draft_tokens.shape[0] == 0 or draft_tokens.shape[1] == 0:
            return Verdict(tokens=(int(root_choice),), row=None, accepted=0)
        draft_choices = draft_scores.argmax(dim=-1)  # [g, L]
        lengths = greedy_accept_lengths(root_choice, draft_tokens, draft_choices)
        row = int(lengths.argmax())  # first draft among the longest
        accepted = int(lengths[row])
        if accepted == 0:
            return Verdict(tokens=(int(root_choice),), row=None, accepted=0)
        tokens = draft_tokens[row, :accepted].tolist() + [int(draft_choices[row, accepted - 1])]
        return Verdict(tokens=tuple(tokens), row=row, accepted=accepted)

    def verify_tree(self, root_scores, tree, node_scores, generator=None, choices=None) -> Verdict:
        """Walk down the draft tree along the argmax: reads one node row per accepted token."""
        if choices is None:
            def choices(nodes):  # the argmax of each node's scores
                return argmax_list(node_scores(nodes))
            root_choice = int(argmax_rows(root_scores))
        else:
            root_choice = choices([-1])[0]
        children = tree.children()
        choice, node, path = root_choice, -1, []
        while (child := children.get(node, {}).get(choice)) is not None:
            path.append(child)
            node = child
            choice = choices([node])[0]
        return Verdict.of_walk(tree, path, choice)
