"""Checks: the scorers that turn one output into metric values.

A check is a small pydantic model (its parameters, validated when the suite loads)
with a ``score`` method. Built-ins register through the same ``@check`` decorator that
plugins use; plugins are found through the ``evalsvc.checks`` entry-point group.

Every metric a check emits is described by a ``MetricSpec`` so the statistics know
whether it is pass/fail or continuous, and which direction is better.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class Case:
    """A validated case with its checks built: the value every check scores against (made by evalsvc.suites)."""

    id: str
    input: str | tuple[dict[str, str], ...]
    context: tuple[str, ...]
    references: tuple[str, ...]
    checks: tuple[Check, ...]
    spec: dict[str, Any] = field(compare=False, repr=False)

    @property
    def context_text(self) -> str:
        return "\n\n".join(self.context)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Literal["binary", "continuous"]
    higher_is_better: bool = True


class Check(BaseModel):
    """Base class of every check; subclasses add their parameters as fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    name: str | None = None

    needs: ClassVar[tuple[str, ...]] = ()  # case fields that must be present ("references", "context")
    model_graded: ClassVar[bool] = False  # graded by a judge model in the run's judge phase, not by score()

    @property
    def label(self) -> str:
        return self.name or self.type

    def metrics(self) -> list[MetricSpec]:
        return [MetricSpec(self.label, "binary")]

    def score(self, output: str, case: Case) -> dict[str, float]:
        raise NotImplementedError

    @property
    def gives_verdict(self) -> bool:
        """False for checks that only measure (a ROUGE score without a threshold)."""
        return True

    def passed(self, scores: dict[str, float]) -> bool | None:
        """Whether the case passes this check; None when the check only measures."""
        return bool(scores[self.label] >= 1.0)

    def code_identity(self) -> str | None:
        """A hash of code this check runs that its parameters do not name (a vendored script), or None."""
        return None

    def resolved(self, base: Path) -> Check:
        """This check with paths made absolute against the suite's folder (and anything it loads, loaded)."""
        return self


_REGISTRY: dict[str, type[Check]] = {}
_plugins_loaded = False
# The built-in checks register with @check when their module is imported, exactly as a plugin's do
# (plugins are named by the ``evalsvc.checks`` entry-point group instead).
BUILTINS = ("evalsvc.checks.text", "evalsvc.checks.structured", "evalsvc.checks.rouge", "evalsvc.checks.hf",
            "evalsvc.checks.judge")


def check(type_name: str):
    """Register a Check subclass under ``type_name`` (used by built-ins and plugins alike)."""

    def register(cls: type[Check]) -> type[Check]:
        _REGISTRY[type_name] = cls
        return cls

    return register


def registry() -> dict[str, type[Check]]:
    global _plugins_loaded
    if not _plugins_loaded:
        for module in BUILTINS:
            importlib.import_module(module)
        for ep in importlib.metadata.entry_points(group="evalsvc.checks"):
            ep.load()
        _plugins_loaded = True
    return _REGISTRY


class UnknownCheck(ValueError):
    pass


def build_check(raw: Any) -> Check:
    """Validate one check spec from a suite; raises ValueError/ValidationError with a hint."""
    if not isinstance(raw, dict) or "type" not in raw:
        raise UnknownCheck("a check must be a mapping with a 'type', e.g. {\"type\": \"contains\", \"value\": \"Paris\"}")
    reg = registry()
    kind = raw["type"]
    if kind not in reg:
        close = difflib.get_close_matches(str(kind), reg, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "known types: " + ", ".join(sorted(reg))
        raise UnknownCheck(f"unknown check type '{kind}'; {hint}")
    return reg[kind].model_validate(raw)


def score_output(checks: list[Check], output: str, case: Case,
                 graded: dict[str, float] | None = None) -> dict[str, float]:
    """All metric values for one output, plus ``pass`` (every pass/fail check passed).

    Model-graded checks take their values from ``graded`` (the judge's verdicts); before
    the judge phase they are left out.
    """
    scores: dict[str, float] = {}
    verdicts: list[bool] = []
    for c in checks:
        if c.model_graded:
            if graded is None:
                continue
            values = {k: v for k, v in graded.items() if k in {m.name for m in c.metrics()}}
        else:
            values = c.score(output, case)
        scores.update(values)
        verdict = c.passed(values)
        if verdict is not None:
            verdicts.append(verdict)
    if verdicts:
        scores["pass"] = float(all(verdicts))
    return scores


def metric_specs(checks: list[Check]) -> dict[str, MetricSpec]:
    specs = {m.name: m for c in checks for m in c.metrics()}
    if any(c.gives_verdict for c in checks):
        specs["pass"] = MetricSpec("pass", "binary")
    return specs
