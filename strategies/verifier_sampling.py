"""``sampling``: multi-draft speculative sampling with deterministic (one-hot) drafts.

The lookahead paper's sampling verification (Fu et al. 2024, Alg. 4) and SpecInfer's
multi-step speculative sampling, specialised to drafts that put all their mass on one token.
"""

from __future__ import annotations

from typing import Literal

import torch

from framework.layout import slot_depths
from strategies.base import StrategyParams, Verdict, Verifier, register


def decide_position(
    target_probs: torch.Tensor,  # [V] float64, the model's law at this position
    candidates: torch.Tensor,  # [k] distinct draft tokens, in the order they are tried
    accept_uniforms: torch.Tensor,  # [n, k] one uniform per candidate and trial
    sample_uniforms: torch.Tensor,  # [n]    one uniform per trial for the fallback sample
) -> tuple[torch.Tensor, torch.Tensor]:  # tokens [n], accepted [n] (bool: a candidate won)
    """``n`` independent runs of one position's accept/reject loop, vectorised over runs.

    Candidate ``j`` is tried only if candidates ``0..j-1`` were rejected; by then the residual
    law is ``target_probs`` with those zeroed, of mass ``1 - sum(target_probs[c_0..c_{j-1}])``,
    so it is accepted iff ``u_j * mass < target_probs[c_j]`` (probability p/mass). The first
    accepted candidate wins; if none is, the token is drawn from ``target_probs`` with every
    candidate zeroed, by inverse CDF with ``sample_uniforms``. (For ``k = 0`` that is plain
    sampling, which is how the bonus token is drawn.)

    Example: target [0.5, 0.3, 0.2], candidates [1, 0], u = [0.9, 0.4], s = 0.7: token 1 is
    rejected (0.9 * 1.0 >= 0.3), token 0 accepted (0.4 * 0.7 < 0.5): returns (0, True).
    """
    runs = sample_uniforms.shape[0]
    choice, sampled, empty = decide_rows(target_probs.expand(runs, -1), candidates.expand(runs, -1),
                                         accept_uniforms, sample_uniforms)
    hit = choice >= 0  # [n]
    if bool((empty & ~hit).any()):
        raise ValueError("the target law has no mass: every score is -inf or NaN")
    if len(candidates) == 0:
        return sampled, hit
    return torch.where(hit, candidates[choice.clamp(min=0)], sampled), hit


def sample_excluding(
    target_probs: torch.Tensor,  # [V]
    excluded: torch.Tensor,  # [k]
    uniforms: torch.Tensor,  # [n]
) -> torch.Tensor:  # [n] tokens
    """Inverse-CDF draws from ``target_probs`` with ``excluded`` zeroed and renormalised
    (``draw_excluding_rows`` for one law)."""
    runs = uniforms.shape[0]
    drawn, empty = draw_excluding_rows(target_probs.expand(runs, -1), excluded.expand(runs, -1), uniforms)
    if bool(empty.any()):
        raise ValueError("the target law has no mass: every score is -inf or NaN")
    return drawn


def first_accepted_rows(
    probs: torch.Tensor,  # [n, V] float64: the law at each row's position
    children: torch.Tensor,  # [n, K] long: each row's candidates in try order, -1 past them
    accept_uniforms: torch.Tensor,  # [n, K]
) -> torch.Tensor:  # [n] index of the accepted candidate, -1 if none
    """Candidate ``j`` of a row is tried only if ``0..j-1`` were rejected; by then the residual
    law has mass ``1 - (the mass of the candidates before it)``, so it is accepted iff
    ``u_j * mass < p(c_j)`` (probability p/mass). The first accepted one wins."""
    if children.shape[1] == 0:  # no row has a candidate
        return torch.full((children.shape[0],), -1, dtype=torch.long, device=children.device)
    valid = children >= 0  # [n, K]
    cand_probs = probs.gather(1, children.clamp(min=0)) * valid  # [n, K], 0 past the candidates
    cumulative = torch.cumsum(cand_probs, 1)
    spent = torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], 1)  # [n, K] mass tried before
    # clamp: rounding can leave 1 - spent a hair below 0 when the candidates hold all the mass
    mass = (1.0 - spent).clamp(min=0.0)
    accept = (accept_uniforms * mass < cand_probs) & (cand_probs > 0)  # [n, K]
    # the first accepted (argmax over uint8: there is no bool argmax), -1 where none is
    return torch.where(accept.any(dim=1), accept.to(torch.uint8).argmax(dim=1), -1)


