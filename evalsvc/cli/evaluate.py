"""Evaluating: `evalsvc run`, `results`, `arena`, `gate` and `drift`.

Only click is imported here: the config schema, the store and the engine are imported inside each command, so
listing the commands (`evalsvc --help`) stays quick.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from evalsvc.cli.options import CONFIG_OPTION


@click.command()
@CONFIG_OPTION
@click.option("--suite", "-s", "suites", multiple=True, help="Suite name (repeatable). Default: config 'suites', else all.")
@click.option("--variant", "-v", "variants", multiple=True, help="Variant name (repeatable). Default: all variants.")
@click.option("--slot", default=None, help="Run-key slot (a schedule time). Default: resume the last unfinished "
              "manual run of this suite x variant made within resume_within_h (24 h), else start a new one.")
@click.option("--new", "new_run", is_flag=True, help="Start new runs even where an unfinished manual one could be resumed.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
@click.option("--compare/--no-compare", "do_compare", default=True, show_default=True,
              help="Afterwards compare each variant with its family's baseline and store the verdicts (the dashboard's "
              "Overview shows them).")
def run(config_path: str, suites: tuple[str, ...], variants: tuple[str, ...], slot: str | None, new_run: bool,
        progress: bool | None, do_compare: bool) -> None:
    """Run suites against variants and store every case, output and score.

    \b
    Examples:
      evalsvc run                              everything in the config
      evalsvc run -s arithmetic -v smollm2-q8_0 -v smollm2-f16
    Exit code 0 when every run succeeded, 2 when any failed (the table says why).
    """
    from evalsvc.cli.tables import outcome_table, verdict_lines
    from evalsvc.config import load_config
    from evalsvc.service import runs as svc

    cfg = load_config(config_path)
    chosen_suites, chosen_variants = svc.choose(cfg, list(suites), list(variants))
    if not chosen_suites:
        raise _no_suites(cfg)
    if new_run and slot is None:
        slot = svc.new_manual_slot()
    result = svc.run_suites(cfg, svc.open_store(cfg), chosen_suites, chosen_variants, slot=slot, progress=progress,
                            logs=svc.log_dir(config_path), compare=do_compare)
    click.echo(outcome_table(result.outcomes))
    if result.reports:
        click.echo("\nAgainst the family baseline (`evalsvc gate` for the full report):")
        click.echo(verdict_lines(result.reports))
    if not result.ok:
        sys.exit(2)


@click.command()
@CONFIG_OPTION
@click.option("--suite", "-s", "suites", multiple=True, help="Only these suites.")
@click.option("--metric", "-m", default="pass", show_default=True, help="Metric to tabulate ('all' for every metric).")
def results(config_path: str, suites: tuple[str, ...], metric: str) -> None:
    """Latest stored result of each variant on each suite: value [95% interval] (n)."""
    from evalsvc.cli.tables import results_table
    from evalsvc.config import load_config
    from evalsvc.service import runs as svc
    from evalsvc.service.selection import check_stored

    engine = svc.open_store(load_config(config_path))
    check_stored(engine, suites=suites, metrics=[metric])
    click.echo(results_table(svc.latest_results(engine, list(suites) or None), metric))


def _no_suites(cfg: Any) -> Exception:
    from evalsvc.errors import ConfigError

    return ConfigError(f"suites_dir {cfg.suites_dir}", "no suite to run: the folder holds no suite header (*.yaml)",
                       "add suites/<name>.yaml and <name>.jsonl (README: Suites; `evalsvc init --quickstart` writes a "
                       "sample), or point suites_dir at your suites")


@click.command()
@CONFIG_OPTION
@click.option("--suite", "-s", "suite_name", required=True, help="Suite whose prompts the variants answer.")
@click.option("--variant", "-v", "variants", multiple=True, required=True, help="Variant (repeat: two or more).")
@click.option("--judge", "-j", "judge_name", required=True,
              help="Judge variant (any configured variant), or 'checks': decide by the suite's own check scores.")
@click.option("--limit", type=int, default=None, help="Only the first N cases (a quick arena).")
@click.option("--anchor", default=None, help="Variant pinned at rating 1000 (default: the family's baseline, "
              "else the first variant).")
@click.option("--rubric", default=None, help="What the judge should prefer (default: correct, on-topic, nothing false).")
@click.option("--progress/--no-progress", default=None)
def arena(config_path: str, suite_name: str, variants: tuple[str, ...], judge_name: str, limit: int | None,
          anchor: str | None, rubric: str | None, progress: bool | None) -> None:
    """Pairwise battles between variants on a suite's prompts, and a Bradley-Terry leaderboard.

    \b
    Every pair of answers is judged in both orders; when the verdict flips with the
    order it counts as a tie (position bias). Missing answers are generated first;
    battles already stored are never judged again. With '-j checks' each battle is
    decided by the suite's own checks (pass, then the continuous scores): no judge
    model needed. Examples:
      evalsvc arena -s records -v smollm2-f16 -v smollm2-q8_0 -v smollm2-q2_k -j checks
      evalsvc arena -s facts -v smollm2-f16 -v smollm2-q2_k -j my-judge --limit 10
    """
    from evalsvc.cli.tables import leaderboard_table
    from evalsvc.config import load_config
    from evalsvc.service import arena as svc
    from evalsvc.service.runs import log_dir, open_store

    cfg = load_config(config_path)
    battles = svc.battle(cfg, open_store(cfg), suite_name, list(variants), judge_name, rubric=rubric, limit=limit,
                         logs=log_dir(config_path), progress=progress)
    if not battles:
        raise click.ClickException("no battle could be decided (every judge verdict was unparsable)")
    click.echo(leaderboard_table(battles, anchor or svc.default_anchor(cfg, list(variants)), judge_name))


@click.command()
@CONFIG_OPTION
@click.option("--candidate", required=True, help="Variant to judge.")
@click.option("--baseline", default=None, help="Variant to compare with (default: the candidate family's baseline).")
@click.option("--suite", "-s", "suites", multiple=True, help="Suites to gate on (default: config 'suites', else all).")
@click.option("--reuse", is_flag=True, help="Compare the latest stored runs instead of measuring both now (running only "
              "the suites a variant has no succeeded run on).")
@click.option("--no-run", "no_run", is_flag=True, help="With --reuse implied: only read the store, run nothing.")
@click.option("--max-age", default=None, metavar="AGE", help="With --reuse: refuse stored runs older than this (90m, 36h, 7d).")
@click.option("--baseline-run", "baseline_runs", multiple=True, type=int, metavar="ID",
              help="Compare with this stored baseline run (a release reference; one per suite, repeatable).")
@click.option("--fail-on-inconclusive/--allow-inconclusive", "fail_on_inconclusive", default=None,
              help="Exit 3 (the default, gate.fail_on_inconclusive) or 0 when the verdict is inconclusive.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), default=None, help="Write the summary here "
              "(it is also appended to $GITHUB_STEP_SUMMARY when set).")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), default=None, help="Write JUnit XML here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write every verdict and number as JSON here (with the exit code).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
@click.option("--plan", is_flag=True, help="Measure nothing: print the cases each suite, and the gated suites pooled, need "
              "to pass at the configured margins (with no change, and at a typical 5% of cases flipping).")
@click.option("--sequential", type=click.Choice(["looks", "anytime"]), is_flag=False, flag_value="looks", default=None,
              help="Ask the cases in a seeded random order, both arms together, and stop at the first look that decides, "
              "at the fixed gate's error rates: `looks` (the default) at group-sequential looks over all gated cases; "
              "`anytime` with a betting test valid at any look, asking at most --budget cases (docs/gate.md). "
              "Default: as gate.sequential in evalsvc.yaml.")
@click.option("--fixed", is_flag=True, help="Ask every case, even where evalsvc.yaml sets gate.sequential.")
@click.option("--budget", type=click.IntRange(2), default=None, help="With --sequential anytime: the most cases asked "
              "(default gate.sequential.budget, else every gated case).")
@click.option("--looks", type=click.IntRange(2, 20), default=None, help="With --sequential: how many looks (default "
              "gate.sequential.looks, else 5).")
@click.option("--seed", type=int, default=None, help="With --sequential: the case order's seed (default: a new one, "
              "printed in the report; a stopped sequential gate is resumed with its own).")
def gate(config_path: str, candidate: str, baseline: str | None, suites: tuple[str, ...], reuse: bool, no_run: bool,
         max_age: str | None, baseline_runs: tuple[int, ...], fail_on_inconclusive: bool | None, markdown_path: str | None,
         junit_path: str | None, json_path: str | None, progress: bool | None, plan: bool, sequential: str | None,
         fixed: bool, budget: int | None, looks: int | None, seed: int | None) -> None:
    """Pre-deploy gate: is the candidate non-inferior to the baseline, case by case?

    \b
    Runs baseline and candidate now, under one new shared slot, and compares exactly
    those two runs, paired on the cases that are ok in both (Tango's score interval
    for pass/fail metrics, paired BCa bootstrap for continuous ones), against the
    non-inferiority margins in evalsvc.yaml (gate:). Every suite decides: a pass
    needs every suite to pass; regressions are Holm-adjusted across suites. Stored
    answers are reused only for local checkpoints (their bytes are in the fingerprint).
    Exit codes:
      0  pass (or improvement)
      1  regression: a suite's interval lies entirely below -margin
      2  could not evaluate (config, endpoint or store problem, failed run)
      3  inconclusive: not shown to be no worse (--allow-inconclusive makes it 0)
    With --sequential the cases are asked in looks and the gate stops at the first
    look whose group-sequential boundary is crossed (a collapse, or a candidate
    that answers as the baseline does, is decided on a fraction of the cases).
    Examples:
      evalsvc gate --candidate smollm2-q8_0 --baseline smollm2-f16 --junit gate.xml
      evalsvc gate --candidate smollm2-q4_0 --sequential --looks 5
      evalsvc gate --candidate api-new --sequential anytime --budget 2000
      evalsvc gate --candidate api-new --reuse --max-age 24h
    A variant that is not in evalsvc.yaml but has stored results (`evalsvc import`)
    is gated on its latest stored runs: nothing is measured now.
    """
    from evalsvc.config import load_config
    from evalsvc.errors import ConfigError, EvalsvcError
    from evalsvc.service import gate as svc
    from evalsvc.service.runs import choose, log_dir, open_store

    paths = [Path(p) if p else None for p in (markdown_path, junit_path, json_path)]
    try:
        cfg = load_config(config_path)
        stored = not all(svc.configured(cfg, name) for name in (candidate, baseline) if name is not None)  # imported
        if stored:
            _known_variants(cfg, open_store(cfg), candidate=candidate, baseline=baseline)
            if plan:
                raise ConfigError("--plan", "it counts the cases of the suites in suites_dir, and an imported variant's "
                                  "results are gated on the tasks stored with them", "run --plan with the variants "
                                  "evalsvc.yaml configures, or read the n≈ in the report of a --no-run gate")
        if not stored:
            baseline = svc.baseline_of(cfg, candidate, baseline)
            chosen, _ = choose(cfg, list(suites), [candidate])
            if not chosen:
                raise _no_suites(cfg)
            if plan:
                return _plan(cfg, open_store(cfg), chosen, baseline)
    except Exception as exc:  # exit 2 before any run: the files asked for still say why (run_gate does so after)
        svc.could_not_evaluate(candidate, baseline, _why(exc), [], *paths)
        raise
    try:
        if stored:  # run_stored_gate writes the files itself, also when it cannot evaluate
            result = svc.run_stored_gate(cfg, open_store(cfg), candidate, baseline, list(suites),
                                         max_age=svc.parse_age(max_age) if max_age else None,
                                         fail_on_inconclusive=fail_on_inconclusive, markdown_path=paths[0],
                                         junit_path=paths[1], json_path=paths[2])
        else:
            result = svc.run_gate(cfg, open_store(cfg), chosen, candidate, baseline, reuse=reuse or no_run,
                                  run_missing=not no_run, max_age=svc.parse_age(max_age) if max_age else None,
                                  baseline_runs=baseline_runs, fail_on_inconclusive=fail_on_inconclusive,
                                  markdown_path=paths[0], junit_path=paths[1], json_path=paths[2], progress=progress,
                                  logs=log_dir(config_path),
                                  sequential=_sequential(cfg, None if fixed else sequential, fixed, budget, looks, seed))
    except EvalsvcError:
        raise  # the service wrote the files
    except Exception as exc:  # a bug must not read as a regression, nor leave CI without its report: exit 2, files written
        svc.could_not_evaluate(candidate, baseline, _why(exc), [], *paths)
        raise
    _exit_with(result)


def _sequential(cfg: Any, mode: str | None, fixed: bool, budget: int | None, looks: int | None, seed: int | None) -> Any:
    """The sequential settings this gate runs with (None: the fixed gate): evalsvc.yaml's, with the options over them."""
    from evalsvc.config.sequential import SequentialGate

    configured = cfg.gate.sequential
    if fixed or (mode is None and configured is None):
        if looks is not None or seed is not None or budget is not None:
            raise click.UsageError("--looks, --budget and --seed go with --sequential (or gate.sequential in evalsvc.yaml)")
        return None
    chosen = configured or SequentialGate()
    chosen = chosen.model_copy(update={k: v for k, v in (("mode", mode), ("looks", looks), ("budget", budget), ("seed", seed))
                                       if v is not None})
    if chosen.mode == "looks" and budget is not None:
        raise click.UsageError("--budget goes with --sequential anytime: group-sequential looks cover every gated case")
    return chosen


