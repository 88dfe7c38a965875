"""lm-eval harness tasks as suites: the task files, validated and hashed (evalsvc.engine.harness runs them).

A suite whose header has ``harness:`` names one lm-eval task: a bundled YAML task in
the ``include`` folder beside the header, or a task from lm-eval's registry. Task YAMLs
are data: a ``!function`` tag (lm-eval's way of importing code from beside the YAML) is
refused. Relative ``data_files`` are made absolute at run time, because lm-eval resolves
them against the current directory (and cannot download anything offline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evalsvc.checks.base import MetricSpec
from evalsvc.config.harness import HarnessSpec
from evalsvc.config.yamlfile import parse_yaml
from evalsvc.errors import SuiteError
from evalsvc.identity import content_hash

BINARY_METRICS = {"exact_match", "acc", "acc_norm", "pass@1"}


def _lm_eval_version() -> str:
    import importlib.metadata as md

    try:
        return md.version("lm_eval")
    except md.PackageNotFoundError:
        return "not-installed"


def content_identity(spec: HarnessSpec, base: Path) -> str:
    """Hash of the task and the code that scores it: lm-eval's version (its metrics, filters and registry tasks), and
    the bundled task files (YAML and data), so editing them or upgrading lm-eval starts a new suite version."""
    if spec.include is None:  # a task of lm-eval's registry: its code and YAML are lm-eval's version's
        return content_hash({"registry_task": spec.task, "lm_eval": _lm_eval_version()})
    folder = base / spec.include
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return content_hash({"lm_eval": _lm_eval_version(),
                         "files": {str(p.relative_to(folder)): p.read_bytes().hex() for p in files}})


def _load_task_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(str(path), f"cannot read it as UTF-8 text ({exc})", "save the task YAML as UTF-8") from None
    _, data = parse_yaml(text, path, SuiteError,
                         tag_fix="suites are data only: replace !function with lm-eval's built-in filters and metrics")
    if not isinstance(data, dict):
        raise SuiteError(str(path), "a task YAML must be a mapping", "see suites/harness/ for an example")
    return data


def validate(spec: HarnessSpec, base: Path, where: str) -> None:
    """Refuse what cannot run: a missing include folder, code-importing YAML, an unknown local task."""
    if spec.include is None:
        return
    folder = base / spec.include
    if not folder.is_dir():
        raise SuiteError(where, f"harness.include folder {folder} does not exist", "point it at the folder of task YAMLs")
    names = {_load_task_yaml(p).get("task") for p in folder.glob("*.yaml")}
    if spec.task not in names:
        raise SuiteError(where, f"no task '{spec.task}' in {folder}", f"tasks there: {', '.join(sorted(map(str, names)))}")


def materialise(spec: HarnessSpec, base: Path, out: Path) -> None:
    """Copy the task YAMLs into ``out`` with absolute data file paths."""
    assert spec.include is not None
    folder = (base / spec.include).resolve()
    for path in folder.glob("*.yaml"):
        data = _load_task_yaml(path)
        files = (data.get("dataset_kwargs") or {}).get("data_files")
        if isinstance(files, dict):
            data["dataset_kwargs"]["data_files"] = {
                split: str(folder / f) if isinstance(f, str) and not Path(f).is_absolute() else f for split, f in files.items()}
        (out / path.name).write_text(yaml.safe_dump(data, sort_keys=False))


def metric_specs(names: list[str]) -> dict[str, MetricSpec]:
    specs = {n: MetricSpec(n, "binary" if n in BINARY_METRICS else "continuous") for n in names}
    if any(s.kind == "binary" for s in specs.values()):
        specs["pass"] = MetricSpec("pass", "binary")
    return specs
