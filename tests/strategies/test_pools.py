"""Every registered pool policy: capacity, eviction order, ranking, feedback, prompt seeding."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from framework import LookaheadConfig, LookaheadEngine
from strategies import lookup, parse_params, registered

POOLS = sorted(registered("pool"))


def takes_capacity(name) -> bool:
    return lookup("pool", name).Params.model_fields["capacity"].annotation is not type(None)


def make(name, capacity=None, guess_set=3, ngram=3):
    block = {"name": name, "capacity": capacity} if takes_capacity(name) else {"name": name}
    params = parse_params("pool", block)
    return lookup("pool", name)(params, ngram=ngram, guess_set=guess_set)


@pytest.mark.parametrize("name", POOLS)
@given(ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 9), st.integers(0, 9)), max_size=60),
       capacity=st.none() | st.integers(1, 5), limit=st.integers(0, 6))
def test_capacity_is_never_exceeded_and_offers_are_bounded(name, ops, capacity, limit):
    pool = make(name, capacity)
    for key, a, b in ops:
        pool.add(key, (a, b), "lookahead")
        if pool.bounded:
            assert len(pool.drafts_for(key)) <= pool.capacity
        offered = pool.offer(key, limit)
        assert len(offered) <= limit
        assert len({d for d, _ in offered}) == len(offered)
        assert all(d in pool.drafts_for(key) for d, _ in offered)


def test_default_capacity_is_the_guess_set():
    assert make("lru", None, guess_set=7).capacity == 7
    assert make("lru", 64, guess_set=7).capacity == 64


def fill(pool, drafts):
    for d in drafts:
        pool.add(1, d, "lookahead")


def test_lru_evicts_least_recently_used_and_refreshes_on_re_add():
    pool = make("lru", capacity=2)
    fill(pool, [(1, 1), (2, 2)])
    pool.add(1, (1, 1), "lookahead")  # refresh (1, 1)
    pool.add(1, (3, 3), "lookahead")  # evicts (2, 2)
    assert set(pool.drafts_for(1)) == {(1, 1), (3, 3)}
    assert [d for d, _ in pool.offer(1, 2)] == [(3, 3), (1, 1)]


def test_fifo_evicts_first_inserted_even_if_re_added():
    pool = make("fifo", capacity=2)
    fill(pool, [(1, 1), (2, 2)])
    pool.add(1, (1, 1), "lookahead")  # no refresh
    pool.add(1, (3, 3), "lookahead")
    assert set(pool.drafts_for(1)) == {(2, 2), (3, 3)}


def test_lfu_evicts_fewest_hits_and_offers_most_hits_first():
    pool = make("lfu", capacity=2)
    fill(pool, [(1, 1), (2, 2)])
    pool.feedback(1, (1, 1), accepted=2)
    pool.add(1, (3, 3), "lookahead")  # evicts (2, 2): no hits
    assert set(pool.drafts_for(1)) == {(1, 1), (3, 3)}
    assert pool.offer(1, 1)[0][0] == (1, 1)


def test_feedback_with_nothing_accepted_changes_nothing():
    pool = make("lfu", capacity=2)
    fill(pool, [(1, 1), (2, 2)])
    pool.feedback(1, (1, 1), accepted=0)
    pool.feedback(1, None, accepted=0)
    pool.add(1, (3, 3), "lookahead")
    assert set(pool.drafts_for(1)) == {(2, 2), (3, 3)}


def test_unbounded_keeps_everything_but_offers_at_most_the_limit():
    pool = make("unbounded", guess_set=2)
    fill(pool, [(i, i) for i in range(10)])
    assert len(pool.drafts_for(1)) == 10
    assert len(pool.offer(1, 2)) == 2


def test_sources_are_kept_and_reset_forgets():
    pool = make("lru", capacity=4)
    pool.add(1, (1, 2), "prompt")
    pool.add(1, (1, 2), "lookahead")  # the first source sticks
    assert pool.offer(1, 4) == [((1, 2), "prompt")]
    pool.reset()
    assert len(pool) == 0 and pool.offer(1, 4) == []


@pytest.mark.parametrize("name", POOLS)
def test_prompt_seeding_offers_prompt_ngrams_on_the_first_step(name):
    from tests.tiny_models import tiny_model

    model = tiny_model("llama")
    prompt = torch.tensor([[3, 4, 5, 6, 3]])  # key 3 -> draft (4, 5, 6) from the prompt
    engine = LookaheadEngine(model, LookaheadConfig(window=0, ngram=4, guess_set=2, pool={"name": name}, sources=["ngram"]))
    out = engine.generate(prompt, max_new_tokens=4)
    assert out.stats.drafts[0] == 1
    assert ((4, 5, 6), "prompt") in engine.pool.offer(3, 8)
    unseeded = LookaheadEngine(
        model, LookaheadConfig(window=0, ngram=4, guess_set=2, harvest_output=False, sources=["ngram"],
                               pool={"name": name, "seed_from_prompt": False}))
    assert unseeded.generate(prompt, max_new_tokens=4).stats.drafts[0] == 0


@given(ops=st.lists(st.tuples(st.sampled_from(["add", "win", "offer"]), st.integers(0, 1), st.integers(0, 2),
                              st.integers(0, 1)), max_size=80),
       capacity=st.integers(1, 4), limit=st.integers(0, 5))
@example(ops=[("add", 0, 1, 1), ("add", 0, 2, 1), ("win", 0, 1, 1), ("add", 0, 0, 0), ("add", 0, 2, 0)],
         capacity=3, limit=3)  # a win reorders the offer and decides the next victim
def test_lru_in_use_order_chooses_what_the_generic_scan_and_sort_choose(ops, capacity, limit):
    """LRU keeps entries in use order (victim first, offer reversed); the base class's scan for
    the least used and sort by use, on the same operations, evict and offer the same."""
    from strategies.pool_lru import LRUPool

    class ScannedLRU(LRUPool):
        use_ordered = False

    fast = make("lru", capacity)
    slow = ScannedLRU(fast.params, ngram=3, guess_set=3)
    for op, key, a, b in ops:
        if op == "add":
            fast.add(key, (a, b), "lookahead")
            slow.add(key, (a, b), "lookahead")
        elif op == "win":
            fast.feedback(key, (a, b), 1)
            slow.feedback(key, (a, b), 1)
        assert fast.offer(key, limit) == slow.offer(key, limit)
        assert set(fast.drafts_for(key)) == set(slow.drafts_for(key))
