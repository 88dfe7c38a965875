"""Errors cannot hide a regression: the worst-case bound and the serving-health verdict.

Quality is compared on the cases answered in both runs, so an endpoint failure is never scored as a
wrong answer. But errors are rarely random: a deployment with a smaller context window fails on the
longest prompts, which are often the hardest, and those cases leave both arms of the comparison. Two
comparisons therefore stand next to the quality verdict:

- The worst-case bound, pooled and per suite, of each primary metric: each case answered by the baseline only
  counts as a failure of the candidate, each case answered by the candidate only as a pass of the baseline. A
  case neither run answered says nothing about the difference and stays out (two deployments that share a
  context limit are not told apart by it). The bound is decided by the gate's own rule; if even this passes, no
  error can hide a loss; when quality passes but the bound does not, the gate is inconclusive: the errors could
  hide one (exit 3 by default).
- Serving health, over every gated case: the share of cases answered, candidate vs baseline, compared
  paired (Tango's interval, as for pass/fail) against its own margin, ``gate.health_margin``. A shown
  rise in errors beyond it is a regression (exit 1), tested at alpha on its own; otherwise it informs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from evalsvc.stats.binary import compare_binary
from evalsvc.stats.comparison import Comparison, Verdict

HEALTH = "serving health"  # the scope of the health comparison
ANSWERED = "answered"  # its metric: 1 for a case the endpoint answered, 0 for an errored one
WORST = "errors as failures"  # the bound's metric label suffix

_GOOD = ("pass", "improvement")


def health(runs: Iterable[tuple[Mapping[str, str], Mapping[str, str]]], margin: float, alpha: float) -> Comparison | None:
    """The share of cases answered, paired case by case over every (baseline, candidate) pair of case states;
    None when every case was answered in both runs (nothing to compare: the report says so in a line)."""
    base: list[float] = []
    cand: list[float] = []
    for b, c in runs:
        for cid in sorted(b.keys() | c.keys()):
            base.append(0.0 if b.get(cid) == "errored" else 1.0)
            cand.append(0.0 if c.get(cid) == "errored" else 1.0)
    if not base or min(base + cand) == 1.0:
        return None
    return compare_binary(ANSWERED, base, cand, margin, alpha)


def worst_case(states: tuple[Mapping[str, str], Mapping[str, str]], base: Mapping[str, float | None],
               cand: Mapping[str, float | None], worst: float, best: float) -> tuple[list[float], list[float]] | None:
    """One metric's pairs with the unanswered cases filled in against the candidate; None when every case is ok in both.

    ``base``/``cand`` hold the metric's value of each ok case; ``worst`` and ``best`` are its worst and best values
    in the units it is stored in (for pass: 0 and 1; lower-is-better metrics swap them)."""
    b_states, c_states = states
    cids = [cid for cid in sorted(b_states.keys() | c_states.keys()) if "ok" in (b_states.get(cid), c_states.get(cid))]
    if all(b_states.get(cid) == "ok" and c_states.get(cid) == "ok" for cid in cids):
        return None  # nothing answered in one run only (a case answered in neither is no evidence either way)
    out_b: list[float] = []
    out_c: list[float] = []
    for cid in cids:
        bv = base.get(cid) if b_states.get(cid) == "ok" else best
        cv = cand.get(cid) if c_states.get(cid) == "ok" else worst
        if bv is not None and cv is not None:
            out_b.append(float(bv))
            out_c.append(float(cv))
    return out_b, out_c


def combined(quality: Verdict, bound: Verdict | None, served: Comparison | None) -> Verdict:
    """The gate's verdict: a shown rise in errors is a regression; a quality pass that the errors could undo (the
    worst-case bound, decided by the same rule, is not a pass) is not a pass."""
    if served is not None and served.verdict == "regression":
        return "regression"
    if quality in _GOOD and bound is not None and bound not in _GOOD:
        return "inconclusive"
    return quality