def _known_variants(cfg: Any, engine: Any, **names: str | None) -> None:
    """--candidate/--baseline name a configured variant or one the store has results of (imported), else exit 2."""
    from evalsvc.service.selection import check_names, stored_names

    known = {v.name for v in cfg.variants} | set(stored_names(engine, "variant"))
    for option, name in names.items():
        check_names("variant", [name], known, "evalsvc.yaml or the store", f"--{option}")


def _why(exc: Exception) -> str:
    from evalsvc.errors import EvalsvcError

    return str(exc) if isinstance(exc, EvalsvcError) else f"evalsvc failed unexpectedly ({type(exc).__name__}: {exc})"


def _plan(cfg: Any, engine: Any, suites: list[Any], baseline: str) -> None:
    from evalsvc.service.plan import plan_lines

    click.echo("\n".join(plan_lines(cfg, suites, engine, baseline)))


def _exit_with(result: Any) -> NoReturn:
    for o in result.failed:
        click.echo(f"could not evaluate: {o.variant} on {o.suite}: {o.error}", err=True)
    if result.markdown:
        click.echo(result.markdown)
    sys.exit(result.exit_code)


@click.group("drift", invoke_without_command=True)
@CONFIG_OPTION
@click.option("--suite", "-s", "suites", multiple=True, help="Only these suites.")
@click.option("--variant", "-v", "variants", multiple=True, help="Only these variants.")
@click.option("--metric", "-m", "metrics", multiple=True,
              help="Only these of the watched metrics (default, or 'all': every one; drift.metrics and drift.speed_metrics "
              "in evalsvc.yaml set them).")
