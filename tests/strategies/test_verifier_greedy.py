"""The greedy verifier at the extremes, with stub scores."""

import torch

from strategies.verifier_greedy import GreedyVerifier, greedy_accept_lengths

V = 10


def one_hot_scores(choices):  # [..., V] scores whose argmax is `choices`
    choices = torch.as_tensor(choices)
    scores = torch.zeros(*choices.shape, V)
    scores.scatter_(-1, choices[..., None], 1.0)
    return scores


def verify(root_choice, drafts, choices):
    verifier = GreedyVerifier(GreedyVerifier.Params())
    drafts = torch.tensor(drafts, dtype=torch.long).reshape(len(drafts), -1)
    draft_scores = one_hot_scores(choices).reshape(drafts.shape[0], drafts.shape[1], V)
    return verifier.verify(one_hot_scores(root_choice), drafts, draft_scores)


def test_nothing_accepted_gives_the_root_choice():
    verdict = verify(4, [[5, 6, 7], [8, 9, 1]], [[6, 7, 2], [9, 1, 3]])
    assert verdict.tokens == (4,) and verdict.row is None and verdict.accepted == 0


def test_full_match_keeps_its_bonus_token():
    verdict = verify(5, [[8, 9, 1], [5, 6, 7]], [[0, 0, 0], [6, 7, 3]])
    assert verdict.tokens == (5, 6, 7, 3) and verdict.row == 1 and verdict.accepted == 3


def test_partial_match_takes_the_longest_draft():
    verdict = verify(5, [[5, 9, 9], [5, 6, 9]], [[6, 0, 0], [6, 7, 0]])
    assert verdict.tokens == (5, 6, 7) and verdict.row == 1 and verdict.accepted == 2


def test_ties_go_to_the_first_draft():
    verdict = verify(5, [[5, 1, 1], [5, 2, 2]], [[8, 0, 0], [9, 0, 0]])
    assert verdict.row == 0 and verdict.tokens == (5, 8)


def test_no_drafts():
    verifier = GreedyVerifier(GreedyVerifier.Params())
    verdict = verifier.verify(one_hot_scores(3), torch.empty(0, 0, dtype=torch.long), torch.empty(0, 0, V))
    assert verdict.tokens == (3,)


def test_accept_lengths_stop_at_the_first_disagreement():
    lengths = greedy_accept_lengths(
        torch.tensor(1),
        torch.tensor([[1, 2, 3], [1, 9, 3], [2, 2, 3]]),
        torch.tensor([[2, 3, 0], [2, 3, 0], [2, 3, 0]]),
    )
    assert lengths.tolist() == [3, 1, 0]
