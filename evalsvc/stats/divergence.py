"""How far a candidate's next-token distributions move from its baseline's, from top-k log-probabilities.

At temperature 0 a candidate and its baseline predict each token from the same context until their answers first
differ. There, per position, the KL divergence KL(P ‖ Q) of the baseline's distribution P from the candidate's Q is a
label-free damage signal (the quantity llama.cpp's ``perplexity --kl-divergence`` reports, in the same direction;
Dutta et al. 2024, "Accuracy is Not All You Need", arXiv 2407.09141, pair it with answer flips).

An OpenAI-compatible server returns only each generated token's top-k alternatives, so the full KL cannot be had.
:func:`topk_kl` groups the vocabulary into P's top-k tokens, each alone, and one tail bucket holding the rest
(p_tail = 1 − Σ top-k p, q_tail = 1 − Σ q over the same tokens), and returns the KL of those grouped distributions.
By the log-sum inequality (Cover and Thomas, *Elements of Information Theory*, 2nd ed., Theorem 2.7.1: merging
outcomes never increases a KL divergence) it is a **lower bound** of the true KL, equal to it when k covers the
vocabulary. So truncation alone can never raise a false alarm; a small value does not prove the distributions close.

A token of P's top-k that Q does not list has q at most Q's smallest listed value. Its q is then taken as the value
in that range that makes the grouped KL smallest (water-filling the unlisted mass between those tokens and the tail),
so the result stays a lower bound whatever the unlisted q were.

Everything is in nats; log-probabilities are natural logarithms, as the OpenAI API returns them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MODES = {"shared_prefix": "shared prefix: the positions up to the answers' first difference",
         "teacher_forced": "teacher-forced: the candidate scored on every token of the baseline's answer"}
MIN_MASS = 1e-12  # a bucket whose listed complement rounds to 0 or below: float error in the sums, not a certainty


@dataclass(frozen=True)
class Token:
    """One generated token: the token chosen, its log-probability and the top-k alternatives (token -> logprob)."""

    token: str
    logprob: float
    top: Mapping[str, float]


@dataclass(frozen=True)
class CaseDivergence:
    """One case's candidate answer against the baseline's answer to it.

    ``kld``: mean per-position top-k lower bound of KL(baseline ‖ candidate) over the positions predicted from a shared
    context (None when there is none); ``same_output``: 1 if the answers are the same tokens; ``first_divergence``:
    tokens before the first differing one (censored at the answers' length when none differs); ``delta_p``: mean change
    in the probability of the baseline's chosen token before the first difference (candidate − baseline);
    ``positions``: how many positions ``kld`` averages; ``baseline_token`` and ``candidate_token``: the two tokens where
    the answers first differ (None on a side whose answer ended there; both None when the answers are the same).
    """

    kld: float | None
    same_output: int
    first_divergence: int
    delta_p: float | None
    positions: int
    baseline_token: str | None = None
    candidate_token: str | None = None
    top1_agreement: float | None = None  # teacher-forced only: share of positions whose top-1 tokens agree
    mode: str = "shared_prefix"  # or "teacher_forced" (compare_forced)


def from_stored(stored: Sequence[Sequence[Any]]) -> list[Token]:
    """Tokens from an answer's stored log-probabilities (``[token, logprob, [[alternative, logprob], ...]]`` each,
    ``serving/logprobs.py``)."""
    return [Token(str(t), float(lp), {str(a): float(v) for a, v in alts}) for t, lp, alts in stored]


def topk_kl(p_top: Mapping[str, float], q_top: Mapping[str, float]) -> float:
    """Lower bound of KL(P ‖ Q) in nats from P's and Q's top-k log-probabilities, with one tail bucket (see module)."""
    p = {t: math.exp(lp) for t, lp in p_top.items()}
    q_listed = {t: math.exp(lp) for t, lp in q_top.items()}
    known = [t for t in p if t in q_listed]
    missing = sorted((p[t] for t in p if t not in q_listed), reverse=True)
    p_tail = max(0.0, 1.0 - sum(p.values()))
    q_rest = max(MIN_MASS, 1.0 - sum(q_listed[t] for t in known))  # Q's mass outside the tokens both list
    kl = sum(p[t] * math.log(p[t] / max(q_listed[t], MIN_MASS)) for t in known)
    if not missing:
        return kl + _term(p_tail, q_rest)
    cap = min(q_listed.values()) if q_listed else q_rest
    # minimise Σ p_i log(p_i/x_i) + p_tail log(p_tail/(q_rest − Σ x_i)) over 0 < x_i ≤ cap: at the optimum every
    # uncapped x_i and the tail share one ratio x/p = λ (KKT); the largest p_i are capped first
    capped = 0
    while True:
        free = sum(missing[capped:]) + p_tail
        lam = (q_rest - capped * cap) / free if free > 0 else math.inf
        if capped < len(missing) and lam * missing[capped] > cap:
            capped += 1
            continue
        break
    xs = [cap] * capped + [lam * m for m in missing[capped:]]
    tail = max(MIN_MASS, q_rest - sum(xs))
    return max(0.0, kl + sum(_term(m, x) for m, x in zip(missing, xs, strict=True)) + _term(p_tail, tail))


def _term(p: float, q: float) -> float:
    return p * math.log(p / max(q, MIN_MASS)) if p > 0 else 0.0


def compare_answers(base: Sequence[Token], cand: Sequence[Token]) -> CaseDivergence:
    """Compare one case's two answers, token by token.

    Positions up to and including the first differing token are predicted from the same context (the answers
    agree before it), so ``kld`` averages over them; after it the contexts differ and the distributions are not
    comparable. An answer that ends first diverges where it ends (its end-of-text token is not returned).
    """
    first = next((i for i, (b, c) in enumerate(zip(base, cand, strict=False)) if b.token != c.token),
                 min(len(base), len(cand)))
    same = int(len(base) == len(cand) and first == len(base))
    positions = min(first + 1, len(base), len(cand))
    kls = [topk_kl(base[i].top, cand[i].top) for i in range(positions)]
    dps = [math.exp(cand[i].logprob) - math.exp(base[i].logprob) for i in range(first)]
    differ = (None, None) if same else (base[first].token if first < len(base) else None,
                                        cand[first].token if first < len(cand) else None)
    return CaseDivergence(kld=sum(kls) / len(kls) if kls else None, same_output=same, first_divergence=first,
                          delta_p=sum(dps) / len(dps) if dps else None, positions=positions, baseline_token=differ[0],
                          candidate_token=differ[1])


def compare_forced(base: Sequence[Token], forced: Sequence[Token]) -> CaseDivergence:
    """Compare the baseline's answer with the candidate's distributions on that same answer (teacher forcing).

    ``forced`` holds the candidate's top-k at each position of the baseline's answer, scored with the baseline's
    tokens as context (``engine/teacher_forced.py``), so every position is predicted from a shared context: ``kld``
    averages over all of them, and ``top1_agreement`` is the share of positions where the candidate's most likely
    token is the baseline's. At temperature 0 the candidate's own answer would follow the baseline's up to its first
    disagreement, so ``first_divergence`` is that position (censored at the answer's length) and ``same_output`` 1
    when there is none (the end-of-text token is not scored). ``delta_p`` averages over every position too.
    """
    if [t.token for t in base] != [t.token for t in forced]:
        raise ValueError("the forced tokens are not the baseline's answer: the candidate scored other tokens")
    kls = [topk_kl(b.top, f.top) for b, f in zip(base, forced, strict=True)]
    agree = [_top1(b) == _top1(f) for b, f in zip(base, forced, strict=True)]
    first = agree.index(False) if False in agree else len(agree)
    dps = [math.exp(f.logprob) - math.exp(b.logprob) for b, f in zip(base, forced, strict=True)]
    differ = (None, None) if first == len(agree) else (base[first].token, _top1(forced[first]))
    return CaseDivergence(kld=sum(kls) / len(kls) if kls else None, same_output=int(first == len(agree)),
                          first_divergence=first, delta_p=sum(dps) / len(dps) if dps else None, positions=len(kls),
                          baseline_token=differ[0], candidate_token=differ[1],
                          top1_agreement=sum(agree) / len(agree) if agree else None, mode="teacher_forced")


def _top1(t: Token) -> str:
    """A position's most likely token (its chosen token when no alternative is listed)."""
    return max(t.top.items(), key=lambda kv: kv[1])[0] if t.top else t.token


@dataclass(frozen=True)
class Summary:
    """One divergence statistic over a suite's paired cases, with a case-resampling bootstrap interval."""

    metric: str  # kld (mean), same_output (share), delta_p (mean), top1_agreement (mean), first_divergence_median
    estimate: float
    ci_low: float
    ci_high: float
    n: int
    method: str
    mode: str = "shared_prefix"  # the cases' mode (a key of MODES), or "mixed" when they were measured in both


def mode_of(cases: Sequence[CaseDivergence]) -> str:
    """The one mode the cases were measured in (a key of ``MODES``), or "mixed"."""
    modes = {c.mode for c in cases}
    return modes.pop() if len(modes) == 1 else "mixed"


def summarise(cases: Sequence[CaseDivergence], alpha: float = 0.05, n_boot: int = 4000, seed: int = 0) -> list[Summary]:
    """Mean ``kld``, the share of ``same_output``, mean ``delta_p``, mean ``top1_agreement`` (teacher-forced cases) and
    the median ``first_divergence`` over cases, each with a two-sided (1 − 2 alpha) interval that resamples cases (a
    case's tokens are not independent draws; the case is the unit). Each row's ``method`` names the mode its cases were
    measured in (``MODES``).

    The means and the share reuse the gate's paired BCa bootstrap (``bootstrap.compare_continuous``, Efron and
    Tibshirani 1993, ch. 14) against the baseline's own values (a KL of 0 from itself, always the same output, no change
    in its own token's probability), so the difference is the statistic itself; the median takes the percentile
    bootstrap (Efron and Tibshirani 1993, ch. 13). Shown only: ``verdicts/divergence.py`` decides where a margin says.
    """
    import numpy as np

    from evalsvc.stats.bootstrap import compare_continuous

    out: list[Summary] = []
    key = mode_of(cases)
    mode = MODES.get(key, "mixed modes")
    kld = np.array([c.kld for c in cases if c.kld is not None], dtype=float)
    same = np.array([c.same_output for c in cases], dtype=float)
    dp = np.array([c.delta_p for c in cases if c.delta_p is not None], dtype=float)
    top1 = np.array([c.top1_agreement for c in cases if c.top1_agreement is not None], dtype=float)
    # (statistic, values, the baseline's own value, the range the statistic can take)
    for metric, values, baseline, (bottom, top) in (("kld", kld, 0.0, (0.0, math.inf)), ("same_output", same, 1.0, (0.0, 1.0)),
                                                    ("delta_p", dp, 0.0, (-1.0, 1.0)), ("top1_agreement", top1, 1.0, (0.0, 1.0))):
        if len(values) == 0:
            continue
        c = compare_continuous(metric, np.full(len(values), baseline), values, 0.0, alpha, n_boot=n_boot, seed=seed)
        # an interval past the statistic's range says no more than its end
        out.append(Summary(metric, float(values.mean()), max(bottom, baseline + c.ci_low), min(top, baseline + c.ci_high),
                           len(values), f"{c.method}; {mode}", key))
    first = np.array([c.first_divergence for c in cases], dtype=float)
    if len(first):
        rng = np.random.default_rng(seed)
        medians = np.median(first[rng.integers(0, len(first), (n_boot, len(first)))], axis=1)
        lo, hi = np.quantile(medians, [alpha, 1 - alpha])
        out.append(Summary("first_divergence_median", float(np.median(first)), float(lo), float(hi), len(first),
                           f"percentile bootstrap of the median over cases [efron-tibshirani1993], {n_boot} resamples "
                           f"(seed {seed}); censored at the answer's length where the answers never differ; {mode}", key))
    return out