@click.pass_context
def drift_cmd(ctx: click.Context, config_path: str, suites: tuple[str, ...], variants: tuple[str, ...],
              metrics: tuple[str, ...]) -> None:
    """Has a variant drifted from its own history? (CUSUM on each series, calibrated for repeated looks.)

    \b
    A series is one variant fingerprint x suite version x metric: a new checkpoint or an
    edited suite starts a new one. The watched series and their level are evalsvc.yaml's
    (drift:), the same as the service's; each alarm is stored when raised, and the detector
    restarts there, so a rise and a later drop are both reported. Exit code 1 when a series'
    last alarm is down (worse) and nobody has acknowledged it:
      evalsvc drift ack VARIANT/SUITE[/METRIC] --note "why"
    """
    ctx.ensure_object(dict).update(config_path=config_path)
    if ctx.invoked_subcommand is not None:
        return
    from evalsvc.cli.tables import drift_table
    from evalsvc.config import load_config
    from evalsvc.service.drift import check_drift
    from evalsvc.service.drift_family import families
    from evalsvc.service.runs import open_store
    from evalsvc.service.selection import check_stored

    cfg = load_config(config_path)
    engine = open_store(cfg)
    check_stored(engine, suites, variants, metrics)
    metrics = () if "all" in metrics else metrics  # every metric
    findings = check_drift(engine, families(cfg, engine), list(suites) or None, list(variants) or None, list(metrics) or None)
    if not findings:
        click.echo("no metric series yet: run `evalsvc run` on a schedule")
        return
    click.echo(drift_table(findings))
    if any(f.regression for f in findings):
        sys.exit(1)


