"""Simulated false-flag rate and first-run detection of the self-divergence test (evalsvc.stats.self_divergence).

Prints Markdown (pasted into docs/divergence.md, "Self-divergence"):

    OMP_NUM_THREADS=1 python3 bench/simulate_self_divergence.py --series 300 --seed 0

A simulated server answers C cases of T greedy tokens over a vocabulary of V tokens. Each (case, position) has fixed
logits (normal, sd 2.5); every run adds batch jitter to them, normal with sd sigma_r, where sigma_r = sigma x
exp(tau x N(0, 1)) varies from run to run when tau > 0 (a busier night jitters more). The answer is the argmax at each
position, so near-ties flip and some answers change from run to run, as on a real nondeterministic server. Each run
keeps the top-K log-probabilities, and its self-divergence is the mean per-case kld from the previous run through
evalsvc's own code (``stats.divergence.compare_answers``); the test is ``stats.self_divergence.excess`` on the series'
earlier unflagged values (newest HISTORY), at the level the service uses when both upstream tests run:
alpha / (2 x 20) with alpha 0.05. A series is judged at 20 looks after its MIN_HISTORY learning comparisons; its
false-flag rate is the share of stable series flagged at any of them (the target: 20 x level = 0.025), at the
default width (WIDEN) and with the normal-theory bound unwidened.

Detection: after those 26 runs the server is swapped for one whose logits carry a fixed perturbation (normal, sd
delta, the same on every run: a re-quantized model) and the first swapped run is tested; also with the shortest
history (the swap at the first run that can be judged). The log-normal rows draw self-divergences from the model the
bound assumes (the false-flag rate there is the level by construction).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalsvc.stats.divergence import Token, compare_answers
from evalsvc.stats.self_divergence import HISTORY, MIN_HISTORY, WIDEN, excess

ALPHA, LOOKS = 0.05, 20
LEVEL = ALPHA / (2 * LOOKS)
V, K, CASES, TOKENS = 32, 5, 30, 8
VOCAB = [f"t{i}" for i in range(V)]


def answers(logits: np.ndarray) -> list[list[Token]]:
    """Greedy answers with their top-K log-probabilities, one list per case."""
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    top = np.argsort(-logp, axis=-1)[..., :K]
    out = []
    for c in range(logits.shape[0]):
        out.append([Token(VOCAB[top[c, t, 0]], float(logp[c, t, top[c, t, 0]]),
                          {VOCAB[i]: round(float(logp[c, t, i]), 4) for i in top[c, t]}) for t in range(logits.shape[1])])
    return out


def self_kld(prev: list[list[Token]], now: list[list[Token]]) -> float:
    values = [compare_answers(b, c).kld for b, c in zip(prev, now, strict=True)]
    return float(np.mean([v for v in values if v is not None]))


def series(rng: np.random.Generator, sigma: float, tau: float, runs: int, delta: float = 0.0,
           swap_at: int | None = None) -> list[float]:
    """Self-divergences of runs 2..runs (the first has no previous run); from run ``swap_at`` on (0-based) the
    server's logits carry a fixed perturbation of sd ``delta``."""
    base = rng.normal(0, 2.5, (CASES, TOKENS, V))
    shift = rng.normal(0, delta, base.shape) if delta else 0.0
    out, prev = [], None
    for r in range(runs):
        s = sigma * math.exp(tau * rng.normal())
        logits = base + rng.normal(0, s, base.shape) + (shift if swap_at is not None and r >= swap_at else 0.0)
        now = answers(logits)
        if prev is not None:
            out.append(self_kld(prev, now))
        prev = now
    return out


def judged(values: list[float], widen: float = WIDEN) -> list[bool]:
    """Flags at each look, as the service would raise them (a flagged value leaves the history)."""
    history: list[float] = []
    flags = []
    for v in values:
        found = excess(v, history[-HISTORY:], LEVEL, widen)
        flagged = bool(found and found.flagged)
        if found is not None:
            flags.append(flagged)
        if not flagged:
            history.append(v)
    return flags


def false_flags(rng: np.random.Generator, n: int, sigma: float, tau: float) -> tuple[float, float, float, float]:
    """(share of series with any flag in 20 looks, per-look rate, the share with the unwidened bound, median
    self-divergence)."""
    any_flag, looks, flags, unwidened, medians = 0, 0, 0, 0, []
    for _ in range(n):
        values = series(rng, sigma, tau, 1 + MIN_HISTORY + LOOKS)
        f = judged(values)[:LOOKS]
        any_flag += any(f)
        unwidened += any(judged(values, 1.0)[:LOOKS])
        looks, flags = looks + len(f), flags + sum(f)
        medians.append(float(np.median(values)))
    return any_flag / n, flags / looks, unwidened / n, float(np.median(medians))


def detection(rng: np.random.Generator, n: int, sigma: float, tau: float, delta: float, history: int) -> tuple[float, float]:
    """(share of swaps flagged on their first run, median self-divergence of that run) after ``history`` clean
    self-divergences."""
    hits, swapped = 0, []
    runs = history + 2  # history + 1 clean runs, then the swapped one
    for _ in range(n):
        values = series(rng, sigma, tau, runs, delta, swap_at=runs - 1)
        hits += judged(values)[-1]
        swapped.append(values[-1])
    return hits / n, float(np.median(swapped))


def lognormal(rng: np.random.Generator, n: int, sd: float) -> tuple[float, float]:
    hit, unwidened = 0, 0
    for _ in range(n):
        values = [float(v) for v in np.exp(rng.normal(math.log(0.005), sd, MIN_HISTORY + LOOKS))]
        hit += any(judged(values))
        unwidened += any(judged(values, 1.0))
    return hit / n, unwidened / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n = args.series
    print(f"False flags over {LOOKS} looks, level {LEVEL:g} per look (bound {LOOKS * LEVEL:.3f}), {n} series each; "
          f"{CASES} cases x {TOKENS} tokens, top-{K} of {V}\n")
    print(f"| stable server | median self-divergence (nats) | series with any false flag (widen {WIDEN}) | per look | "
          "unwidened bound (widen 1) |")
    print("|---|---|---|---|---|")
    for sigma, tau in ((0.05, 0.0), (0.05, 0.3), (0.05, 0.6), (0.15, 0.0), (0.15, 0.6)):
        share, per_look, unwidened, median = false_flags(rng, n, sigma, tau)
        se = math.sqrt(max(share * (1 - share), 1 / n) / n)
        print(f"| jitter sd {sigma}, run-to-run tau {tau} | {median:.4f} | {share:.3f} (SE {se:.3f}) | {per_look:.4f} | "
              f"{unwidened:.3f} |")
    for sd in (0.3, 1.0):
        share, unwidened = lognormal(rng, 10 * n, sd)
        print(f"| log-normal self-divergences, sd of log {sd} (the model) | 0.0050 | {share:.3f} | | {unwidened:.3f} |")
    print(f"\nDetection on the swapped model's first run (jitter sd 0.05, tau 0.3), {n} series each\n")
    print("| swap: fixed logit perturbation sd | its self-divergence (nats) | flagged after 20 clean runs | "
          f"after {MIN_HISTORY} (shortest history) |")
    print("|---|---|---|---|")
    for delta in (0.05, 0.1, 0.2, 0.5):
        long, kld = detection(rng, n, 0.05, 0.3, delta, LOOKS)
        short, _ = detection(rng, n, 0.05, 0.3, delta, MIN_HISTORY)
        print(f"| {delta} | {kld:.4f} | {long:.3f} | {short:.3f} |")


if __name__ == "__main__":
    main()
