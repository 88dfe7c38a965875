"""lm-eval 0.4 ``--output_path ... --log_samples`` outputs: ``results_<time>.json`` and its ``samples_<task>_<time>.jsonl``.

Every line of a samples file is read and checked before anything is stored; a bad one is refused naming
the file, the line and the field. Cases, outputs and scores come from ``suites.lm_eval_samples``, the reader
evalsvc's own harness suites use, so an imported document and one run here are stored alike.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalsvc.importers.imported import ImportedCase, ImportedRun, ImportFileError
from evalsvc.suites.harness import metric_specs
from evalsvc.suites.lm_eval_samples import SampleError, samples_of

LOGLIKELIHOOD = {"loglikelihood", "loglikelihood_rolling", "multiple_choice"}
SAMPLING_KEYS = {"temperature", "top_p", "top_k", "do_sample", "seed", "min_p"}  # the variant's, not the task's
NOT_IDENTITY = {"num_concurrent", "max_retries", "timeout", "batch_size", "max_batch_size", "verify_certificate"}  # speed only
FIX = "import the folder lm-eval wrote with --output_path and --log_samples, unchanged"


def find_results(path: Path) -> list[Path]:
    """The results files at ``path``: the file itself, or every results_*.json below a folder."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ImportFileError(str(path), "no such file or folder", FIX)
    found = sorted(path.rglob("results_*.json"))
    if not found:
        raise ImportFileError(str(path), "no lm-eval results_*.json in this folder", FIX)
    return found


def read(path: Path) -> list[ImportedRun]:
    """One run per task of every results file at ``path`` (every task must have its samples file)."""
    return [run for results in find_results(path) for run in _read_results(results)]


def _read_results(path: Path) -> list[ImportedRun]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"{path}:{exc.lineno}", f"not JSON ({exc.msg})", FIX) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError(str(path), f"cannot read it ({exc})", FIX) from None
    for key in ("configs", "versions", "config"):
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            raise ImportFileError(str(path), f"field '{key}' is missing: not an lm-eval 0.4 results file", FIX)
    stamp = path.stem.removeprefix("results_")
    runs = []
    for task, config in sorted(data["configs"].items()):
        if not isinstance(config, dict):
            raise ImportFileError(str(path), f"field 'configs.{task}' is not a mapping (a task's definition)", FIX)
        samples = path.parent / f"samples_{task}_{stamp}.jsonl"
        if not samples.is_file():
            raise ImportFileError(str(path), f"task '{task}' has no samples file {samples.name} beside it",
                                  "run lm-eval with --log_samples, and import the folder it wrote")
        try:
            runs.append(_run(path, data, task, config, samples))
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:  # a field of a shape not checked
            raise ImportFileError(str(path), f"task '{task}': unexpected content ({type(exc).__name__}: {exc})", FIX) from None
    return runs


