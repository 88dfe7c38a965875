"""`drift:` in evalsvc.yaml: how `evalsvc serve` watches each series against its own history after every firing."""

from __future__ import annotations

from pydantic import Field

from evalsvc.config.base import Strict


class DriftConfig(Strict):
    """Defaults of `evalsvc drift` and of the drift alerts the service raises after each firing."""

    alerts: bool = Field(True, description="after each firing, check the series it touched and raise or resolve drift "
                         "alerts (one when a drop starts, one when it recovers or is acknowledged)")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="chance of any false alarm over a block of 20 looks across "
                         "every series checked together (Holm across the series)")
    warmup: int = Field(5, ge=2, le=50, description="runs that set a series' reference level before it is looked at")
    upstream_alpha: float = Field(0.05, gt=0, lt=0.5, description="chance of any false 'upstream change' flag over 20 "
                                  "runs of a stable series (each run tested at alpha / 20 against its learned output noise)")
    metrics: list[str] | None = Field(None, description="metrics watched by the service (default: every metric a run "
                                      "stores, quality and speed)")
