"""The sequential gate against the fixed gate where the truth is known: verdict shares and cases asked.

Part 1: binary pairs, margin m = 0.05, one-sided alpha 0.05 for each claim. Each case flips down with probability
psi/2 + |delta| and up with psi/2 (psi: the discordance noise alone makes, as in bench/simulate_gate_exits.py), so
the true delta is exactly delta. Three gates see the same cases:
  fixed       Tango's interval on all n cases (``compare_binary``, as ``evalsvc gate`` decides one suite);
  sequential  five equally spaced looks, O'Brien-Fleming-type Lan-DeMets boundaries (``sequential_binary``);
  pocock      the same looks with Pocock-type boundaries;
  anytime     the betting e-processes at the same five looks, i.i.d. form, no more than n cases (``log_capital``).
E[n] is the mean number of cases asked before the gate stops (the fixed gate always asks n).

Part 2: the pitfall of peeking. Discordance 6% in all (flips down (6% - delta)/2, up (6% + delta)/2), margin 2 points,
truth on the margin (delta = -m), a look every 50 cases up to 928 (the fixed n with 80% power at delta = 0): how
often each rule claims a false pass. "Naive" re-reads a fixed-n interval at every look: the gate's own Tango interval,
or the Wald interval (difference +- z SE), whose SE is 0 on a batch without discordant pairs.

    OMP_NUM_THREADS=1 python3 bench/simulate_sequential.py --reps 4000 --seed 1
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from evalsvc.stats.betting import log_capital, plug_in_bets
from evalsvc.stats.binary import compare_binary
from evalsvc.stats.sequential import equal_looks, sequential_binary

MARGIN, ALPHA, LOOKS = 0.05, 0.05, 5
NS = (160, 1000)
DISCORDANCE = (0.02, 0.10)
DELTAS = (0.0, -MARGIN / 2, -MARGIN, -2 * MARGIN)


def pairs(rng: np.random.Generator, n: int, p_down: float, p_up: float) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and candidate pass/fail per case; only the discordant pairs matter to the paired difference."""
    u = rng.random(n)
    down, up = u < p_down, (u >= p_down) & (u < p_down + p_up)
    base = np.ones(n)
    base[up] = 0.0
    cand = base.copy()
    cand[down], cand[up] = 0.0, 1.0
    return base, cand


def anytime(base: np.ndarray, cand: np.ndarray, looks: list[int], margin: float) -> tuple[str, int]:
    """The betting gate's verdict and cases asked, looking at ``looks`` only."""
    y = (cand - base + 1.0) / 2.0
    bets, mu0, threshold = plug_in_bets(y, ALPHA), (1.0 - margin) / 2.0, math.log(1.0 / ALPHA)
    up = log_capital(y, mu0, bets, "pass")
    down = log_capital(y, mu0, bets, "regression")
    for n in looks:
        if up[n - 1] >= threshold:
            return "pass", n
        if down[n - 1] >= threshold:
            return "regression", n
    return "inconclusive", looks[-1]


def claim(verdict: str) -> str:
    return "pass" if verdict == "improvement" else verdict


def cell(n: int, psi: float, delta: float, reps: int, seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, n, round(psi * 1000), round(-delta * 1000)]))
    looks = equal_looks(n, LOOKS)
    gates = ("fixed", "sequential", "pocock", "anytime")
    out = {g: {"pass": 0.0, "regression": 0.0, "inconclusive": 0.0, "n": 0.0} for g in gates}
    for _ in range(reps):
        base, cand = pairs(rng, n, psi / 2 - delta, psi / 2)
        out["fixed"][claim(compare_binary("pass", base, cand, MARGIN, ALPHA).verdict)] += 1
        out["fixed"]["n"] += n
        last = sequential_binary("pass", base, cand, looks, n, MARGIN, ALPHA)[-1]
        out["sequential"][claim(last.verdict)] += 1
        out["sequential"]["n"] += last.n
        last = sequential_binary("pass", base, cand, looks, n, MARGIN, ALPHA, "pocock")[-1]
        out["pocock"][claim(last.verdict)] += 1
        out["pocock"]["n"] += last.n
        verdict, asked = anytime(base, cand, looks, MARGIN)
        out["anytime"][verdict] += 1
        out["anytime"]["n"] += asked
    return {g: {k: v / reps for k, v in d.items()} for g, d in out.items()}


