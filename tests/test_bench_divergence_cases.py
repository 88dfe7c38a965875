"""bench/divergence_cases_needed.py: a drawn suite counts as separated only when the gate's own intervals say so."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import divergence_cases_needed as bench


def _pool(near_pass: list[float], far_pass: list[float], near_kld: list[float], far_kld: list[float]) -> bench.Pool:
    return bench.Pool(*(np.array(x, dtype=float) for x in (near_pass, far_pass, near_kld, far_kld)))


def test_two_variants_with_the_same_cases_are_never_separated() -> None:
    pool = _pool([1, 0, 1, 1] * 10, [1, 0, 1, 1] * 10, [0.01, 0.2, 0.05, 0.3] * 10, [0.01, 0.2, 0.05, 0.3] * 10)
    everything = np.arange(40)
    assert bench.separated(pool, everything, everything, 0.05, 2000, 0) == (False, False, False)


def test_a_far_variant_that_fails_and_diverges_on_every_case_is_separated() -> None:
    rng = np.random.default_rng(0)
    pool = _pool([1.0] * 40, [0.0] * 40, list(rng.uniform(0.001, 0.005, 40)), list(rng.uniform(0.2, 0.4, 40)))
    everything = np.arange(40)
    assert bench.separated(pool, everything, everything, 0.05, 2000, 0) == (True, True, True)


def test_a_far_variant_better_on_pass_is_not_counted_as_separated_on_pass() -> None:
    pool = _pool([0.0] * 40, [1.0] * 40, [0.001, 0.002] * 20, [0.3, 0.2] * 20)
    everything = np.arange(40)
    assert bench.separated(pool, everything, everything, 0.05, 2000, 0)[2] is False
