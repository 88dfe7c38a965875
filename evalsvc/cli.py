"""The ``evalsvc`` command line.

Exit codes (shared by every command): 0 ok, 1 regression, 2 could not evaluate
(bad config or suite, endpoint or store failure, failed run), 3 inconclusive.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from evalsvc.config import DEFAULT_CONFIG, Config, load_config
from evalsvc.errors import EvalsvcError

CONFIG_OPTION = click.option("--config", "-c", "config_path", default=DEFAULT_CONFIG, show_default=True,
                             type=click.Path(dir_okay=False), help="evalsvc.yaml to read.")


class _Group(click.Group):
    """Turns evalsvc's own errors into one clear message and exit code 2 (no traceback)."""

    def invoke(self, ctx: click.Context):
        # SIGTERM unwinds like Ctrl-C, so managed model servers are stopped, not orphaned
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except EvalsvcError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Evaluate LLM variants and catch quality regressions, with results in a time-series store.

    \b
    Typical first steps:
      evalsvc init                 write a starter evalsvc.yaml
      evalsvc suites validate      check every suite in suites/
      evalsvc run                  all suites x all variants, into the store
      evalsvc results              latest score of each variant on each suite

    A run is (suite version x variant fingerprint x slot). Editing a suite or a
    variant's checkpoint/serving/sampling starts a new series; re-running a
    crashed or interrupted run resumes it and sends only the missing requests.
    """


def _load(config_path: str) -> Config:
    return load_config(config_path)


@main.command()
@click.option("--path", default=DEFAULT_CONFIG, show_default=True, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: str, force: bool) -> None:
    """Write a starter evalsvc.yaml (the local SmolLM2 variants plus a commented endpoint example)."""
    from evalsvc.local_models import starter_config

    target = Path(path)
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists; pass --force to overwrite it")
    target.write_text(starter_config())
    click.echo(f"wrote {target}; build the local variants with `bash scripts/setup.sh`, then `evalsvc run`")


@main.command()
@CONFIG_OPTION
@click.option("--suite", "-s", "suites", multiple=True, help="Suite name (repeatable). Default: config 'suites', else all.")
@click.option("--variant", "-v", "variants", multiple=True, help="Variant name (repeatable). Default: all variants.")
@click.option("--slot", default=None, help="Run-key slot (a schedule time). Default: resume the last unfinished "
              "manual run of this suite x variant, else start a new one.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
@click.option("--compare/--no-compare", "do_compare", default=True, show_default=True,
              help="Afterwards compare each variant with its family's baseline and store the verdicts (the dashboard's "
              "Overview shows them).")
def run(config_path: str, suites: tuple[str, ...], variants: tuple[str, ...], slot: str | None,
        progress: bool | None, do_compare: bool) -> None:
    """Run suites against variants and store every case, output and score.

    \b
    Examples:
      evalsvc run                              everything in the config
      evalsvc run -s arithmetic -v smollm2-q8_0 -v smollm2-f16
    Exit code 0 when every run succeeded, 2 when any failed (the table says why).
    """
    from evalsvc import suites as suites_mod
    from evalsvc.report import outcome_table
    from evalsvc.runs import Runner
    from evalsvc.store.db import open_engine

    cfg = _load(config_path)
    chosen_suites = suites_mod.resolve(cfg.suites_dir, list(suites) or cfg.suites)
    chosen_variants = [cfg.variant(v) for v in variants] if variants else cfg.variants
    if not chosen_variants:
        raise click.ClickException(f"{config_path} defines no variants; see `evalsvc init`")
    engine = open_engine(cfg.store_url())
    runner = Runner(cfg, engine, progress=progress, log_dir=Path(config_path).resolve().parent / ".evalsvc" / "logs")
    outcomes = []
    for variant in chosen_variants:
        outcomes.extend(runner.run_variant(chosen_suites, variant, slot=slot))
    click.echo(outcome_table(outcomes))
    if do_compare:
        from evalsvc.report import verdict_lines
        from evalsvc.verdicts import compare_with_baselines

        reports = compare_with_baselines(engine, cfg, chosen_suites, chosen_variants)
        if reports:
            click.echo("\nAgainst the family baseline (`evalsvc gate` for the full report):")
            click.echo(verdict_lines(reports))
    if any(o.status != "succeeded" for o in outcomes):
        sys.exit(2)


@main.command()
@CONFIG_OPTION
@click.option("--suite", "-s", "suites", multiple=True, help="Only these suites.")
@click.option("--metric", "-m", default="pass", show_default=True, help="Metric to tabulate ('all' for every metric).")
def results(config_path: str, suites: tuple[str, ...], metric: str) -> None:
    """Latest stored result of each variant on each suite: value [95% interval] (n)."""
    from sqlalchemy.orm import Session

    from evalsvc.report import results_table
    from evalsvc.store import repo
    from evalsvc.store.db import open_engine

    cfg = _load(config_path)
    engine = open_engine(cfg.store_url())
    with Session(engine) as session:
        points = repo.latest_points(session, list(suites) or None)
    click.echo(results_table(points, metric))


@main.command()
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
    from evalsvc import suites as suites_mod
    from evalsvc.arena import DEFAULT_RUBRIC, Arena, leaderboard_table
    from evalsvc.store.db import open_engine

    cfg = _load(config_path)
    suite = suites_mod.resolve(cfg.suites_dir, [suite_name])[0]
    chosen = [cfg.variant(v) for v in variants]
    if anchor is None:
        base = cfg.baselines.get(chosen[0].family)
        anchor = base if base in variants else chosen[0].name
    engine = open_engine(cfg.store_url())
    log_dir = Path(config_path).resolve().parent / ".evalsvc" / "logs"
    battles = Arena(cfg, engine, log_dir, progress=bool(progress)).battle(suite, chosen, judge_name, rubric or DEFAULT_RUBRIC,
                                                                          limit)
    if not battles:
        raise click.ClickException("no battle could be decided (every judge verdict was unparsable)")
    click.echo(leaderboard_table(battles, anchor, judge_name))


@main.command()
@CONFIG_OPTION
@click.option("--candidate", required=True, help="Variant to judge.")
@click.option("--baseline", default=None, help="Variant to compare with (default: the candidate family's baseline).")
@click.option("--suite", "-s", "suites", multiple=True, help="Suites to gate on (default: config 'suites', else all).")
@click.option("--run/--no-run", "do_run", default=True, show_default=True,
              help="First run the suites a variant has no succeeded run on; --no-run only reads the store.")
@click.option("--fail-on-inconclusive", is_flag=True, default=None, help="Exit 3 when the verdict is inconclusive.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), default=None, help="Write the summary here "
              "(it is also appended to $GITHUB_STEP_SUMMARY when set).")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), default=None, help="Write JUnit XML here.")
@click.option("--progress/--no-progress", default=None)
def gate(config_path: str, candidate: str, baseline: str | None, suites: tuple[str, ...], do_run: bool,
         fail_on_inconclusive: bool | None, markdown_path: str | None, junit_path: str | None, progress: bool | None) -> None:
    """Pre-deploy gate: is the candidate non-inferior to the baseline, case by case?

    \b
    Compares the latest succeeded runs of both variants on the same suite versions,
    paired on the cases that are ok in both (McNemar-based interval for pass/fail
    metrics, paired bootstrap for continuous ones), against the non-inferiority
    margins in evalsvc.yaml (gate:). Exit codes:
      0  pass (or improvement; inconclusive too, unless --fail-on-inconclusive)
      1  regression: the interval lies entirely below -margin
      2  could not evaluate (config, endpoint or store problem, failed run)
      3  inconclusive, with --fail-on-inconclusive
    Example:
      evalsvc gate --candidate smollm2-q8_0 --baseline smollm2-f16 --junit gate.xml
    """
    from evalsvc import suites as suites_mod
    from evalsvc.compare import compare, without_runs
    from evalsvc.gate import exit_code, write_outputs
    from evalsvc.runs import Runner
    from evalsvc.store.db import open_engine
    from evalsvc.variants import fingerprint
    from evalsvc.verdicts import record

    cfg = _load(config_path)
    cand = cfg.variant(candidate)
    if baseline is None:
        baseline = cfg.baselines.get(cand.family)
        if baseline is None:
            raise click.UsageError(f"no --baseline given and evalsvc.yaml has no baselines.{cand.family}")
    chosen = suites_mod.resolve(cfg.suites_dir, list(suites) or cfg.suites)
    engine = open_engine(cfg.store_url())
    if do_run:
        runner = Runner(cfg, engine, progress=progress, log_dir=Path(config_path).resolve().parent / ".evalsvc" / "logs")
        for name in dict.fromkeys([baseline, candidate]):
            variant = cfg.variant(name)
            todo = without_runs(engine, chosen, fingerprint(variant, cfg.generation_for(variant)))
            failed = [o for o in runner.run_variant(todo, variant) if o.status != "succeeded"] if todo else []
            if failed:
                for o in failed:
                    click.echo(f"could not evaluate: {o.variant} on {o.suite}: {o.error}", err=True)
                sys.exit(2)
    report = compare(engine, cfg, chosen, baseline, candidate)
    record(engine, report)
    fail_inc = cfg.gate.fail_on_inconclusive if fail_on_inconclusive is None else fail_on_inconclusive
    md = write_outputs(report, Path(markdown_path) if markdown_path else None, Path(junit_path) if junit_path else None,
                       fail_inc, cfg.gate.top_flips)
    click.echo(md)
    sys.exit(exit_code(report, fail_inc))


@main.command("drift")
@CONFIG_OPTION
@click.option("--suite", "-s", "suites", multiple=True, help="Only these suites.")
@click.option("--variant", "-v", "variants", multiple=True, help="Only these variants.")
@click.option("--metric", "-m", "metrics", multiple=True, default=("pass",), show_default=True, help="Metrics to watch.")
@click.option("--warmup", default=5, show_default=True, help="Runs that set a series' own reference level.")
@click.option("--alpha", default=0.05, show_default=True, help="Chance of any false alarm over 20 scheduled looks.")
def drift_cmd(config_path: str, suites: tuple[str, ...], variants: tuple[str, ...], metrics: tuple[str, ...], warmup: int,
              alpha: float) -> None:
    """Has a variant drifted from its own history? (CUSUM on each series, calibrated for repeated looks.)

    \b
    A series is one variant fingerprint x suite version x metric: a new checkpoint or an
    edited suite starts a new one. Exit code 1 when any series alarms downwards (worse).
    """
    from evalsvc import series as series_mod
    from evalsvc.report import table
    from evalsvc.store.db import open_engine

    cfg = _load(config_path)
    engine = open_engine(cfg.store_url())
    rows, worse = [], False
    newest: dict[tuple[str, str, str], series_mod.Series] = {}
    for s in series_mod.load(engine, list(suites) or None, list(variants) or None, list(metrics) or None):
        key = (s.variant, s.suite, s.metric)  # an older suite version or checkpoint is history, not the live series
        if key not in newest or s.points[-1].run_ts > newest[key].points[-1].run_ts:
            newest[key] = s
    for s in newest.values():
        r = series_mod.check(s, warmup=warmup, alpha=alpha)
        if r.alarm:
            since = s.points[r.index].run_ts if r.index is not None else None
            state = f"ALARM {r.direction}" + (f" since {since:%Y-%m-%d %H:%M}" if since else "")
            worse |= r.regression
        elif len(s.points) <= warmup:
            state = f"warming up ({len(s.points)}/{warmup + 1})"
        else:
            state = "in control"
        rows.append([s.variant, s.suite, s.metric, str(len(s.points)), f"{s.points[-1].value:.3f}", f"{r.reference_mean:.3f}",
                     f"{r.statistic:.2f}/{r.threshold:.2f}", state])
    if not rows:
        click.echo("no metric series yet: run `evalsvc run` on a schedule")
        return
    click.echo(table(["variant", "suite", "metric", "runs", "latest", "reference", "cusum/h", "state"], rows))
    if worse:
        sys.exit(1)


@main.command()
@CONFIG_OPTION
@click.option("--wait", is_flag=True, help="If another `evalsvc serve` holds this store, wait for it instead of exiting.")
def serve(config_path: str, wait: bool) -> None:
    """Run the schedules in evalsvc.yaml (schedules:) until stopped (Ctrl-C or SIGTERM: finishes the current run).

    \b
    Jobs live in the store, so a restart loses no schedule, and a slot missed while the
    service was down runs once when it comes back. Only one `evalsvc serve` acts per store.
    """
    import signal
    import threading

    from evalsvc.scheduler import build, single_scheduler, sync_jobs
    from evalsvc.store.db import open_engine

    cfg = _load(config_path)
    if not cfg.schedules:
        raise click.ClickException(f"{config_path} has no 'schedules:'; add one, e.g. "
                                   "schedules: [{name: nightly, cron: '0 3 * * *'}]")
    engine = open_engine(cfg.store_url())
    with single_scheduler(engine, wait=wait):
        scheduler = build(cfg.store_url())
        scheduler.start(paused=True)  # read the stored jobs before anything fires
        sync_jobs(scheduler, config_path, cfg.schedules)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        click.echo(f"evalsvc serve: {len(cfg.schedules)} schedule(s); Ctrl-C to stop", err=True)
        scheduler.resume()
        stop.wait()
        click.echo("evalsvc serve: stopping after the current run", err=True)
        scheduler.shutdown(wait=True)


@main.group("schedule")
def schedule_group() -> None:
    """Inspect and steer the schedules of `evalsvc serve`."""


def _with_scheduler(config_path: str):
    from evalsvc.scheduler import build, sync_jobs
    from evalsvc.store.db import open_engine

    cfg = _load(config_path)
    open_engine(cfg.store_url())
    scheduler = build(cfg.store_url())
    scheduler.start(paused=True)  # paused: this process only edits the job store, it never fires jobs
    sync_jobs(scheduler, config_path, cfg.schedules)
    return cfg, scheduler


@schedule_group.command("list")
@CONFIG_OPTION
def schedule_list(config_path: str) -> None:
    """Each schedule with its cron, next fire time (UTC) and whether it is paused."""
    from evalsvc.report import table

    cfg, scheduler = _with_scheduler(config_path)
    rows = []
    for spec in cfg.schedules:
        job = scheduler.get_job(spec.name)
        nxt = job.next_run_time.strftime("%Y-%m-%d %H:%M") if job and job.next_run_time else "paused"
        rows.append([spec.name, spec.cron, nxt, ", ".join(spec.suites or ["(config suites)"]),
                     ", ".join(spec.variants or ["(all)"])])
    scheduler.shutdown(wait=False)
    click.echo(table(["schedule", "cron (UTC)", "next", "suites", "variants"], rows) if rows else "no schedules")


@schedule_group.command("run-now")
@CONFIG_OPTION
@click.argument("name")
def schedule_run_now(config_path: str, name: str) -> None:
    """Fire a schedule now, in this process, under the slot of its latest fire time."""
    from evalsvc.scheduler import execute

    cfg = _load(config_path)
    if name not in {s.name for s in cfg.schedules}:
        raise click.ClickException(f"no schedule '{name}'; known: {', '.join(s.name for s in cfg.schedules) or 'none'}")
    summary = execute(str(Path(config_path).resolve()), name)
    for variant, suite, status in summary["runs"]:
        click.echo(f"{summary['slot']}  {variant:<20} {suite:<20} {status}")
    for key in summary["alerts_firing"]:
        click.echo(f"alert: {key}")


@schedule_group.command("history")
@CONFIG_OPTION
@click.argument("name", required=False)
@click.option("--limit", default=20, show_default=True)
def schedule_history(config_path: str, name: str | None, limit: int) -> None:
    """Past firings (newest first): slot, when, how long, the runs' statuses and the alerts that fired."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from evalsvc.report import table
    from evalsvc.store.db import open_engine
    from evalsvc.store.schema import Firing

    engine = open_engine(_load(config_path).store_url())
    q = select(Firing).order_by(Firing.id.desc()).limit(limit)
    if name:
        q = q.where(Firing.schedule == name)
    with Session(engine) as s:
        rows = [[f.schedule, f.slot, f.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                 f"{(f.finished_at - f.started_at).total_seconds():.0f}s" if f.finished_at else "-", f.status,
                 f"{sum(v == 'succeeded' for v in f.runs.values())}/{len(f.runs)} ok",
                 ", ".join(f.alerts.get("firing", [])) or (f.error or "")[:80]] for f in s.scalars(q)]
    click.echo(table(["schedule", "slot", "started", "took", "status", "runs", "alerts / error"], rows) if rows
               else "no firings yet")


