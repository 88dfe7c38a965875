"""Verdicts: candidate vs baseline paired case by case, stored comparisons, and each series' drift."""

from evalsvc.verdicts.compare import POOLED, Flip, NotComparable, Report, compare, compare_runs, without_runs
from evalsvc.verdicts.record import compare_with_baselines, record

__all__ = ["POOLED", "Flip", "NotComparable", "Report", "compare", "compare_runs", "compare_with_baselines", "record",
           "without_runs"]
