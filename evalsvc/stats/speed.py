"""Serving speed as metrics: request latency p50/p95, output tokens per second and output length.

Speed is half of a compression decision, so it is measured like quality: per case, from the answers
a run actually requested (an answer from the response cache has no latency of this run and is left
out), reduced to one value per case (samples averaged), then aggregated per run with an interval and
compared paired, case by case, by the gate (``stats.compare_quantile`` for the percentiles, the paired
bootstrap of the mean for the rest). Latencies are measured under the run's ``concurrency`` on the
serving machine as loaded at the time: compare runs made the same way (the gate measures both now).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from evalsvc.stats.aggregate import Aggregate, quantile, quantile_interval, t_interval

LATENCY = {"latency_p50": 0.5, "latency_p95": 0.95}  # seconds per request: lower is better
TOKENS_PER_S = "tokens_per_s"  # output tokens per second of a request: higher is better
OUTPUT_TOKENS = "output_tokens"  # output length in tokens: lower is cheaper (whether it is still right, quality says)
METRICS = (*LATENCY, TOKENS_PER_S, OUTPUT_TOKENS)
HIGHER_IS_BETTER = {"latency_p50": False, "latency_p95": False, TOKENS_PER_S: True, OUTPUT_TOKENS: False}


@dataclass(frozen=True)
class CaseSpeed:
    latency_s: float
    output_tokens: float | None
    tokens_per_s: float | None


def per_case(rows: Iterable[Any]) -> dict[str, CaseSpeed]:
    """(case_id, latency_ms, completion_tokens) of each requested ok answer -> one speed per case (samples averaged)."""
    by_case: dict[str, list[tuple[float, int | None]]] = defaultdict(list)
    for cid, latency_ms, tokens in rows:
        if latency_ms is not None and latency_ms > 0:
            by_case[cid].append((latency_ms / 1000.0, tokens))
    out = {}
    for cid, samples in by_case.items():
        latency = sum(s for s, _ in samples) / len(samples)
        counted = [(s, t) for s, t in samples if t is not None]
        tokens = sum(t for _, t in counted) / len(counted) if counted else None
        rate = sum(t / s for s, t in counted) / len(counted) if counted else None
        out[cid] = CaseSpeed(latency, tokens, rate)
    return out


def values(cases: dict[str, CaseSpeed], metric: str, ids: Iterable[str]) -> list[float]:
    """The per-case values a speed metric is computed from (latency for both percentiles), for these case ids."""
    field = {TOKENS_PER_S: "tokens_per_s", OUTPUT_TOKENS: "output_tokens"}.get(metric, "latency_s")
    return [v for cid in ids if (v := getattr(cases[cid], field)) is not None]


def aggregates(cases: dict[str, CaseSpeed]) -> list[Aggregate]:
    """One run's speed metric points: percentiles with order-statistic intervals, means with t intervals."""
    if not cases:
        return []
    ids = sorted(cases)
    out = []
    latency = values(cases, "latency_p50", ids)
    for name, q in LATENCY.items():
        lo, hi = quantile_interval(latency, q)
        out.append(Aggregate(name, "continuous", False, quantile(latency, q), len(latency), lo, hi))
    for name in (TOKENS_PER_S, OUTPUT_TOKENS):
        vals = values(cases, name, ids)
        if vals:
            lo, hi = t_interval(vals)
            out.append(Aggregate(name, "continuous", HIGHER_IS_BETTER[name], sum(vals) / len(vals), len(vals), lo, hi))
    return out