def _steer(config_path: str, name: str, action: str) -> None:
    cfg, scheduler = _with_scheduler(config_path)
    try:
        if name not in {spec.name for spec in cfg.schedules}:
            raise click.ClickException(f"no schedule '{name}'; known: {', '.join(x.name for x in cfg.schedules) or 'none'}")
        getattr(scheduler, f"{action}_job")(name)
    finally:
        scheduler.shutdown(wait=False)
    click.echo(f"{action}d {name}")


@schedule_group.command("pause")
@CONFIG_OPTION
@click.argument("name")
def schedule_pause(config_path: str, name: str) -> None:
    """Stop firing a schedule (kept in the store; `resume` brings it back)."""
    _steer(config_path, name, "pause")


@schedule_group.command("resume")
@CONFIG_OPTION
@click.argument("name")
def schedule_resume(config_path: str, name: str) -> None:
    """Fire a paused schedule again from its next fire time."""
    _steer(config_path, name, "resume")


@main.group()
def db() -> None:
    """Manage the store's schema (SQLite is upgraded automatically; PostgreSQL needs `db upgrade`)."""


@db.command("upgrade")
@CONFIG_OPTION
@click.option("--revision", default="head", show_default=True)
def db_upgrade(config_path: str, revision: str) -> None:
    """Apply schema migrations to the configured store (EVALSVC_STORE overrides the config)."""
    from evalsvc.store.db import upgrade

    url = _store_url(config_path)
    upgrade(url, revision)
    click.echo(f"store schema at {revision}")


