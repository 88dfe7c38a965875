"""How many cases the gate needs to tell Q8_0 from Q4_0 (each against F16) on `kld` and on `pass`.

The per-case results come from one real run of each bundled SmolLM2 variant (F16, Q8_0, Q4_0; llama.cpp, temperature
0, `top_logprobs: 5`, response cache off) on every bundled suite, stored in a fresh project under one slot (`--make`
runs them with `evalsvc run`, as `bench/gate_table.py` builds its projects). Each case gives Q8_0's and Q4_0's `pass`
and their `kld` from F16's answer (`verdicts.divergence.per_case`, the gate's own reader).

The question is answered by a case bootstrap (Efron and Tibshirani 1993, ch. 6: resampling the observed cases stands
in for drawing new ones from the same population): for each n, `--reps` suites of n cases are drawn with replacement
from the observed ones (seeded), and each is compared the way the gate compares, at the gate's default one-sided
alpha 0.05 (90% two-sided intervals), with the project's own statistics (`evalsvc/stats/`):

- **kld, paired**: the paired BCa bootstrap of the per-case difference kld(Q4_0) − kld(Q8_0)
  (`bootstrap.compare_continuous`, margin 0); separated when the interval lies above 0.
- **kld, two intervals**: each variant's mean-kld interval as the gate's divergence rows show it (`compare_continuous`
  against the baseline's 0, as `stats.divergence.summarise` does); separated when Q4_0's lies entirely above Q8_0's.
- **pass**: the paired pass-rate difference of Q4_0 against Q8_0 on the same cases by Tango's score interval
  (`binary.compare_binary`, margin 0), the pooled test of the gate; separated when the interval lies below 0. Both are
  compared with F16 on the same cases, so (Q4_0 − F16) − (Q8_0 − F16) is exactly Q4_0 − Q8_0 per case.

The share of separated draws estimates the probability (its Monte Carlo standard error is at most 0.5 / sqrt(reps));
the smallest n of the grid where it reaches 80% and 95% is printed, beside the sample size the project's power formula
(`power.n_for_noninferiority` at margin 0, Nam 1997 for pass, Miller 2024 for kld) gives from the observed delta.
Draws larger than the observed pool resample the same empirical distribution: they say what more cases like these
would give, not what other prompts would.

    python bench/divergence_cases_needed.py --project /tmp/div-cases --make      # the runs (about 15 min, 2 cores)
    python bench/divergence_cases_needed.py --project /tmp/div-cases --reps 2000 --seed 0      # about 2 min
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.stats.binary import compare_binary
from evalsvc.stats.bootstrap import compare_continuous
from evalsvc.stats.power import n_for_noninferiority
from evalsvc.store.db import open_engine
from evalsvc.store.schema import Run
from evalsvc.verdicts import compare, divergence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gate_table import project  # bench/ is not a package

ROOT = Path(__file__).resolve().parent.parent
SLOT = "cases-needed"
GRID = (2, 3, 4, 5, 6, 8, 10, 14, 20, 28, 40, 50, 57, 64, 72, 80, 90, 100, 113, 128, 160, 226, 320)
TARGETS = (0.8, 0.95)


@dataclass
class Pool:
    """The observed cases: pass (Q8_0, Q4_0) on the cases ok in all three runs, kld on those with log-probabilities."""

    pass_near: np.ndarray
    pass_far: np.ndarray
    kld_near: np.ndarray
    kld_far: np.ndarray


def make(folder: Path, models: Path) -> None:
    """One run of F16, Q8_0 and Q4_0 on every bundled suite, under one slot, in a fresh project."""
    project(folder, models, ["F16", "Q8_0", "Q4_0"], sampled=False)
    subprocess.run([sys.executable, "-m", "evalsvc.cli", "run", "-c", str(folder / "evalsvc.yaml"), "--slot", SLOT,
                    "--no-compare", "--no-progress"], cwd=folder, check=True)


def load(folder: Path, baseline: str, near: str, far: str) -> Pool:
    engine = open_engine(f"sqlite:///{folder / 'evalsvc.db'}")
    pn, pf, kn, kf = [], [], [], []
    with Session(engine) as s:
        runs = s.execute(select(Run).where(Run.slot == SLOT, Run.status == "succeeded")).scalars().all()
        by = {(r.suite_name, r.variant_name): r.id for r in runs}
        for suite in sorted({r.suite_name for r in runs}):
            ids = [by.get((suite, v)) for v in (baseline, near, far)]
            if None in ids:
                print(f"skipped {suite}: no succeeded run of every variant under slot {SLOT}", file=sys.stderr)
                continue
            b, n, f = (compare.per_case(s, i) for i in ids)  # type: ignore[arg-type]
            for case in sorted(b.keys() & n.keys() & f.keys()):
                if "pass" in n[case].scores and "pass" in f[case].scores:
                    pn.append(n[case].scores["pass"])
                    pf.append(f[case].scores["pass"])
            dn, df = divergence.per_case(s, ids[0], ids[1]), divergence.per_case(s, ids[0], ids[2])  # type: ignore[arg-type]
            for case in sorted(dn.keys() & df.keys()):
                if dn[case].kld is not None and df[case].kld is not None:
                    kn.append(dn[case].kld)
                    kf.append(df[case].kld)
    return Pool(*(np.array(x, dtype=float) for x in (pn, pf, kn, kf)))


def separated(pool: Pool, idx_pass: np.ndarray, idx_kld: np.ndarray, alpha: float, n_boot: int, seed: int) -> tuple[bool, bool, bool]:
    """(kld paired, kld two intervals, pass) for one drawn suite."""
    kn, kf = pool.kld_near[idx_kld], pool.kld_far[idx_kld]
    # higher is better: -kld, so Δ = kld(near) − kld(far) and "regression" at margin 0 is hi < 0
    paired = compare_continuous("kld", -kn, -kf, 0.0, alpha, n_boot=n_boot, seed=seed).verdict == "regression"
    zeros = np.zeros(len(idx_kld))
    near_hi = compare_continuous("kld", zeros, kn, 0.0, alpha, n_boot=n_boot, seed=seed).ci_high
    far_lo = compare_continuous("kld", zeros, kf, 0.0, alpha, n_boot=n_boot, seed=seed + 1).ci_low
    passed = compare_binary("pass", pool.pass_near[idx_pass], pool.pass_far[idx_pass], 0.0, alpha)
    return paired, far_lo > near_hi, passed.ci_high < 0


def formula_n(pool: Pool, alpha: float, power: float) -> tuple[int | None, int | None]:
    """The power formula's n (margin 0) at the observed delta: (kld paired, pass)."""
    d = pool.kld_near - pool.kld_far
    kld = n_for_noninferiority(0.0, alpha, power, sd=float(d.std(ddof=1)), delta=float(d.mean()))
    dp = pool.pass_far - pool.pass_near
    pss = n_for_noninferiority(0.0, alpha, power, discordance=float(np.mean(dp != 0)), delta=float(dp.mean()))
    return kld, pss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Method: the module docstring.")
    parser.add_argument("--project", type=Path, default=Path("/tmp/div-cases"), help="the project folder (evalsvc.db)")
    parser.add_argument("--make", action="store_true", help="first run F16, Q8_0 and Q4_0 on every bundled suite there")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--baseline", default="smollm2-f16")
    parser.add_argument("--near", default="smollm2-q8_0", help="the variant expected closer to the baseline")
    parser.add_argument("--far", default="smollm2-q4_0")
    parser.add_argument("--n", type=int, nargs="+", default=list(GRID), help="suite sizes to draw")
    parser.add_argument("--reps", type=int, default=1000, help="drawn suites per n")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples inside each comparison "
                        "(the gate uses 10000)")
    parser.add_argument("--alpha", type=float, default=0.05, help="one-sided level (gate.alpha's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.make:
        make(args.project, args.models)
    pool = load(args.project, args.baseline, args.near, args.far)
    if not len(pool.kld_near) or not len(pool.pass_near):
        sys.exit(f"no paired cases of {args.near} and {args.far} under slot {SLOT} in {args.project}; run with --make")
    print(f"observed: pass on {len(pool.pass_near)} cases, {args.near} {pool.pass_near.mean():.3f}, {args.far} "
          f"{pool.pass_far.mean():.3f} (discordant {np.mean(pool.pass_near != pool.pass_far):.3f}); kld on "
          f"{len(pool.kld_near)} cases, mean {pool.kld_near.mean():.4f} and {pool.kld_far.mean():.4f} nats")
    full = separated(pool, np.arange(len(pool.pass_near)), np.arange(len(pool.kld_near)), args.alpha, 10000, args.seed)
    print(f"all observed cases once (10000 resamples): kld paired {full[0]}, kld intervals {full[1]}, pass {full[2]}")
    for power in TARGETS:
        k, p = formula_n(pool, args.alpha, power)
        print(f"power formula at the observed delta, {power:.0%} power: kld paired n = {k}, pass n = {p}")
    rng = np.random.default_rng(args.seed)
    rows: dict[int, np.ndarray] = {}
    print(f"\n{args.reps} drawn suites per n, alpha {args.alpha} one-sided, seed {args.seed}")
    print("| n | kld, paired difference | kld, intervals apart | pass, paired (Tango) |")
    print("|---|---|---|---|")
    for n in args.n:
        start = time.perf_counter()
        hits = np.array([separated(pool, rng.integers(0, len(pool.pass_near), n), rng.integers(0, len(pool.kld_near), n),
                                   args.alpha, args.n_boot, int(rng.integers(2**31))) for _ in range(args.reps)], dtype=float)
        rows[n] = hits.mean(axis=0)
        print("| " + " | ".join([str(n), *(f"{p:.3f}" for p in rows[n])]) + f" | <!-- {time.perf_counter() - start:.0f} s -->",
              flush=True)
    print()
    for j, name in enumerate(("kld, paired difference", "kld, intervals apart", "pass, paired (Tango)")):
        found = [next((n for n in args.n if rows[n][j] >= t), None) for t in TARGETS]
        print(f"{name}: smallest n of the grid with P(separated) >= 80%: {found[0] or f'> {max(args.n)}'}, "
              f">= 95%: {found[1] or f'> {max(args.n)}'}")


if __name__ == "__main__":
    main()
