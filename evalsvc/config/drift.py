"""`drift:` in evalsvc.yaml: the watched families of series, and how `evalsvc drift` and the service check them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from evalsvc.config.base import Strict

SPEED_METRICS = ("latency_p50", "latency_p95", "tokens_per_s", "output_tokens")  # evalsvc.stats.speed.METRICS
RUN_LEVEL = ("_canary_failure_rate",)  # metric points that describe a run (its judge), not the variant's cases
SpeedMetric = Literal["latency_p50", "latency_p95", "tokens_per_s", "output_tokens"]


class DriftConfig(Strict):
    """The watched families (the same for `evalsvc drift`, the service and the dashboard) and the detector's settings.

    The quality family is every configured variant x suite x ``metrics``; the speed family the same with
    ``speed_metrics``. Each series of a family is scanned at alpha / (the family's size), fixed by this file, so a
    series' verdict does not depend on which others are checked with it.
    """

    alerts: bool = Field(True, description="after each firing, check the series it touched and raise or resolve drift "
                         "alerts (one when a drop starts, one when it recovers or is acknowledged)")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="chance of any false alarm over a block of 20 looks across each "
                         "family (quality, speed): every series of a family is scanned at alpha / its size (Bonferroni)")
    warmup: int = Field(5, ge=2, le=50, description="runs that set a series' reference level before it is looked at")
    upstream_alpha: float = Field(0.05, gt=0, lt=0.5, description="chance of any false 'upstream change' flag over 20 "
                                  "runs of a stable series (each run tested at alpha / 20 against its learned output "
                                  "noise; where runs store log-probabilities, alpha / 40 each for moved outputs and "
                                  "self-divergence)")
    metrics: list[str] = Field(["pass"], min_length=1, description="quality metrics watched: the quality family is every "
                               "configured variant x suite x these metrics")
    speed_metrics: list[SpeedMetric] = Field(["latency_p95", "tokens_per_s"], description="speed metrics watched, a "
                                             "family of its own with its own alpha ([] watches none)")

    @field_validator("metrics", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("null (every metric a run stores) is not a fixed family: list the quality metrics to watch, "
                             "e.g. [pass, rougeL]; speed metrics go under drift.speed_metrics")
        return value

    @field_validator("metrics")
    @classmethod
    def _quality_only(cls, metrics: list[str]) -> list[str]:
        for m in metrics:
            if m in SPEED_METRICS:
                raise ValueError(f"'{m}' is a speed metric: list it under drift.speed_metrics (its own family)")
            if m.endswith(RUN_LEVEL):
                raise ValueError(f"'{m}' describes the judge's run, not the variant: the judge's canary series is watched "
                                 "per judge identity already (judge alerts); remove it from drift.metrics")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"repeated metrics in {metrics}")
        return metrics