@db.command("status")
@CONFIG_OPTION
def db_status(config_path: str) -> None:
    """Show the store's schema revision and the one this evalsvc expects."""
    from evalsvc.store.db import current_revision, head_revision, make_engine

    engine = make_engine(_store_url(config_path))
    click.echo(f"store: {current_revision(engine) or 'empty'}; expected: {head_revision()}")


@db.command("readonly-role")
@CONFIG_OPTION
@click.argument("name", default="evalsvc_dashboard")
@click.option("--password-env", default=None, metavar="VAR", help="Set the role's password from this environment variable.")
def db_readonly_role(config_path: str, name: str, password_env: str | None) -> None:
    """Create a PostgreSQL role that can only read the store (for `evalsvc dashboard`).

    \b
    Example:
      DASH_PW=... evalsvc db readonly-role evalsvc_dashboard --password-env DASH_PW
      export EVALSVC_DASHBOARD_STORE=postgresql+psycopg://evalsvc_dashboard:...@host/evalsvc
    """
    from evalsvc.store.db import open_engine
    from evalsvc.store.roles import create_readonly_role

    password = None
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise click.UsageError(f"--password-env {password_env}: that environment variable is empty or unset")
    create_readonly_role(open_engine(_store_url(config_path)), name, password)
    click.echo(f"role {name} can read the store and nothing else; give the dashboard its URL in "
               "EVALSVC_DASHBOARD_STORE (or dashboard.store in evalsvc.yaml, without the password)")


