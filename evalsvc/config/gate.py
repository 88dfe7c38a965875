"""`gate:` in evalsvc.yaml: how a candidate is judged against its baseline."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from evalsvc.config.base import Strict
from evalsvc.config.sequential import SequentialGate

# evalsvc.stats.speed.METRICS (a sibling of this layer, so named again here; a test keeps the two equal)
SPEED_METRICS = ("latency_p50", "latency_p95", "tokens_per_s", "output_tokens")
MIN_SPEED_RECOVERY = 0.5  # a relative speed margin below this allows the candidate to be more than twice as slow
# divergence statistics a margin can make decide (evalsvc.verdicts.divergence), each with the bound it takes: kld has no
# loss from the baseline to allow (the baseline's KL from itself is 0), so its margin is its largest value, not a delta
DIVERGENCE_BOUNDS = {"kld": "max", "same_output": "min"}


class Margin(Strict):
    """Non-inferiority margin: an absolute number of points, or a relative recovery of the baseline; for a divergence
    statistic (``DIVERGENCE_BOUNDS``) the bound it must be shown to keep: ``kld: {max: 0.05}``, ``same_output: {min: 0.9}``."""

    absolute: float | None = Field(None, ge=0, description="e.g. 0.05: the candidate may be at most 5 points worse")
    relative: float | None = Field(None, gt=0, le=1, description="e.g. 0.95: keep at least 95% of the baseline mean")
    max: float | None = Field(None, gt=0, description="kld only, in nats: a pass needs the upper end of the kld interval "
                              "below it, a regression the lower end above it (docs/divergence.md)")
    min: float | None = Field(None, gt=0, le=1, description="same_output only: a pass needs the lower end of the interval "
                              "of the share of identical answers above it, a regression the upper end below it")

    @model_validator(mode="after")
    def _one(self) -> Margin:
        if sum(v is not None for v in (self.absolute, self.relative, self.max, self.min)) != 1:
            raise ValueError("give exactly one of 'absolute' or 'relative' (or, for a divergence statistic, 'max' for kld "
                             "or 'min' for same_output)")
        return self


class SuiteGate(Strict):
    """How one suite takes part in the gate (``gate.suites.<name>``)."""

    critical: bool = Field(False, description="a pass needs this suite non-inferior on its own, and it is tested for "
                           "regression at alpha on its own, outside the Holm family (more power for a suite you cannot "
                           "lose; up to alpha more false regressions)")
    weight: float = Field(1.0, gt=0, description="each of this suite's cases counts this many times in the pooled metric, "
                          "and the suite's share of alpha in the Holm families is this weight (weighted Holm): weight 2 is "
                          "tested at twice the level of weight 1; the family's error rate stays alpha")


class GateConfig(Strict):
    """How `evalsvc gate` decides (see README: the gate)."""

    alpha: float = Field(0.05, gt=0, lt=0.5, description="one-sided error rate: of a false pass, and of any false "
                         "regression (Holm across the pooled metric and the suites)")
    decide: Literal["pooled", "every_suite"] = Field(
        "pooled", description="pooled: a pass needs the primary metric pooled over all gated suites non-inferior, no suite "
        "shown worse than the baseline and every critical suite non-inferior on its own; every_suite: every suite must be "
        "non-inferior on its own (stricter: small suites rarely pass)")
    primary: list[str] = Field(default_factory=lambda: ["pass"], description="metrics that decide, in every gated suite "
                               "that measures them (pooled over the suites as a summary)")
    margins: dict[str, Margin] = Field(default_factory=lambda: {"default": Margin(absolute=0.05)},
                                       description="per metric name; 'default' for the rest")
    fail_on_inconclusive: bool = Field(True, description="inconclusive (not shown to be no worse) exits 3, not 0; "
                                       "`--allow-inconclusive` or false here for exit 0")
    samples_pass: Literal["mean", "majority", "any"] = Field(
        "mean", description="with samples > 1, a case's pass: the share of its samples that pass (compared as a score), "
        "pass when most do, or pass@k (any does); pass/fail comparisons use Tango's interval")
    health_margin: float = Field(0.02, ge=0, lt=1, description="serving health: the candidate may fail to answer at most "
                                 "this share of cases more than the baseline; a shown excess is a regression (exit 1)")
    suites: dict[str, SuiteGate] = Field(default_factory=dict, description="per suite name: critical, weight")
    max_canary_failure_rate: float = Field(0.05, ge=0, le=1, description="a judge that let more of its canaries (answers "
                                           "written to manipulate it) through, in either run, decides nothing: its "
                                           "metrics and the pass of the suites it judged are shown, not decided")
    top_flips: int = Field(10, ge=0, description="flipped cases listed in the report")
    sequential: SequentialGate | None = Field(None, description="ask the cases in looks and stop once the verdict is "
                                              "decided (`evalsvc gate --sequential` turns it on with the defaults)")

    @field_validator("margins")
    @classmethod
    def _speed_recovery(cls, margins: dict[str, Margin]) -> dict[str, Margin]:
        """``relative`` is the share kept, for speed as for quality: ``latency_p95: {relative: 0.10}`` reads like "10%
        slower" but allows a p95 latency 1.9 times the baseline's, so a small share on a speed metric is refused."""
        errors = [InitErrorDetails(type=PydanticCustomError("speed_margin", _speed_message(name, m.relative)),
                                   loc=(name, "relative"), input=m.relative)
                  for name, m in margins.items()
                  if name in SPEED_METRICS and m.relative is not None and m.relative < MIN_SPEED_RECOVERY]
        if errors:
            raise ValidationError.from_exception_data("gate.margins", errors)
        return margins

    @field_validator("margins")
    @classmethod
    def _divergence_bounds(cls, margins: dict[str, Margin]) -> dict[str, Margin]:
        """A divergence statistic takes the bound named in ``DIVERGENCE_BOUNDS`` and nothing else; every other metric
        takes ``absolute`` or ``relative``, never a bound."""
        errors = []
        for name, m in margins.items():
            given = next(k for k in ("absolute", "relative", "max", "min") if getattr(m, k) is not None)
            wanted = DIVERGENCE_BOUNDS.get(name)
            if wanted is not None and given != wanted:
                errors.append(InitErrorDetails(type=PydanticCustomError("divergence_margin", _bound_message(name, given, wanted)),
                                               loc=(name, given), input=getattr(m, given)))
            elif wanted is None and given in ("max", "min"):
                errors.append(InitErrorDetails(type=PydanticCustomError(
                    "divergence_margin", f"'{given}' bounds a divergence statistic "
                    f"({', '.join(f'{k}: {{{v}: ...}}' for k, v in DIVERGENCE_BOUNDS.items())}); for {name} write "
                    "{absolute: 0.05} (at most 5 points worse) or {relative: 0.95} (keep 95% of the baseline)"),
                    loc=(name, given), input=getattr(m, given)))
        if errors:
            raise ValidationError.from_exception_data("gate.margins", errors)
        return margins

    def suite(self, name: str) -> SuiteGate:
        return self.suites.get(name) or SuiteGate()

    def margin_for(self, metric: str) -> Margin:
        return self.margins.get(metric) or self.margins.get("default") or Margin(absolute=0.05)


