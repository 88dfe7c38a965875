"""`gate:` in evalsvc.yaml: how a candidate is judged against its baseline."""

from __future__ import annotations

from pydantic import Field, model_validator

from evalsvc.config.base import Strict


class Margin(Strict):
    """Non-inferiority margin: an absolute number of points, or a relative recovery of the baseline."""

    absolute: float | None = Field(None, ge=0, description="e.g. 0.05: the candidate may be at most 5 points worse")
    relative: float | None = Field(None, gt=0, le=1, description="e.g. 0.95: keep at least 95% of the baseline mean")

    @model_validator(mode="after")
    def _one(self) -> Margin:
        if (self.absolute is None) == (self.relative is None):
            raise ValueError("give exactly one of 'absolute' or 'relative'")
        return self


class GateConfig(Strict):
    """How `evalsvc gate` decides (see README: the gate)."""

    alpha: float = Field(0.05, gt=0, lt=0.5, description="one-sided error rate, Holm-adjusted across primary metrics")
    primary: list[str] = Field(default_factory=lambda: ["pass"], description="metrics pooled over all gated suites "
                               "that decide the exit code")
    margins: dict[str, Margin] = Field(default_factory=lambda: {"default": Margin(absolute=0.05)},
                                       description="per metric name; 'default' for the rest")
    fail_on_inconclusive: bool = False
    top_flips: int = Field(10, ge=0, description="flipped cases listed in the report")

    def margin_for(self, metric: str) -> Margin:
        return self.margins.get(metric) or self.margins.get("default") or Margin(absolute=0.05)