@main.command()
@CONFIG_OPTION
@click.option("--port", type=int, default=None, help="Default: dashboard.port in evalsvc.yaml (8501).")
@click.option("--address", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every one).")
def dashboard(config_path: str, port: int | None, address: str) -> None:
    """Start the Streamlit dashboard on the store in evalsvc.yaml; it only ever reads.

    \b
    Pages: Overview (latest verdicts, problems first), Trends, Compare (paired deltas,
    flips, outputs side by side), Arena, Runs and alerts. Filters are in the URL, e.g.
      http://127.0.0.1:8501/compare?baseline=smollm2-f16&candidate=smollm2-q2_k
    On PostgreSQL give it a read-only role (`evalsvc db readonly-role`) via
    EVALSVC_DASHBOARD_STORE or dashboard.store.
    """
    from evalsvc.dashboard.readonly import dashboard_url, open_readonly

    cfg = _load(config_path)
    open_readonly(dashboard_url(cfg)).dispose()  # fail here, with the reason, rather than in the browser
    app = Path(__file__).resolve().parents[1] / "dashboards" / "app.py"
    if not app.exists():
        raise click.ClickException(f"dashboard pages not found at {app}: run evalsvc from its source checkout")
    env = {**os.environ, "EVALSVC_CONFIG": str(Path(config_path).resolve())}
    argv = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless=true", f"--server.address={address}",
            f"--server.port={port or cfg.dashboard.port}", "--browser.gatherUsageStats=false", "--client.toolbarMode=viewer"]
    click.echo(f"dashboard: http://{address}:{port or cfg.dashboard.port}/ (Ctrl-C stops it)")
    os.execvpe(argv[0], argv, env)


