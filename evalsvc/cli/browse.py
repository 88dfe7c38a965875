"""Stored results on the command line: runs, their cases, two runs side by side, and exports. All only read."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from evalsvc.cli.options import CONFIG_OPTION

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
WIDE_OPTION = click.option("--wide", is_flag=True, help="Print inputs, outputs and errors whole (one line each), not cut.")


def _store(config_path: str) -> Any:
    from evalsvc.config import load_config
    from evalsvc.service.runs import open_store

    return open_store(load_config(config_path))


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _short(text: Any, width: int | None = 60) -> str:
    """One line of ``text``, cut to ``width`` characters (None: whole, for --wide)."""
    if text is None:
        return "-"
    one = str(text).replace("\n", "\\n")
    return one if width is None or len(one) <= width else one[:width - 1] + "…"


def _took(run: dict[str, Any]) -> str:
    if not run["started_at"] or not run["finished_at"]:
        return "-"
    return f"{(datetime.fromisoformat(run['finished_at']) - datetime.fromisoformat(run['started_at'])).total_seconds():.0f}s"


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(point: dict[str, Any]) -> str:
    if point["ci_low"] is None and point["ci_high"] is None:
        return "-"
    return f"[{_num(point['ci_low'])}, {_num(point['ci_high'])}]"


def _pass(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


@click.group("runs")
def runs_group() -> None:
    """Stored runs: the newest first, or one run in full."""


@runs_group.command("list")
@CONFIG_OPTION
@click.option("--suite", "-s", default=None, help="Only runs of this suite.")
@click.option("--variant", "-v", default=None, help="Only runs of this variant.")
@click.option("--status", default=None, type=click.Choice(["planned", "running", "succeeded", "failed", "cancelled"]),
              help="Only runs in this state.")
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(min=1), help="The newest N runs.")
@JSON_OPTION
@WIDE_OPTION
def runs_list(config_path: str, suite: str | None, variant: str | None, status: str | None, limit: int, as_json: bool,
              wide: bool) -> None:
    """Runs, newest first: id, suite, variant, status, when, how long, cases ok/errored, error."""
    from evalsvc.cli.tables import table
    from evalsvc.service.results import list_runs
    from evalsvc.service.selection import check_stored

    engine = _store(config_path)
    check_stored(engine, [suite], [variant])
    rows = list_runs(engine, suite, variant, status, limit)
    if as_json:
        return _echo_json(rows)
    if not rows:
        return click.echo("no runs match: `evalsvc run` makes them")
    click.echo(table(["id", "suite", "variant", "status", "created", "took", "ok/cases", "errored", "error"],
                     [[str(r["id"]), r["suite_name"], r["variant_name"], r["status"], r["created_at"][:19], _took(r),
                       f"{r['n_ok']}/{r['n_cases']}", str(r["n_errored"]), _short(r["error"], None if wide else 80)] for r in rows]))


@runs_group.command("show")
@CONFIG_OPTION
@click.argument("run_id", metavar="RUN", type=int)
@JSON_OPTION
def runs_show(config_path: str, run_id: int, as_json: bool) -> None:
    """One run: its key (suite version x variant fingerprint x slot), status, times, counts, error, evalsvc version,
    and its metric points with their 95% intervals."""
    from evalsvc.cli.tables import table
    from evalsvc.service.results import show_run

    run = show_run(_store(config_path), run_id)
    if as_json:
        return _echo_json(run)
    fields = ["suite_name", "suite_version", "variant_name", "variant_fingerprint", "slot", "status", "created_at",
              "started_at", "finished_at", "n_cases", "n_ok", "n_errored", "attempts", "error", "upstream_change",
              "evalsvc_version"]
    lines = [f"run {run['id']}", *(f"  {name:20} {'-' if run[name] is None else run[name]}" for name in fields)]
    points = [[p["metric"], p["kind"], _num(p["value"], 4), _interval(p), str(p["n"]),
               "higher" if p["higher_is_better"] else "lower"] for p in run["points"]]
    click.echo("\n".join(lines))
    if points:
        click.echo("\n" + table(["metric", "kind", "value", "95% CI", "n", "better"], points))


@click.command("cases")
@CONFIG_OPTION
@click.option("--run", "run_id", required=True, type=int, metavar="RUN", help="The run whose case results to show.")
@click.option("--vs", "other_id", default=None, type=int, metavar="RUN", help="A second run of the same suite version: "
              "the cases side by side by case id, as the dashboard's Compare page pairs them.")
@click.option("--flipped", is_flag=True, help="With --vs: only the cases whose pass differs (ok in both runs).")
@JSON_OPTION
@WIDE_OPTION
def cases(config_path: str, run_id: int, other_id: int | None, flipped: bool, as_json: bool, wide: bool) -> None:
    """A run's case results (each sample, with the case's input and expected values), or two runs' cases side by side.

    \b
    With --vs each case's samples are reduced as the gate reduces them (gate.samples_pass);
    flip "down" is pass -> fail from RUN to the --vs run, "up" fail -> pass. Examples:
      evalsvc cases --run 12
      evalsvc cases --run 12 --vs 15 --flipped --json
    """
    from evalsvc.cli.tables import table
    from evalsvc.config import load_config
    from evalsvc.service import results as svc
    from evalsvc.service.runs import open_store

    if flipped and other_id is None:
        raise click.UsageError("--flipped needs --vs RUN (the run to compare with)")
    cfg = load_config(config_path)
    engine = open_store(cfg)

    def cut(text: Any, width: int = 60) -> str:
        return _short(text, None if wide else width)

    if other_id is None:
        rows = svc.run_cases(engine, run_id)
        if as_json:
            return _echo_json(rows)
        return click.echo(table(["case", "sample", "status", "pass", "latency ms", "input", "expected", "output", "error"],
                                [[r["case_id"], str(r["sample_index"]), r["status"], _pass((r["scores"] or {}).get("pass")),
                                  "-" if r["latency_ms"] is None else f"{r['latency_ms']:.0f}", cut(r["input"], 40),
                                  cut(r["expected"], 30), cut(r["output"]), cut(r["error"], 40)] for r in rows]))
    rows = svc.side_by_side(engine, run_id, other_id, cfg.gate.samples_pass, flipped)
    if as_json:
        return _echo_json(rows)
    if not rows:
        return click.echo("no case flipped" if flipped else "no cases")
    click.echo(table(["case", f"run {run_id}", f"run {other_id}", "pass", "flip", "expected", f"output {run_id}",
                      f"output {other_id}"],
                     [[r["case_id"], r["status_a"] or "-", r["status_b"] or "-", f"{_pass(r['pass_a'])} -> {_pass(r['pass_b'])}",
                       r["flip"] or "", cut(r["expected"], 30), cut(r["output_a"], 40), cut(r["output_b"], 40)]
                      for r in rows]))


@click.command("export")
@CONFIG_OPTION
@click.option("--format", "fmt", required=True, type=click.Choice(["jsonl", "csv", "parquet"]),
              help="jsonl (scores and judge nested), csv or parquet (scores and judge as JSON text); parquet needs "
              "pyarrow: pip install 'evalsvc[export]'.")
@click.option("--what", default="cases", show_default=True, type=click.Choice(["cases", "points"]),
              help="Case results (one row per case and sample) or metric points (one per run and metric).")
@click.option("--suite", "-s", default=None, help="Only runs of this suite.")
@click.option("--variant", "-v", default=None, help="Only runs of this variant.")
@click.option("--since", default=None, metavar="DATE", help="Only runs created at or after this date/time (ISO 8601, UTC).")
@click.option("--run", "run_id", default=None, type=int, metavar="RUN", help="Only this run.")
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="File to write ('-': standard output, for jsonl and csv).")
def export(config_path: str, fmt: str, what: str, suite: str | None, variant: str | None, since: str | None,
           run_id: int | None, out: Path) -> None:
    """Export stored case results (with each case's input and expected values) or metric points, with each run's
    identity (suite, version, variant, fingerprint).

    \b
    Every run status is included (filter on the runs' own status with `runs list`).
    Parquet needs the export extra:  pip install 'evalsvc[export]'
    Examples:
      evalsvc export --format parquet -s arithmetic --since 2026-11-01 --out cases.parquet
      evalsvc export --format csv --what points -v smollm2-q8_0 --out points.csv
    """
    from evalsvc.service import results as svc
    from evalsvc.service.selection import check_stored

    when = svc.parse_since(since)
    engine = _store(config_path)
    check_stored(engine, [suite], [variant])
    n = svc.export(engine, fmt, out, what, suite, variant, when, run_id)
    click.echo(f"wrote {n} {'case results' if what == 'cases' else 'metric points'} to {out}", err=str(out) == "-")
