"""``evalsvc import``: results made elsewhere (lm-eval, inspect_ai) into the store, as runs with per-case results."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from evalsvc.cli.options import CONFIG_OPTION


@click.group("import")
def import_group() -> None:
    """Store results made by lm-eval or inspect_ai as runs of a named variant.

    \b
    Gate, drift, the dashboard and `evalsvc cases` then read them like any run:
      evalsvc import lm-eval out/ -v prod-fp16 --family llama-8b
      evalsvc import lm-eval out-int4/ -v prod-int4 --family llama-8b --quantization W4A16
      evalsvc gate --candidate prod-int4 --baseline prod-fp16 --no-run
    Cases pair across variants when both ran the same task on the same documents
    (the suite version hashes the task's definition and lm-eval's hash of each
    document). Importing a file again changes nothing; a file that does not parse
    is refused, naming the file, line and field, and nothing is written.
    """


def _identity_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        CONFIG_OPTION,
        click.option("--variant", "-v", "name", required=True, help="Name to store the results under (not a configured variant)."),
        click.option("--family", required=True, help="Model family: variants of one family are compared with its baseline."),
        click.option("--quantization", default=None, help="e.g. FP16, FP8, W8A8, W4A16, Q4_K_M (part of the identity)."),
        click.option("--suite", "-s", default=None, help="Suite name for the task (default: the task's own name)."),
        click.option("--json", "as_json", is_flag=True, help="Print the runs stored as JSON."),
    ]):
        command = option(command)
    return command


def _report(recorded: list[Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in recorded], indent=2))
        return
    for r in recorded:
        what = "stored as" if r.new else "already imported as"
        click.echo(f"{r.variant} on {r.suite}: {what} run {r.run_id} ({r.status}, {r.n_cases} cases)")


@import_group.command("lm-eval")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@_identity_options
def import_lm_eval(path: Path, config_path: str, name: str, family: str, quantization: str | None, suite: str | None,
                   as_json: bool) -> None:
    """lm-eval 0.4 output written with --output_path and --log_samples (a results_*.json, or a folder of them).

    One run per task; the variant's identity adds what the results file says about the model (model type and
    arguments, generation settings, system instruction and chat template hashes).
    """
    from evalsvc.importers.lm_eval_output import read
    from evalsvc.service.imports import import_runs

    _report(import_runs(read, path, config_path, name, family, quantization, suite), as_json)


@import_group.command("inspect")
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_identity_options
def import_inspect(log: Path, config_path: str, name: str, family: str, quantization: str | None, suite: str | None,
                   as_json: bool) -> None:
    """An inspect_ai eval log (.eval or .json), read by inspect_ai's own reader.

    One case per sample and epoch; each scorer's value is a metric (C/I/P/N as 1/0/0.5/0, numbers as they are); the
    variant's identity adds the log's model, base URL, model args and generate config.
    """
    from evalsvc.importers.inspect_log import read
    from evalsvc.service.imports import import_runs

    _report(import_runs(lambda p: [read(p)], log, config_path, name, family, quantization, suite), as_json)