def draw_excluding_rows(
    probs: torch.Tensor,  # [n, V]
    excluded: torch.Tensor,  # [n, K] long, -1 past each row's tokens
    uniforms: torch.Tensor,  # [n]
) -> tuple[torch.Tensor, torch.Tensor]:  # drawn [n] tokens, empty [n] (the law has no mass)
    """Inverse-CDF draws, one per row, from the row's law with its excluded tokens zeroed.

    Residual guard: if the excluded tokens hold all the mass (total 0), draw from the law itself.
    In exact arithmetic that residual is never sampled (the last candidate holding the remaining
    mass is accepted with probability 1); it is reached only when rounding leaves ``1 - spent`` a
    few ulps above a candidate's probability, an event of probability ~1e-16, so any valid
    fallback changes the output law by at most that. ``empty``: the law itself has no mass.
    """
    # zero the excluded tokens (counted, so a padding index never clears a real one)
    hidden = torch.zeros_like(probs).scatter_add_(1, excluded.clamp(min=0), (excluded >= 0).to(probs.dtype)) > 0
    residual = probs.masked_fill(hidden, 0.0)  # [n, V]
    drained = ~(residual.sum(1) > 0)  # non-negative terms: 0 (or NaN) only if none is positive
    cdf = torch.cumsum(torch.where(drained[:, None], probs, residual), 1)  # [n, V] non-decreasing
    total = cdf[:, -1]  # [n]
    # draw v in [0, total); the first index whose cdf exceeds v has positive probability
    below_total = torch.nextafter(total, torch.zeros_like(total))
    v = torch.minimum(uniforms.to(cdf.dtype) * total, below_total)  # [n]
    return torch.searchsorted(cdf, v[:, None], right=True)[:, 0], ~(total > 0)


