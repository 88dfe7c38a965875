"""Coverage of the arena's bootstrap intervals when battles share their case's difficulty.

Prints Markdown (pasted into docs/statistics.md):

    OMP_NUM_THREADS=1 python3 bench/arena_coverage.py --datasets 400 --seed 0

Each data set: 4 variants and 50 cases; variant v passes case c with probability
sigmoid(theta_v + d_c), the case difficulty d_c ~ N(0, 2^2) shared by every variant, and every pair meets on
every case, decided by the suite's checks (`checks_verdict`: the pass decides, a tie when both pass or both
fail). That is `evalsvc arena -j checks` on a suite whose cases differ in difficulty. The "true" rating is the
Bradley-Terry fit to 200,000 cases. Each data set's 95% interval comes from the shipped bootstrap (cases
resampled, each with all its battles) and, for comparison, from resampling battles one by one (the same
battles without their case ids).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalsvc.stats.ratings import Battle, bootstrap_intervals, bradley_terry

THETA = {"f16": 0.0, "q8": -0.3, "q4": -0.8, "q2": -1.5}  # log-odds of passing a case of average difficulty
CASES, DIFFICULTY_SD, N_BOOT = 50, 2.0, 500


def battles(rng: np.random.Generator, cases: int, with_case_ids: bool = True) -> list[Battle]:
    names = list(THETA)
    d = rng.normal(0.0, DIFFICULTY_SD, size=cases)
    p = 1 / (1 + np.exp(-(np.array([THETA[n] for n in names])[:, None] + d[None, :])))
    passed = rng.random(p.shape) < p
    out = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            outcome = np.where(passed[i] == passed[j], 0.5, passed[i].astype(float))
            out += [Battle(names[i], names[j], float(o), case_id=f"c{c}" if with_case_ids else None)
                    for c, o in enumerate(outcome)]
    return out


def truth(rng: np.random.Generator, cases: int = 200_000) -> dict[str, float]:
    tally = Counter((b.a, b.b, b.outcome) for b in battles(rng, cases, with_case_ids=False))
    return bradley_terry([Battle(a, b, o, count=n) for (a, b, o), n in tally.items()], anchor="f16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    true = truth(rng)
    found: dict[str, dict[str, list[float]]] = {k: {"covered": [], "sd": []} for k in ("cases", "battles")}
    estimates: dict[str, list[float]] = {name: [] for name in THETA}
    for _ in range(args.datasets):
        data = battles(rng, CASES)
        fitted = bradley_terry(data, anchor="f16")
        for name in THETA:
            estimates[name].append(fitted[name])
        for label, given in (("cases", data), ("battles", [Battle(b.a, b.b, b.outcome) for b in data])):
            intervals = bootstrap_intervals(given, anchor="f16", n_boot=N_BOOT, seed=int(rng.integers(1 << 31)))
            for name in list(THETA)[1:]:
                low, high = intervals[name]
                found[label]["covered"].append(low <= true[name] <= high)
                found[label]["sd"].append((high - low) / (2 * 1.959964))
    sampling = np.mean([np.std(estimates[name], ddof=1) for name in list(THETA)[1:]])
    se = np.sqrt(0.95 * 0.05 / (args.datasets * (len(THETA) - 1)))
    print(f"{args.datasets} data sets of {len(THETA)} variants x {CASES} cases (case difficulty SD {DIFFICULTY_SD}), "
          f"{N_BOOT} resamples each, seed {args.seed}; true ratings {', '.join(f'{n} {v:.0f}' for n, v in true.items())}.\n")
    print("| bootstrap resamples | coverage of the nominal 95% interval (3 ratings pooled) | mean bootstrap SD | "
          "sampling SD of the rating |")
    print("|---|---|---|---|")
    for label, text in (("cases", "cases, each with all its battles (shipped)"), ("battles", "battles one by one")):
        cover = np.mean(found[label]["covered"])
        print(f"| {text} | {cover:.3f} (MC SE {se:.3f}) | {np.mean(found[label]['sd']):.1f} | {sampling:.1f} |")
    print(f"\n_{time.perf_counter() - started:.0f} s_")


if __name__ == "__main__":
    main()