def _bound_message(metric: str, given: str, wanted: str) -> str:
    """Why a divergence statistic refuses a margin other than its bound, and what to write."""
    example = "{max: 0.05}: a pass needs the upper end of its interval below 0.05 nats" if wanted == "max" else \
        "{min: 0.9}: a pass needs the lower end of its interval above 0.9"
    return (f"{metric} is bounded, not compared with a loss from the baseline (the baseline diverges from itself by "
            f"nothing), so '{given}' does not apply to it; write {example}")


def _speed_message(metric: str, recovery: float) -> str:
    """Why a small recovery share on a speed metric is refused, and what to write (the margin is (1 - r) x the baseline)."""
    if metric == "tokens_per_s":
        allows, intent, unit = f"the candidate's tokens per second fall by up to {1 - recovery:.0%}", "fewer tokens per second", \
            "tokens per second"
    else:
        what, unit = ("latency", "seconds") if metric.startswith("latency") else ("output length", "tokens")
        allows = f"the candidate's {what} grow by up to {1 - recovery:.0%} ({2 - recovery:g} times the baseline's)"
        intent = "slower" if metric.startswith("latency") else "longer"
    return (f"relative is the share of the baseline kept (a recovery, as for quality), not the loss allowed: relative "
            f"{recovery:g} lets {allows}; for 'at most 10% {intent}' write {{relative: 0.9}} (or an absolute margin in {unit})")