def _store_url(config_path: str) -> str:
    import os

    from evalsvc.config import STORE_ENV

    if os.environ.get(STORE_ENV):
        return os.environ[STORE_ENV]
    return _load(config_path).store_url()


@main.group("suites")
def suites_group() -> None:
    """Inspect and validate suites."""


@suites_group.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--suites-dir", default="suites", show_default=True, type=click.Path(file_okay=False))
def suites_validate(paths: tuple[str, ...], suites_dir: str) -> None:
    """Check suite files (default: every *.yaml in suites/) and print each one's version.

    Every problem names the file and line (or the case id) and how to fix it.
    Nothing is written anywhere.
    """
    from evalsvc.errors import SuiteError
    from evalsvc.suites import load_suite

    files = [Path(p) for p in paths] or sorted(Path(suites_dir).glob("*.yaml"))
    if not files:
        raise click.ClickException(f"no suite headers (*.yaml) in {suites_dir}")
    bad = 0
    for f in files:
        try:
            s = load_suite(f)
        except SuiteError as exc:
            bad += 1
            click.echo(f"FAIL {exc}", err=True)
        else:
            if s.harness is not None:
                what = f"lm-eval task '{s.harness.task}'"
            else:
                what = f"{len(s.cases)} cases; metrics: {', '.join(sorted(s.metrics()))}"
            click.echo(f"ok   {f}: suite '{s.name}' version {s.version}, {what}")
    if bad:
        sys.exit(2)


