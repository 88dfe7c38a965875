"""`gate.sequential:` in evalsvc.yaml: a gate that asks the cases in looks and stops once its verdict is decided."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from evalsvc.config.base import Strict

SPENDING = {"obf": "obrien-fleming", "pocock": "pocock"}  # the names evalsvc.stats.group_sequential takes


class SequentialGate(Strict):
    """Group-sequential looks, or an anytime-valid test with a budget (docs/gate.md: choosing looks and spending;
    docs/statistics.md: the error rates)."""

    mode: Literal["looks", "anytime"] = Field(
        "looks", description="looks: group-sequential boundaries over all gated cases (a planned end); anytime: a betting "
        "test valid under any number of looks and any stopping rule, for pools with no natural end (asks at most "
        "`budget` cases, a look every `every` cases)")
    budget: int | None = Field(None, ge=2, description="anytime: the most cases asked (default: all the gated cases)")
    every: int | None = Field(None, ge=1, description="anytime: cases between looks (default: a twentieth of the budget, "
                              "at least 20)")
    finite: bool = Field(False, description="anytime: the claim is about the gated suites themselves (sampling without "
                         "replacement: exact once every case is in), not about the cases they were drawn from")

    looks: int = Field(5, ge=2, le=20, description="equally spaced looks over all gated cases; the gate stops at the "
                       "first look whose boundary is crossed, and at the last decides as the fixed gate does")
    spending: Literal["obf", "pocock"] = Field(
        "obf", description="how alpha is spent over the looks (Lan-DeMets): obf (O'Brien-Fleming-type) keeps early "
        "looks strict and the last look nearly the fixed gate's; pocock stops earlier on large effects, later otherwise")
    seed: int | None = Field(None, description="the order the cases are asked in (default: a new one per gate, "
                             "stored in its slot; the same seed asks the same cases first)")
