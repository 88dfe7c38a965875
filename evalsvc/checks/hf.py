"""Any Hugging Face ``evaluate`` metric as a check (BLEU, chrF, BERTScore, a metric of your own).

Hub metrics are Python scripts that ``evaluate`` downloads on first use, so offline they
cannot load. Vendor the script instead (copy ``<name>/<name>.py`` from the metric's Hub
repository into your suites folder) and point ``metric`` at that path: it is then loaded
from disk, with no network. The module is loaded when the suite is validated, so a metric
that cannot load is reported by ``evalsvc suites validate``, not halfway through a run.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from evalsvc.checks.base import Case, Check, MetricSpec, check
from evalsvc.identity import content_hash


@lru_cache(maxsize=32)
def load_metric(metric: str) -> Any:
    import evaluate

    try:
        return evaluate.load(metric)
    except (FileNotFoundError, ConnectionError, OSError) as exc:
        local = Path(metric).exists()
        if local:
            raise ValueError(f"cannot load the metric module at {metric}: {exc}") from None
        raise ValueError(
            f"cannot load the evaluate metric '{metric}' ({type(exc).__name__}): it is not a local path and the Hub "
            "cannot be reached (HF_EVALUATE_OFFLINE or no network). Vendor it: copy the metric's script "
            f"('{metric}/{metric}.py' in the Hub repository evaluate-metric/{metric}) next to the suite and set "
            f"metric: ./{metric}/{metric}.py"
        ) from None
    except Exception as exc:  # the module's own import failed: a missing dependency, a syntax error
        raise ValueError(f"cannot load the metric module '{metric}': {type(exc).__name__}: {exc}") from None


@check("hf_metric")
class HFMetric(Check):
    """One value of an ``evaluate`` metric, computed on the answer and the case's references."""

    type: Literal["hf_metric"] = "hf_metric"
    metric: str = Field(description="a local metric script or folder (relative to the suite header), or a Hub name")
    key: str | None = Field(None, description="which entry of the metric's result to keep (default: the first number)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra arguments for compute()")
    higher_is_better: bool = True
    threshold: float | None = None
    needs = ("references",)

    def metrics(self) -> list[MetricSpec]:
        return [MetricSpec(self.label, "continuous", self.higher_is_better)]

    @property
    def label(self) -> str:
        return self.name or Path(self.metric).stem

    @property
    def gives_verdict(self) -> bool:
        return self.threshold is not None

    def resolved(self, base: Path) -> HFMetric:
        """Load the metric now; a local script must lie inside the suite's folder (suites bring no other code)."""
        local = base / self.metric
        if local.exists() or Path(self.metric).exists() or self.metric.endswith(".py"):
            folder = base.resolve()
            if not local.exists() or not local.resolve().is_relative_to(folder):
                raise ValueError(f"metric {self.metric!r} is not a script inside the suite's folder {folder}: a suite may "
                                 "only load metric code vendored beside it; copy the script there and give its relative path")
        resolved = self.model_copy(update={"metric": str(local.resolve())}) if local.exists() else self
        load_metric(resolved.metric)
        return resolved

    def code_identity(self) -> str | None:
        """The vendored script's bytes (every .py of a metric folder): editing it scores differently, a new version."""
        path = Path(self.metric)
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
        return content_hash({str(f.relative_to(path) if path.is_dir() else f.name): f.read_bytes().hex() for f in files}) \
            if files else None

    def score(self, output: str, case: Case) -> dict[str, float]:
        module = load_metric(self.metric)
        refs = list(case.references)
        try:
            result = module.compute(predictions=[output], references=[refs[0]], **self.kwargs)
        except (ValueError, TypeError):  # metrics that take several references per prediction
            result = module.compute(predictions=[output], references=[refs], **self.kwargs)
        if self.key is not None:
            return {self.label: float(result[self.key])}
        first = next(v for v in result.values() if isinstance(v, int | float))
        return {self.label: float(first)}

    def passed(self, scores: dict[str, float]) -> bool | None:
        if self.threshold is None:
            return None
        value = scores[self.label]
        return value >= self.threshold if self.higher_is_better else value <= self.threshold