@main.command("variants")
@CONFIG_OPTION
def variants_cmd(config_path: str) -> None:
    """List configured variants with their fingerprints (what identifies their results)."""
    from evalsvc.variants import fingerprint

    cfg = _load(config_path)
    for v in cfg.variants:
        where = v.endpoint.base_url if v.endpoint else str(v.local.model_path if v.local else "")
        try:
            fp = fingerprint(v, cfg.generation_for(v))
        except FileNotFoundError:
            fp = "(checkpoint missing)"
        click.echo(f"{v.name:<20} {v.family:<16} {v.quantization or '-':<8} {fp:<18} {where}")


@main.group()
def models() -> None:
    """Build the bundled local model variants (SmolLM2-135M re-quantized with llama.cpp)."""


@models.command("build")
@click.option("--out", default="models", show_default=True, type=click.Path(file_okay=False))
@click.option("--quant", "quants", multiple=True, help="Quantization types (default: F16 Q8_0 Q4_0 Q2_K).")
def models_build(out: str, quants: tuple[str, ...]) -> None:
    """Re-quantize the packaged SmolLM2-135M GGUF into one file per variant (skips files already built)."""
    from evalsvc.local_models import DEFAULT_QUANTS, build_variants

    for path in build_variants(Path(out), list(quants) or DEFAULT_QUANTS):
        click.echo(str(path))


@models.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def models_check(path: str) -> None:
    """Decode a short prompt from a GGUF file in a child process: proves the llama.cpp build works on this CPU."""
    from evalsvc.local_models import smoke_test

    problem = smoke_test(Path(path))
    if problem:
        click.echo(f"llama.cpp cannot run {path}: {problem}", err=True)
        sys.exit(2)
    click.echo(f"ok: llama.cpp decodes {path}")


if __name__ == "__main__":
    main()