def peeking(reps: int, seed: int) -> dict[str, float]:
    m, d, n = 0.02, 0.06, 928
    rng = np.random.default_rng(np.random.SeedSequence([seed, 928]))
    looks = [*range(50, n, 50), n]
    counts = dict.fromkeys(("fixed", "naive", "naive-any", "wald", "obrien-fleming", "pocock", "anytime"), 0)
    z = 1.6448536269514722
    for _ in range(reps):
        base, cand = pairs(rng, n, (d + m) / 2, (d - m) / 2)
        counts["fixed"] += claim(compare_binary("pass", base, cand, m, ALPHA).verdict) == "pass"
        verdicts = [claim(compare_binary("pass", base[:k], cand[:k], m, ALPHA).verdict) for k in looks]
        first = next((v for v in verdicts if v != "inconclusive"), "inconclusive")
        counts["naive"] += first == "pass"  # the gate stops at its first claim
        counts["naive-any"] += "pass" in verdicts  # re-asked until it passes
        diff = cand - base
        for k in looks:  # the Wald interval, whose variance is 0 on a batch with no discordant pairs
            mean = diff[:k].mean()
            se = math.sqrt(max(np.mean(diff[:k] ** 2) - mean**2, 0.0) / k)
            if mean - z * se > -m or mean + z * se < -m:
                counts["wald"] += mean - z * se > -m
                break
        for spending in ("obrien-fleming", "pocock"):
            counts[spending] += claim(sequential_binary("pass", base, cand, looks, n, m, ALPHA, spending)[-1].verdict) == "pass"
        counts["anytime"] += anytime(base, cand, looks, m)[0] == "pass"
    return {k: v / reps for k, v in counts.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    started = time.perf_counter()
    print(f"reps = {args.reps} per row, seed {args.seed}; margin {MARGIN}, one-sided alpha {ALPHA} per claim, {LOOKS} equal looks; "
          f"Monte-Carlo SE {100 * (0.05 * 0.95 / args.reps) ** 0.5:.1f} points at 5%.\n")
    print("Shares in %: pass / regression / inconclusive; E[n] as a share of the fixed gate's n.\n")
    print("| n | discordance | true Δ | fixed | sequential (OBF) | OBF E[n] | sequential (Pocock) | Pocock E[n] | "
          "anytime (betting) | anytime E[n] |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in NS:
        for psi in DISCORDANCE:
            for delta in DELTAS:
                r = cell(n, psi, delta, args.reps, args.seed)
                share = {g: " / ".join(f"{100 * r[g][k]:.1f}" for k in ("pass", "regression", "inconclusive")) for g in r}
                print(f"| {n} | {psi:.0%} | {delta:+.3f} | {share['fixed']} | {share['sequential']} | "
                      f"{r['sequential']['n'] / n:.2f} | {share['pocock']} | {r['pocock']['n'] / n:.2f} | "
                      f"{share['anytime']} | {r['anytime']['n'] / n:.2f} |", flush=True)
    print("\nPeeking: discordance 6%, margin 0.02, delta = -m, a look every 50 cases up to 928; false-pass share in %:\n")
    p = peeking(args.reps, args.seed)
    print("| fixed n = 928, one look | naive Tango, stop at the first claim | naive Tango, pass at any look | "
          "naive Wald, stop at the first claim | OBF boundaries | Pocock boundaries | anytime (betting) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {100 * p['fixed']:.1f} | {100 * p['naive']:.1f} | {100 * p['naive-any']:.1f} | {100 * p['wald']:.1f} | "
          f"{100 * p['obrien-fleming']:.1f} | {100 * p['pocock']:.1f} | {100 * p['anytime']:.1f} |")
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