def _lines(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The samples file's records and the line number of each."""
    out, numbers = [], []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ImportFileError(f"{path}:{number}", f"not UTF-8 text ({exc.reason} at byte {exc.start} of the line)",
                                      FIX) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImportFileError(f"{path}:{number}", f"not JSON ({exc.msg} at column {exc.colno})", FIX) from None
            _check(row, path, number)
            out.append(row)
            numbers.append(number)
    return out, numbers


def _check(row: Any, path: Path, number: int) -> None:
    where = f"{path}:{number}"
    if not isinstance(row, dict):
        raise ImportFileError(where, "a samples line must be a JSON object", FIX)
    for name, kind in (("doc_id", int), ("doc", (dict, str, list)), ("filter", str), ("metrics", list), ("resps", list)):
        if not isinstance(row.get(name), kind) or isinstance(row.get(name), bool):
            raise ImportFileError(where, f"field '{name}' is missing or not {getattr(kind, '__name__', 'a JSON value')}", FIX)
    for metric in row["metrics"]:
        value = row.get(metric) if isinstance(metric, str) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ImportFileError(where, f"field '{metric}' (a metric the line lists) is missing or not a finite number", FIX)


def _run(path: Path, data: dict[str, Any], task: str, config: dict[str, Any], samples_path: Path) -> ImportedRun:
    rows, numbers = _lines(samples_path)
    if not rows:
        raise ImportFileError(str(samples_path), "no samples in it", FIX)
    output_type = config.get("output_type", "generate_until")
    listed = config.get("metric_list") if isinstance(config.get("metric_list"), list) else []
    metrics = [m["metric"] for m in listed if isinstance(m, dict) and isinstance(m.get("metric"), str)]
    try:
        samples = samples_of(rows, metrics, output_type in LOGLIKELIHOOD)
    except SampleError as exc:
        raise ImportFileError(f"{samples_path}:{numbers[exc.index]}", exc.problem, FIX) from None
    cases = [ImportedCase(s.case_id, s.doc, None if s.error else s.output, None if s.error else s.scores, error=s.error)
             for s in samples]
    run_config = data["config"]
    version = data.get("lm_eval_version") or "unknown"
    digest = hashlib.sha256(path.read_bytes() + samples_path.read_bytes()).hexdigest()[:16]
    created = _created(path, data.get("date"))
    return ImportedRun(
        source=f"lm-eval {version}", file=str(samples_path), suite_name=task,
        suite_identity=_task_identity(task, config, data, rows, version), variant_identity=_model_identity(run_config, data),
        metrics=metric_specs(metrics), cases=cases, created_at=created, file_hash=digest,
        header={"imported_from": "lm-eval", "task": task, "task_version": data["versions"].get(task),
                "file": path.name})


def _created(path: Path, stamp: object) -> datetime:
    """When lm-eval ran (its ``date``, seconds since 1970), or now where the file gives none."""
    if stamp is None:
        return datetime.now(UTC)
    try:
        if isinstance(stamp, bool) or not isinstance(stamp, int | float | str):
            raise ValueError(stamp)
        return datetime.fromtimestamp(float(stamp), UTC)
    except (OverflowError, OSError, ValueError):
        raise ImportFileError(str(path), f"field 'date' ({str(stamp)[:40]}) is not a time in seconds since 1970", FIX) from None


def _task_identity(task: str, config: dict[str, Any], data: dict[str, Any], rows: list[dict[str, Any]],
                   version: str) -> dict[str, Any]:
    """The task as defined (its config without what lm-eval merges in from the model: metadata, sampling, data paths),
    its documents and targets (lm-eval's own hashes of each), the shots and lm-eval's version (its metrics' code)."""
    kept = {k: v for k, v in config.items() if k not in ("metadata", "dataset_kwargs", "generation_kwargs")}
    kept["generation_kwargs"] = {k: v for k, v in _mapping(config.get("generation_kwargs")).items() if k not in SAMPLING_KEYS}
    kept["metadata_version"] = _mapping(config.get("metadata")).get("version")
    docs = sorted({(r["doc_id"], str(r.get("doc_hash")), str(r.get("target_hash"))) for r in rows})
    return {"lm_eval_task": task, "config": kept, "version": data["versions"].get(task),
            "n_shot": _mapping(data.get("n-shot")).get(task), "lm_eval": version, "docs": docs,
            "fewshot_as_multiturn": data.get("fewshot_as_multiturn"), "limit": data["config"].get("limit")}


def _model_identity(run_config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """What the file says changes the model's answers: model type and arguments (not concurrency or retries),
    sampling settings, system instruction and chat template."""
    args = run_config.get("model_args")
    if isinstance(args, str):  # older lm-eval writes "k=v,k=v"
        args = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    args = {k: v for k, v in _mapping(args).items() if k not in NOT_IDENTITY}
    return {"lm_eval_model": run_config.get("model"), "model_args": args, "gen_kwargs": run_config.get("gen_kwargs"),
            "system_instruction_sha": data.get("system_instruction_sha"), "chat_template_sha": data.get("chat_template_sha")}



def _mapping(value: object) -> dict[str, Any]:
    """An optional mapping field, read as empty where the file holds something else (lm-eval versions differ here)."""
    return value if isinstance(value, dict) else {}