def decide_rows(
    probs: torch.Tensor,  # [n, V] float64: the law at each row's position
    children: torch.Tensor,  # [n, K] long: each row's distinct candidates in try order, -1 past them
    accept_uniforms: torch.Tensor,  # [n, K]
    sample_uniforms: torch.Tensor,  # [n]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # choice [n], drawn [n], empty [n]
    """One position's accept/reject loop for each of ``n`` rows at once, all on the device.

    ``choice[r]`` is the index of the candidate row ``r`` accepts (-1: none), ``drawn[r]`` the
    token its fallback draw gives (from the law with every candidate zeroed, read only when no
    candidate wins) and ``empty[r]`` whether its law has no mass at all (an error if reached).
    ``decide_position`` is this with one law and candidate list for every row.
    """
    drawn, empty = draw_excluding_rows(probs, children, sample_uniforms)
    return first_accepted_rows(probs, children, accept_uniforms), drawn, empty


@register("verifier", "sampling")
class SamplingVerifier(Verifier):
    """Commits tokens whose law is exactly that of sampling one token at a time.

    Glossary:
        target_probs  softmax of a row's (already warped) scores in float64: the law of the
                      next token in that row's context.
        accepted      draft tokens kept; at each position the still-alive drafts (those equal
                      to the accepted prefix so far) are tried in row order, one per distinct
                      token: token x is accepted with probability residual(x), where residual
                      starts as target_probs and, after each rejection, has the rejected token
                      zeroed and is renormalised.
        recovered     when every distinct token at a position is rejected: one token drawn
                      from the final residual; the step ends with it.
        bonus         when a draft is accepted to its end: one token drawn from the last
                      accepted row's target_probs.

    Exactness (for one position; induction over positions gives the whole step, and steps
    chain because the next step starts from the committed context). Let p be the target law,
    x_1..x_k the distinct candidates in try order, S_j = p(x_1) + ... + p(x_j). Candidate j is
    tried with probability prod_{i<j} (1 - p(x_i)/(1 - S_{i-1})) = 1 - S_{j-1} and then
    accepted with probability p(x_j)/(1 - S_{j-1}): the step emits x_j with probability
    exactly p(x_j). All are rejected with probability 1 - S_k, and the residual then draws
    y not among them with probability p(y)/(1 - S_k): overall p(y). So the emitted token has
    law p. Given the emitted token x was accepted, the next position's law is computed in the
    context prefix + x, taken from the first alive row (every row sharing the prefix has that
    context); given it was recovered or is the bonus, the step ends. Duplicates are tried once:
    trying a rejected token again would double its acceptance chance. Drafts carry no
    probability of their own (they are one-hot), so no draft law enters the formula; rounding
    in float64 changes the law by ~1e-16 (see ``sample_excluding`` for the one guarded case).

    Example: target after the root [0.5, 0.3, 0.2]; drafts [[1, 2], [0, 2]]. Token 1 (row 0) is
    tried with residual 0.3 and rejected; token 0 (row 1) is tried with residual 0.5/0.7 and
    accepted; position 1 uses row 1's scores and tries token 2, etc.
    Verdict(tokens=(0, 2, 4), row=1, accepted=2) if 2 was accepted and 4 was the bonus token.

    Devices: the walk reads one node's law at a time and syncs with the host per tree level; with
    ``one_pass`` (default: when the scores are on an accelerator) every node's decision is taken
    at once on the scores' device (``decide_rows``) and read back in one transfer, then walked on
    the host: the same table gives the same verdict (tested), at the price of a softmax for every
    node rather than the walked ones (free on a GPU, costly on a CPU). With a generator on the
    scores' device the uniforms are drawn there too (the engine makes one when none is given).

    Randomness: one ``torch.rand((L + 1, g + 1), generator=generator, dtype=float64)`` table
    per call, a fixed budget whatever happens: ``uniforms[t, j]`` is the accept test of the
    j-th distinct candidate at position t, ``uniforms[t, g]`` the recovered or bonus draw at
    position t. Hence the same generator state gives the same verdict. ``verify`` only draws
    the table; ``walk_drafts`` (the step, given a table) and ``decide_position`` (one
    position, batched over independent tables) are pure, so a reference implementation fed the
    same table decides identically (tests/strategies/test_verifier_sampling.py checks this).
    """

    preserves_distribution = True
    samples = True
    walks_tree = True

    class Params(StrategyParams):
        name: Literal["sampling"] = "sampling"
        # decide every tree node in one device pass and one transfer; None: when the scores are
        # on an accelerator (a CPU walks node by node, reading only the walked rows)
        one_pass: bool | None = None

    def verify(self, root_scores, draft_tokens, draft_scores, generator=None) -> Verdict:
        if generator is None:
            raise ValueError(
                "the sampling verifier needs a torch.Generator for reproducible draws; pass "
                "generator=torch.Generator(device).manual_seed(seed)"
            )
        rows, length = draft_tokens.shape
        uniforms = torch.rand(
            (length + 1, rows + 1), generator=generator, device=generator.device, dtype=torch.float64
        ).to(root_scores.device)  # [L+1, g+1]
        return walk_drafts(root_scores, draft_tokens, draft_scores, uniforms)

    def verify_tree(self, root_scores, tree, node_scores, generator=None) -> Verdict:
        """The same rule on a tree of any shape: at each node, sequential rejection over its
        distinct children (in creation order, as the rows of ``verify``); one uniforms table of
        ``(max depth + 1, leaves + 1)`` per call, so a tree built from equal-length drafts draws
        exactly what ``verify`` draws for them."""
        if generator is None:
            raise ValueError(
                "the sampling verifier needs a torch.Generator for reproducible draws; pass "
                "generator=torch.Generator(device).manual_seed(seed)"
            )
        leaves, depth = tree.draft_nodes.shape
        uniforms = torch.rand(
            (depth + 1, leaves + 1), generator=generator, device=generator.device, dtype=torch.float64
        ).to(root_scores.device)  # [L+1, leaves+1]
        one_pass = self.params.one_pass
        if one_pass is None:
            one_pass = root_scores.device.type != "cpu"
        return (walk_tree_at_once if one_pass else walk_tree)(root_scores, tree, node_scores, uniforms)


def walk_drafts(
    root_scores: torch.Tensor,  # [V]
    draft_tokens: torch.Tensor,  # [g, L]
    draft_scores: torch.Tensor,  # [g, L, V]
    uniforms: torch.Tensor,  # [L+1, g+1] float64 in [0, 1)
) -> Verdict:
    """The verifier's step given its uniforms table (layout in ``SamplingVerifier``)."""
    rows, length = draft_tokens.shape
    drafts = draft_tokens.tolist()
    alive = list(range(rows))  # rows equal to the accepted prefix, in row order
    prefix: list[int] = []
    for t in range(length + 1):
        scores = root_scores if t == 0 else draft_scores[alive[0], t - 1]  # [V]
        target_probs = torch.softmax(scores.to(torch.float64), dim=-1)  # [V]
        tried = list(dict.fromkeys(drafts[i][t] for i in alive)) if t < length else []
        candidates = torch.tensor(tried, dtype=torch.long, device=scores.device)  # [k]
        accept_u, sample_u = uniforms[t, None, : len(tried)], uniforms[t, rows, None]  # [1, k], [1]
        token, hit = decide_position(target_probs, candidates, accept_u, sample_u)
        token, hit = token.item(), hit.item()
        if not hit:  # recovered or bonus token: the step ends
            row = alive[0] if prefix else None
            return Verdict(tokens=tuple(prefix + [token]), row=row, accepted=len(prefix))
        prefix.append(token)
        alive = [i for i in alive if drafts[i][t] == token]
    raise AssertionError("unreachable: position L has no candidates")


def walk_tree(
    root_scores: torch.Tensor,  # [V]
    tree,  # framework.layout.DraftTree
    node_scores,  # nodes -> [k, V]
    uniforms: torch.Tensor,  # [L+1, leaves+1] float64 in [0, 1)
) -> Verdict:
    """``walk_drafts`` on a token tree: position t tries the children of the node reached so far."""
    children = tree.children()
    leaves = tree.draft_nodes.shape[0]
    node, path = -1, []
    scores = root_scores
    for t in range(uniforms.shape[0]):
        target_probs = torch.softmax(scores.to(torch.float64), dim=-1)  # [V]
        kids = children.get(node, {})
        candidates = torch.tensor(list(kids), dtype=torch.long, device=scores.device)  # [k]
        accept_u, sample_u = uniforms[t, None, : len(kids)], uniforms[t, leaves, None]  # [1, k], [1]
        token, hit = decide_position(target_probs, candidates, accept_u, sample_u)
        token, hit = token.item(), hit.item()
        if not hit:  # recovered or bonus token: the step ends
            return Verdict.of_walk(tree, path, token)
        node = kids[token]
        path.append(node)
        scores = node_scores([node])[0]
    raise AssertionError("unreachable: the deepest position has no children")


def walk_tree_at_once(
    root_scores: torch.Tensor,  # [V]
    tree,  # framework.layout.DraftTree
    node_scores,  # nodes -> [k, V]
    uniforms: torch.Tensor,  # [L+1, leaves+1] float64 in [0, 1)
) -> Verdict:
    """``walk_tree``'s verdict from every node's decision, taken at once (``decide_rows``) on the
    scores' device and read back in one transfer; the walk over them runs on the host."""
    kids = tree.children()
    leaves = tree.draft_nodes.shape[0]
    nodes = tree.size
    # row r: the root (0) or node r - 1, as in a step's slots; its children are tried at its depth
    depth = slot_depths([-1, *(1 + parent for parent in tree.parents)])
    width = max((len(c) for c in kids.values()), default=0)
    children = [list(kids.get(row - 1, {})) for row in range(1 + nodes)]
    device = root_scores.device
    table = torch.tensor([c + [-1] * (width - len(c)) for c in children], dtype=torch.long)  # [1 + n, K]
    scores = torch.cat([root_scores[None], node_scores(list(range(nodes)))]) if nodes else root_scores[None]
    probs = torch.softmax(scores.to(torch.float64), dim=-1)  # [1 + n, V]
    at = torch.tensor(depth, device=device)
    choice, drawn, empty = decide_rows(probs, table.to(device), uniforms[at, :width], uniforms[at, leaves])
    choice, drawn, empty = torch.stack([choice, drawn, empty.long()]).tolist()  # the one transfer
    row, path = 0, []
    while choice[row] >= 0:
        node = kids[row - 1][children[row][choice[row]]]
        path.append(node)
        row = 1 + node
    if empty[row]:
        raise ValueError("the target law has no mass: every score is -inf or NaN")
    return Verdict.of_walk(tree, path, drawn[row])

