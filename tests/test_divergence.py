"""Divergence of a candidate's answers from its baseline's, from top-k log-probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import entropy

from evalsvc.stats.divergence import Token, compare_answers, topk_kl

VOCAB = [f"t{i}" for i in range(12)]


def _dist(seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, len(VOCAB))
    logits += shift * np.arange(len(VOCAB)) / len(VOCAB)
    p = np.exp(logits - logits.max())
    return p / p.sum()


def _top(p: np.ndarray, k: int) -> dict[str, float]:
    order = np.argsort(-p)[:k]
    return {VOCAB[i]: float(np.log(p[i])) for i in order}


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("k", [1, 3, 6])
def test_topk_kl_never_exceeds_the_true_kl(seed: int, k: int) -> None:
    p, q = _dist(seed), _dist(seed + 1000)
    assert topk_kl(_top(p, k), _top(q, k)) <= entropy(p, q) + 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_topk_kl_is_the_true_kl_when_k_covers_the_vocabulary(seed: int) -> None:
    p, q = _dist(seed), _dist(seed + 7, shift=3.0)
    assert topk_kl(_top(p, len(VOCAB)), _top(q, len(VOCAB))) == pytest.approx(entropy(p, q), rel=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_topk_kl_stays_a_lower_bound_when_q_lists_other_tokens(seed: int) -> None:
    """Q's short list misses some of P's top-k: those take q at most Q's smallest listed value."""
    p, q = _dist(seed), _dist(seed + 500, shift=-4.0)
    bound = topk_kl(_top(p, 6), _top(q, 2))
    assert 0.0 <= bound <= entropy(p, q) + 1e-12


def test_topk_kl_by_hand() -> None:
    """P = (0.5, 0.3 | tail 0.2), Q = (0.25, 0.25 | tail 0.5): two singletons and the tail bucket."""
    p = {"a": math.log(0.5), "b": math.log(0.3)}
    q = {"a": math.log(0.25), "b": math.log(0.25)}
    expected = 0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5)
    assert topk_kl(p, q) == pytest.approx(expected)


def test_topk_kl_of_a_distribution_with_itself_is_zero() -> None:
    p = _top(_dist(3), 4)
    assert topk_kl(p, p) == pytest.approx(0.0, abs=1e-12)


def _answer(tokens: list[str], dists: list[np.ndarray], k: int = 5) -> list[Token]:
    return [Token(t, float(np.log(d[VOCAB.index(t)])), _top(d, k)) for t, d in zip(tokens, dists, strict=True)]


def test_identical_answers_from_the_same_distributions() -> None:
    dists = [_dist(s) for s in range(4)]
    answer = _answer(["t1", "t2", "t3", "t4"], dists)
    d = compare_answers(answer, answer)
    assert (d.same_output, d.first_divergence, d.kld, d.delta_p) == (1, 4, 0.0, 0.0)


def test_same_answers_from_a_shifted_distribution_diverge() -> None:
    """The candidate says the same words, less surely: no output differs, the KL sees it."""
    tokens = ["t1", "t2", "t3"]
    base = _answer(tokens, [_dist(s) for s in range(3)])
    cand = _answer(tokens, [_dist(s, shift=2.0) for s in range(3)])
    d = compare_answers(base, cand)
    assert d.same_output == 1 and d.first_divergence == 3
    assert d.kld is not None and d.kld > 0


def test_first_divergence_counts_tokens_before_the_first_difference() -> None:
    dists = [_dist(s) for s in range(4)]
    base = _answer(["t1", "t2", "t3", "t4"], dists)
    cand = _answer(["t1", "t2", "t5", "t4"], dists)
    d = compare_answers(base, cand)
    assert (d.same_output, d.first_divergence, d.positions) == (0, 2, 3)


def test_a_shorter_answer_diverges_where_it_ends() -> None:
    dists = [_dist(s) for s in range(3)]
    d = compare_answers(_answer(["t1", "t2", "t3"], dists), _answer(["t1", "t2"], dists[:2]))
    assert (d.same_output, d.first_divergence, d.positions) == (0, 2, 2)


def test_mean_kld_over_the_shared_positions_is_the_mean_of_per_token_bounds() -> None:
    pb, pc = [_dist(s) for s in range(3)], [_dist(s + 50) for s in range(3)]
    base = _answer(["t1", "t2", "t3"], pb)
    cand = _answer(["t1", "t9", "t3"], pc)
    d = compare_answers(base, cand)
    expected = np.mean([topk_kl(base[i].top, cand[i].top) for i in range(2)])  # positions 0 and 1 share their context
    assert d.kld == pytest.approx(expected)
    assert d.delta_p == pytest.approx(math.exp(cand[0].logprob) - math.exp(base[0].logprob))


def test_empty_answers_have_no_kld() -> None:
    d = compare_answers([], [])
    assert (d.same_output, d.first_divergence, d.kld, d.delta_p) == (1, 0, None, None)