@drift_cmd.command("ack")
@click.argument("series")
@click.option("--config", "-c", "config_path", default=None, type=click.Path(dir_okay=False),
              help="evalsvc.yaml to read (default: the one `evalsvc drift -c` names, else ./evalsvc.yaml).")
@click.option("--note", default=None, help="Why: what changed, what was done.")
@click.option("--by", default=None, help="Who acknowledges (default: the login name).")
@click.option("--reference", default=None, metavar="RUN|DATE",
              help="Instead: pin the series' reference window to start at this run id or date (earlier runs are history).")
@click.pass_context
def drift_ack(ctx: click.Context, series: str, config_path: str | None, note: str | None, by: str | None,
              reference: str | None) -> None:
    """Acknowledge a series' last drift alarm (who, when, why), or pin where its reference starts.

    \b
    SERIES is VARIANT/SUITE[/METRIC] (metric: pass), as `evalsvc drift` lists it. The
    acknowledgement names the alarm's run: that alarm stops alerting; a new alarm after it
    alerts again.
    """
    import getpass

    from evalsvc.config import load_config
    from evalsvc.service.drift import acknowledge
    from evalsvc.service.drift_family import families
    from evalsvc.service.runs import open_store

    cfg = load_config(config_path or ctx.obj["config_path"])
    engine = open_store(cfg)
    click.echo(acknowledge(engine, families(cfg, engine), series, by or getpass.getuser(), note, reference))
