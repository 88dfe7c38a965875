"""One case of one run as the Compare page shows it: passed or failed, and each check with what it expected.

A case's stored ``spec`` is the suite's case as written (``checks`` with their parameters, defaults left out); its
``scores`` are the check labels' values and ``pass``. Nothing here decides anything: it reads what the run stored.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

PASSED, FAILED, UNSCORED = ":green-badge[✓ pass]", ":red-badge[✗ fail]", ":gray-badge[no pass/fail]"  # Streamlit markdown


def outcome(row: dict[str, Any] | None) -> str:
    """The case's stored pass/fail as a badge, or why there is none (missing, errored, scored without a verdict)."""
    if row is None:
        return ":gray-badge[missing from this run]"
    if row.get("status") != "ok":
        return f":orange-badge[{row.get('status')}] {row.get('error') or 'no answer'}"
    value = (row.get("scores") or {}).get("pass")
    if value is None:
        return UNSCORED
    return PASSED if value >= 1.0 else FAILED


def expected(check: dict[str, Any]) -> str:
    """A check's parameters as a reader wants them: the lone ``value`` as written, else ``key: value`` pairs."""
    params = {k: v for k, v in check.items() if k not in ("type", "name")}
    if list(params) == ["value"]:
        return _text(params["value"])
    return ", ".join(f"{k}: {_text(v)}" for k, v in params.items())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def checks(spec: dict[str, Any], row: dict[str, Any] | None) -> pd.DataFrame:
    """One row per check of the case: its name, what it expects, and this side's score; then any other score the run
    stored (a metric no check of the spec names, e.g. a harness task's), so nothing scored is hidden."""
    scores = (row or {}).get("scores") or {}
    rows, seen = [], set()

    def score(label: str) -> str:
        value = scores.get(label)
        if value is None:
            return ""
        mark = "✓ " if value >= 1.0 else "✗ " if value == 0.0 else ""
        return f"{mark}{value:.3g}"

    for check in spec.get("checks") or []:
        label = check.get("name") or check.get("type", "?")
        seen.add(label)
        rows.append({"check": label if label == check.get("type") else f"{label} ({check.get('type')})",
                     "expected": expected(check), "score": score(label)})
    for label in sorted(set(scores) - seen - {"pass"}):
        rows.append({"check": label, "expected": "", "score": score(label)})
    return pd.DataFrame(rows, columns=["check", "expected", "score"])
