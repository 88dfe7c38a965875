"""inspect_ai eval logs (``.eval`` or ``.json``), read by inspect_ai's own reader (``inspect_ai.log.read_eval_log``).

One case per sample and epoch (``sample_index`` = epoch - 1). Each scorer's value is a metric: inspect's
C/I/P/N through its own ``value_to_float`` (1, 0, 0.5, 0), a bool or number as it is, a dict value one
metric per key (``<scorer>.<key>``). A scorer whose values are all C/I-like or bools is binary, and ``pass``
is every binary metric at 1, as for lm-eval tasks. A sample that errored is an errored case.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalsvc.checks.base import MetricSpec
from evalsvc.identity import content_hash
from evalsvc.importers.imported import ImportedCase, ImportedRun, ImportFileError

FIX = "import the .eval or .json log inspect wrote (inspect eval ... --log-dir DIR), unchanged"
LETTERS = {"C", "I", "P", "N"}


def read(path: Path) -> ImportedRun:
    from inspect_ai import __version__ as version
    from inspect_ai.log import read_eval_log

    try:
        log = read_eval_log(str(path))
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"{path}:{exc.lineno}", f"not JSON ({exc.msg})", FIX) from None
    except Exception as exc:  # inspect's reader raises pydantic, zip and value errors alike
        raise ImportFileError(str(path), f"not an inspect_ai eval log ({type(exc).__name__}: {str(exc)[:300]})", FIX) from None
    if not log.samples:
        raise ImportFileError(str(path), "the log holds no samples", "run inspect again without --no-log-samples")
    values: dict[str, list[float]] = {}
    binary: dict[str, bool] = {}
    cases = [_case(path, sample, values, binary) for sample in log.samples]
    metrics = {m: MetricSpec(m, "binary" if binary[m] and all(v in (0.0, 1.0) for v in values[m]) else "continuous")
               for m in values}
    if any(spec.kind == "binary" for spec in metrics.values()):
        metrics["pass"] = MetricSpec("pass", "binary")
        cases = [_with_pass(c, metrics) for c in cases]
    ev = log.eval
    created = datetime.fromisoformat(ev.created.replace("Z", "+00:00")) if isinstance(ev.created, str) else ev.created
    generate = ev.model_generate_config.model_dump(mode="json", exclude_none=True) if ev.model_generate_config else {}
    error = None if log.status == "success" else (
        f"the inspect eval {log.status}: {log.error.message if log.error else 'no error recorded'}")
    return ImportedRun(
        source=f"inspect_ai {version}", file=str(path), suite_name=ev.task,
        suite_identity={"inspect_task": ev.task, "task_version": ev.task_version, "task_args": ev.task_args,
                        "dataset": {"name": ev.dataset.name, "sample_ids": ev.dataset.sample_ids},
                        "plan": [(step.solver, step.params) for step in log.plan.steps], "scorers": sorted(values),
                        "samples": sorted({(str(s.id), content_hash(_plain([s.input, s.target]))) for s in log.samples})},
        variant_identity={"inspect_model": ev.model, "model_base_url": ev.model_base_url,
                          "model_args": _plain(ev.model_args), "generate_config": generate},
        metrics=metrics, cases=cases, created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
        file_hash=hashlib.sha256(path.read_bytes()).hexdigest()[:16], error=error,
        header={"imported_from": "inspect_ai", "task": ev.task, "task_version": ev.task_version, "file": path.name})


def _case(path: Path, sample: Any, values: dict[str, list[float]], binary: dict[str, bool]) -> ImportedCase:
    spec = {"input": _plain(sample.input), "target": _plain(sample.target)}
    index = max(int(sample.epoch or 1) - 1, 0)
    if sample.error is not None:
        return ImportedCase(str(sample.id), spec, None, None, index, f"inspect sample error: {sample.error.message[:500]}")
    scores: dict[str, float] = {}
    for scorer, score in (sample.scores or {}).items():
        for name, value, is_binary in _values(path, sample.id, scorer, score.value):
            scores[name] = value
            values.setdefault(name, []).append(value)
            binary[name] = binary.get(name, True) and is_binary
    return ImportedCase(str(sample.id), spec, sample.output.completion if sample.output else "", scores, index)


def _values(path: Path, sample_id: Any, scorer: str, value: Any) -> list[tuple[str, float, bool]]:
    from inspect_ai.scorer import value_to_float

    if isinstance(value, dict):
        return [item for key, v in value.items() for item in _values(path, sample_id, f"{scorer}.{key}", v)]
    if isinstance(value, bool):
        return [(scorer, float(value), True)]
    if isinstance(value, int | float):
        return [(scorer, float(value), False)]
    if isinstance(value, str) and value in LETTERS:
        return [(scorer, float(value_to_float()(value)), value in ("C", "I"))]
    raise ImportFileError(f"{path}: sample {sample_id}", f"scorer '{scorer}' has the value {str(value)[:80]!r}, which is "
                          "no number, bool or C/I/P/N", "import logs whose scorers give such values (or a dict of them)")


def _with_pass(case: ImportedCase, metrics: dict[str, MetricSpec]) -> ImportedCase:
    if case.scores is None:
        return case
    flags = [v for m, v in case.scores.items() if metrics[m].kind == "binary"]
    return ImportedCase(case.case_id, case.spec, case.output, {**case.scores, "pass": float(all(v >= 1.0 for v in flags))},
                        case.sample_index, case.error)


def _plain(value: Any) -> Any:
    """A pydantic value (chat messages) as plain JSON data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
