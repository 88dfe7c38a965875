"""`evalsvc serve` and `evalsvc schedule`: the scheduler daemon and the commands that steer it."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from evalsvc.cli.options import CONFIG_OPTION


@click.command()
@CONFIG_OPTION
@click.option("--wait", is_flag=True, help="If another `evalsvc serve` holds this store, wait for it instead of exiting.")
@click.option("--metrics-port", default=9108, show_default=True, type=click.IntRange(0, 65535),
              help="Serve Prometheus /metrics on this port (docs/metrics.md); 0: no metrics endpoint.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address /metrics binds to (0.0.0.0: every interface; put access control in front of it).")
def serve(config_path: str, wait: bool, metrics_port: int, metrics_host: str) -> None:
    """Run the schedules in evalsvc.yaml (schedules:) until stopped (Ctrl-C or SIGTERM: finishes the current run).

    \b
    Schedules come from evalsvc.yaml (the store keeps whether each is paused): a slot missed
    while the service was down runs once when it comes back, and a firing cut off by a kill
    is fired again under its slot. Only one `evalsvc serve` acts per store.
    Prometheus /metrics, read from the store at each scrape, on 127.0.0.1:9108 (docs/metrics.md).
    """
    import threading

    from evalsvc import scheduler as sched
    from evalsvc.config import load_config
    from evalsvc.service.runs import open_store
    from evalsvc.store.locks import SchedulerBusy, single_scheduler

    cfg = load_config(config_path)
    if not cfg.schedules:
        raise click.ClickException(f"{config_path} has no 'schedules:'; add one, e.g. "
                                   "schedules: [{name: nightly, cron: '0 3 * * *'}]")
    stop, serving = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:  # SIGTERM or Ctrl-C: finish the current run; while still starting, leave at once
        stop.set()
        if not serving.is_set():
            raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    engine = open_store(cfg)
    with single_scheduler(engine, wait=wait) as lease:
        sched.lease = lease
        if metrics_port:
            _start_metrics(cfg, metrics_host, metrics_port)
        scheduler = sched.build()
        scheduler.start(paused=True)  # add the jobs and find what was cut off before anything fires
        for line in sched.start_jobs(scheduler, engine, config_path, cfg.schedules):
            click.echo(f"evalsvc serve: {line}", err=True)
        if cfg.executor.type == "ray":  # firings left running by an earlier scheduler: watch, or submit again
            from evalsvc.service.ray_firings import reconcile

            for firing_id, sub, what in reconcile(cfg, config_path, sched.stopping):
                click.echo(f"evalsvc serve: firing {firing_id} ({sub}): {what}", err=True)
        click.echo(f"evalsvc serve: {len(cfg.schedules)} schedule(s); Ctrl-C to stop", err=True)
        serving.set()
        scheduler.resume()
        threading.Thread(target=sched.keep, args=(scheduler, engine, cfg, config_path, lease, stop), daemon=True,
                         name="evalsvc-serve-tick").start()
        stop.wait()
        sched.stopping.set()
        if lease.lost:
            click.echo("evalsvc serve: lost the store's scheduler lock (another `evalsvc serve` took it while the "
                       "connection to the store was down): fires nothing more; stopping after the current run", err=True)
        else:
            click.echo("evalsvc serve: stopping after the current run" + (" (Ray jobs keep running)"
                       if cfg.executor.type == "ray" else ""), err=True)
        scheduler.shutdown(wait=True)
    if lease.lost:
        raise SchedulerBusy("this `evalsvc serve` lost the store's scheduler lock to another one and stopped; restart "
                            "it (it waits its turn with --wait) once you know which one should schedule")


def _start_metrics(cfg, host: str, port: int) -> None:
    from evalsvc.service.metrics import serve_metrics
    from evalsvc.store.readonly import open_readonly

    try:
        server = serve_metrics(open_readonly(cfg.store_url()), host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc} "
                                   "(--metrics-port picks another port, 0 turns it off)") from None
    click.echo(f"evalsvc serve: Prometheus metrics on http://{host}:{server.server_port}/metrics", err=True)


@click.command()
@CONFIG_OPTION
@click.argument("schedule")
@click.option("--slot", default=None, help="The slot (fire time, e.g. 2026-12-02T03:00Z) to run under. Default: the "
              "schedule's latest fire time.")
@click.option("--submission-id", default=None, help="The Ray Job this firing is (set by `evalsvc serve`).")
def fire(config_path: str, schedule: str, slot: str | None, submission_id: str | None) -> None:
    """Fire one schedule for one slot here: runs, comparisons, alerts (a Ray Job's driver).

    \b
    With executor type ray each variant runs as a Ray task on the cluster, with the GPUs or CPUs
    it needs; `evalsvc serve` submits this command as a Ray Job. Firing a slot again resumes it:
    finished runs are kept, unfinished ones send only their missing cases. Exit code 0 when every
    run succeeded, 2 when any failed (its alerts are sent all the same).
    """
    from datetime import UTC, datetime

    from evalsvc.config import load_config
    from evalsvc.scheduler import slot_at
    from evalsvc.service.schedule import fire as fire_slot
    from evalsvc.service.schedule_state import slot_name

    _driver_logging()  # a Ray Job's log shows where each variant ran and what the driver did
    cfg = load_config(config_path)
    spec = next((s for s in cfg.schedules if s.name == schedule), None)
    if spec is None:
        raise click.ClickException(f"no schedule '{schedule}'; known: {', '.join(s.name for s in cfg.schedules) or 'none'}")
    slot = slot or slot_name(slot_at(spec, datetime.now(UTC)))
    summary = fire_slot(cfg, str(Path(config_path).resolve()), spec, slot, submission_id)
    for (variant, suite, status), error in zip(summary["runs"], summary["errors"], strict=True):
        click.echo(f"{summary['slot']}  {variant:<20} {suite:<20} {status}" + (f"  {error}" if error else ""))
    for key in summary["alerts_firing"]:
        click.echo(f"alert: {key}")
    if any(status != "succeeded" for _, _, status in summary["runs"]):
        raise SystemExit(2)  # a failed run is "could not evaluate", never a regression; the firing is closed, alerts sent
    if summary.get("problems"):  # the other variants ran and the alerts went out; this firing still failed
        raise click.ClickException("the firing met unexpected errors (its other variants ran, compared and alerted): "
                                   + "; ".join(summary["problems"]))


def _driver_logging() -> None:
    import logging

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("evalsvc").setLevel(logging.INFO)


@click.group("schedule")
def schedule_group() -> None:
    """Inspect and steer the schedules of `evalsvc serve`."""


def _schedules(config_path: str):
    """The config and its store, with the schedules' rows made to match the config."""
    from evalsvc.config import load_config
    from evalsvc.service.runs import open_store
    from evalsvc.service.schedule_state import sync_states

    cfg = load_config(config_path)
    engine = open_store(cfg)
    sync_states(engine, cfg.schedules)
    return cfg, engine


@schedule_group.command("list")
@CONFIG_OPTION
def schedule_list(config_path: str) -> None:
    """Each schedule with its cron, next fire time (UTC) and whether it is paused."""
    _check_suites(config_path)
    from datetime import UTC, datetime

    from evalsvc.cli.tables import table
    from evalsvc.scheduler import trigger
    from evalsvc.service.schedule_state import paused

    cfg, engine = _schedules(config_path)
    is_paused = paused(engine)
    rows = []
    for spec in cfg.schedules:
        nxt = trigger(spec).get_next_fire_time(None, datetime.now(UTC))
        rows.append([spec.name, spec.cron, "paused" if is_paused.get(spec.name) or nxt is None
                     else nxt.strftime("%Y-%m-%d %H:%M"), ", ".join(spec.suites or ["(config suites)"]),
                     ", ".join(spec.variants or ["(all)"])])
    click.echo(table(["schedule", "cron (UTC)", "next", "suites", "variants"], rows) if rows else "no schedules")


def _check_suites(config_path: str) -> None:
    """The suites each schedule names exist: a typo is found when the schedules are listed, not when one fires."""
    from evalsvc.config import load_config
    from evalsvc.service.selection import check_config_suites

    check_config_suites(load_config(config_path))


@schedule_group.command("run-now")
@CONFIG_OPTION
@click.argument("name")
def schedule_run_now(config_path: str, name: str) -> None:
    """Fire a schedule now under the slot of its latest fire time (here; with executor type ray, as a Ray Job)."""
    from evalsvc.config import load_config
    from evalsvc.scheduler import execute

    cfg = load_config(config_path)
    if name not in {s.name for s in cfg.schedules}:
        raise click.ClickException(f"no schedule '{name}'; known: {', '.join(s.name for s in cfg.schedules) or 'none'}")
    summary = execute(str(Path(config_path).resolve()), name)
    if summary.get("submission_id"):  # executor type ray: the firing was a Ray Job
        click.echo(f"{summary['slot']}  Ray job {summary['submission_id']}: {summary['status']} "
                   f"(`evalsvc schedule history {name}` has its runs)")
    for variant, suite, status in summary["runs"]:
        click.echo(f"{summary['slot']}  {variant:<20} {suite:<20} {status}")
    for key in summary["alerts_firing"]:
        click.echo(f"alert: {key}")
    if summary.get("problems"):
        raise click.ClickException("the firing met unexpected errors (its other variants ran, compared and alerted): "
                                   + "; ".join(summary["problems"]))


@schedule_group.command("history")
@CONFIG_OPTION
@click.argument("name", required=False)
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(min=1), help="The newest N firings.")
def schedule_history(config_path: str, name: str | None, limit: int) -> None:
    """Past firings (newest first): slot, when, how long, the runs' statuses and the alerts that fired."""
    from evalsvc.cli.tables import firings_table
    from evalsvc.config import load_config
    from evalsvc.service.runs import open_store
    from evalsvc.service.schedule import history
    from evalsvc.service.selection import check_names

    cfg = load_config(config_path)
    check_names("schedule", [name], [s.name for s in cfg.schedules], config_path)
    firings = history(open_store(cfg), name, limit)
    click.echo(firings_table(firings) if firings else "no firings yet")


def _steer(config_path: str, name: str, action: str) -> None:
    """Pause or resume in the store; a running `evalsvc serve` applies it within its tick (a few seconds)."""
    from evalsvc.service.schedule_state import set_paused

    cfg, engine = _schedules(config_path)
    if name not in {spec.name for spec in cfg.schedules}:
        raise click.ClickException(f"no schedule '{name}'; known: {', '.join(x.name for x in cfg.schedules) or 'none'}")
    set_paused(engine, name, action == "pause")
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
