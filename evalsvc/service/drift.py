"""The drift state of each watched series (a variant fingerprint x suite version x metric), and marks on it.

Which series are watched, and at what level, is fixed by evalsvc.yaml (`drift_family`): the same for `evalsvc drift`,
the service and the dashboard. A series' state is its last alarm: each is stored when first raised and the detector
restarts there (``drift.scan``), so later checks never move or erase it. Down is a regression until a later alarm up
says it recovered, or a person acknowledges that alarm (``acknowledge``: who, when, why, and the alarm's run). A pinned
reference window makes the earlier runs history: the detector starts there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from evalsvc.errors import ConfigError
from evalsvc.service import drift_family
from evalsvc.service.drift_family import Family, utc
from evalsvc.stats import drift
from evalsvc.store.schema import DriftAlarm, DriftMark
from evalsvc.verdicts import series as series_mod


@dataclass(frozen=True)
class DriftFinding:
    variant: str
    suite: str
    metric: str
    runs: int
    latest: float
    reference: float
    statistic: float
    threshold: float
    state: str  # "ALARM up|down since ...", "acknowledged ...", "warming up (k/n)" or "in control"
    regression: bool  # an alarm in the worse direction that nobody has acknowledged
    fingerprint: str = ""
    suite_version: str = ""
    alarm_at: datetime | None = None  # run time of the last alarm
    alarm_run: int | None = None  # the run at which the last alarm fired (what an acknowledgement names)
    family: str = ""  # quality | speed
    level: float = 0.0  # the family's alpha / size, which the series is scanned at


def _newest(engine: Engine, suites: list[str] | None, variants: list[str] | None,
            metrics: list[str] | None) -> dict[tuple[str, str, str], series_mod.Series]:
    newest: dict[tuple[str, str, str], series_mod.Series] = {}
    for s in series_mod.load(engine, suites, variants, metrics):
        key = (s.variant, s.suite, s.metric)
        if key not in newest or s.points[-1].run_ts > newest[key].points[-1].run_ts:
            newest[key] = s
    return newest


def _marks(engine: Engine) -> dict[tuple[str, str, str], list[Any]]:
    out: dict[tuple[str, str, str], list[Any]] = {}
    with Session(engine) as s:
        for m in s.execute(select(DriftMark.fingerprint, DriftMark.suite_version, DriftMark.metric, DriftMark.kind,
                                  DriftMark.at, DriftMark.by, DriftMark.note, DriftMark.run_id).order_by(DriftMark.id)):
            out.setdefault((m.fingerprint, m.suite_version, m.metric), []).append(m)
    return out


@dataclass(frozen=True)
class Watched:
    """One watched series as the detector sees it: where its reference starts, the marks on it, its alarms (stored
    ones, then any raised now) with the current regime, and the level it is scanned at."""

    series: series_mod.Series
    start: int  # the pinned reference's position (0 without one)
    marks: tuple[Any, ...]  # its acknowledgements and pinned references, oldest first
    scan: drift.Scan
    level: float  # its family's alpha / size
    family: str = "quality"
    alarm_runs: tuple[int, ...] = ()  # the run id of each of scan.alarms
    warmup: int = 5


def _check(s: series_mod.Series, fam: Family, start: int, stored: list[DriftAlarm]) -> tuple[drift.Scan, list[DriftAlarm]]:
    """The series' alarms from ``start`` on: the stored ones as they were raised, then a scan from the last of them at
    the family's level; returns the whole scan and the alarms raised now (not stored yet)."""
    at = {p.run_id: i for i, p in enumerate(s.points)}
    kept = [(at[a.run_id], a) for a in stored if a.run_id in at and at[a.run_id] > start]  # a pin makes earlier ones history
    since = kept[-1][0] if kept else start
    fresh = series_mod.check(s, warmup=fam.warmup, alpha=fam.level, start=since)
    raised = [DriftAlarm(family_id=fam.id or 0, fingerprint=s.fingerprint, suite_version=s.suite_version, metric=s.metric,
                         run_id=s.points[a.index].run_id, run_ts=s.points[a.index].run_ts, direction=a.direction,
                         statistic=a.statistic, threshold=fresh.current.threshold, level=fam.level,
                         reference_mean=a.reference_mean) for a in fresh.alarms]
    old = tuple(drift.Alarm(i, "down" if a.direction == "down" else "up", a.statistic, a.reference_mean) for i, a in kept)
    return drift.Scan(old + fresh.alarms, fresh.current, fresh.since, start), raised


def _in_family(fams: Sequence[Family], metrics: list[str] | None) -> None:
    watched_metrics = sorted({m for f in fams for _, _, m in f.members})
    for m in metrics or []:
        if m not in watched_metrics:
            raise ConfigError(f"--metric {m}", "no series of this metric is watched",
                              f"pick one of {', '.join(watched_metrics) or 'none'}, or add it to drift.metrics "
                              "(quality) or drift.speed_metrics in evalsvc.yaml")


def watched(engine: Engine, fams: Sequence[Family], suites: list[str] | None = None, variants: list[str] | None = None,
            metrics: list[str] | None = None, *, store: bool = True) -> list[Watched]:
    """Every watched series (the newest of each member of ``fams``; older ones are history), each at its family's
    level. ``store``: store the families and the alarms raised now (the dashboard, which only reads, passes False)."""
    _in_family(fams, metrics)
    if store:
        fams = drift_family.register(engine, fams)
    wanted = sorted({m for f in fams for _, _, m in f.members if not metrics or m in metrics})
    if not wanted:
        return []
    chosen = [(s, f) for s in _newest(engine, suites, variants, wanted).values() for f in fams if f.of(s.variant, s.suite, s.metric)]
    marks = _marks(engine)
    stored = drift_family.alarms(engine, [(s.fingerprint, s.suite_version, s.metric) for s, _ in chosen])
    out, raised = [], []
    family_of = {(s.variant, s.suite, s.metric): f for s, f in chosen}
    for s in series_mod.with_cases(engine, [s for s, _ in chosen]):
        fam = family_of[(s.variant, s.suite, s.metric)]
        key = (s.fingerprint, s.suite_version, s.metric)
        own = marks.get(key, [])
        pins = [utc(m.at) for m in own if m.kind == "reference"]
        start = next((i for i, p in enumerate(s.points) if utc(p.run_ts) >= pins[-1]), len(s.points)) if pins else 0
        scan, new = _check(s, fam, start, stored.get(key, []))
        raised += new
        runs = tuple(s.points[a.index].run_id for a in scan.alarms)
        out.append(Watched(s, start, tuple(own), scan, fam.level, fam.name, runs, fam.warmup))
    if store:
        drift_family.save(engine, raised)
    return out


def _acked(marks: Sequence[Any], run_id: int | None, at: datetime | None) -> Any:
    """The acknowledgement of the alarm raised at run ``run_id``; marks stored before they named the run match by its
    time."""
    if run_id is None or at is None:
        return None
    return next((m for m in reversed(marks) if m.kind == "ack" and (
        m.run_id == run_id if m.run_id is not None else utc(m.at) == utc(at))), None)


def check_drift(engine: Engine, fams: Sequence[Family], suites: list[str] | None = None, variants: list[str] | None = None,
                metrics: list[str] | None = None, *, store: bool = True) -> list[DriftFinding]:
    """One finding per watched series: alpha is the chance of any false alarm over a block of 20 looks across its
    family, whichever of them a query names."""
    findings = []
    for w in watched(engine, fams, suites, variants, metrics, store=store):
        s, start, found = w.series, w.start, w.scan
        r, last = found.current, found.last
        alarm_at = s.points[last.index].run_ts if last is not None else None
        alarm_run = w.alarm_runs[-1] if last is not None else None
        acked = _acked(w.marks, alarm_run, alarm_at)
        if last is not None:
            earlier = "; ".join(f"{a.direction} {s.points[a.index].run_ts:%Y-%m-%d}" for a in found.alarms[:-1])
            state = f"ALARM {last.direction} since {alarm_at:%Y-%m-%d %H:%M}" + (f" (earlier: {earlier})" if earlier else "")
            if acked is not None:
                state = f"acknowledged by {acked.by}: {acked.note or 'no note'} ({state})"
        elif len(s.points) - start <= w.warmup:
            state = f"warming up ({len(s.points) - start}/{w.warmup + 1})"
        else:
            state = "in control"
        reference = last.reference_mean if last is not None else r.reference_mean
        findings.append(DriftFinding(s.variant, s.suite, s.metric, len(s.points), s.points[-1].value, reference,
                                     r.statistic, r.threshold, state,
                                     bool(last is not None and last.direction == "down" and acked is None),
                                     s.fingerprint, s.suite_version, alarm_at, alarm_run, w.family, w.level))
    return findings


def parse_series(text: str) -> tuple[str, str, str]:
    """'VARIANT/SUITE[/METRIC]' -> (variant, suite, metric); the metric defaults to pass."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"series {text}", "not VARIANT/SUITE[/METRIC]", "write e.g. smollm2-q8_0/facts/pass, as "
                          "`evalsvc drift` lists them")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else "pass"


def acknowledge(engine: Engine, fams: Sequence[Family], series: str, by: str, note: str | None,
                reference: str | None = None) -> str:
    """Store an acknowledgement of the series' last alarm (naming its run), or (``reference``: a run id or a date) pin
    its reference."""
    variant, suite, metric = parse_series(series)
    if not any(f.of(variant, suite, metric) for f in fams):
        raise ConfigError(f"series {series}", "no such series in the watched families",
                          "pick one that `evalsvc drift` lists (drift.metrics and drift.speed_metrics in evalsvc.yaml "
                          "set what is watched)")
    found = check_drift(engine, fams, [suite], [variant], [metric])
    if not found:
        raise ConfigError(f"series {series}", "no such series in the store", "run it first (`evalsvc run`), or pick one "
                          "that `evalsvc drift` lists")
    f = found[0]
    run_id: int | None = None
    if reference is not None:
        at, kind = _reference_time(engine, f, reference), "reference"
    elif f.alarm_at is None:
        raise ConfigError(f"series {series}", f"it has no alarm to acknowledge ({f.state})",
                          "acknowledge an alarm that `evalsvc drift` shows, or pin a reference with --reference")
    else:
        at, kind, run_id = f.alarm_at, "ack", f.alarm_run
    with Session(engine) as s, s.begin():
        s.add(DriftMark(fingerprint=f.fingerprint, suite_version=f.suite_version, metric=metric, kind=kind, at=at,
                        by=by, note=note, run_id=run_id))
    return (f"{series}: reference pinned at {at:%Y-%m-%d %H:%M}" if kind == "reference"
            else f"{series}: alarm of {at:%Y-%m-%d %H:%M} (run {run_id}) acknowledged by {by}")


def _reference_time(engine: Engine, f: DriftFinding, reference: str) -> datetime:
    from evalsvc.store.schema import Run

    with Session(engine) as s:
        if reference.isdigit():
            run = s.get(Run, int(reference))
            if run is None or run.variant_fingerprint != f.fingerprint or run.suite_version != f.suite_version:
                raise ConfigError(f"--reference {reference}", "not a run of this series",
                                  "give a run id of this variant and suite version (`evalsvc schedule history`), or a date")
            return run.created_at
    try:
        return datetime.fromisoformat(reference).replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError(f"--reference {reference}", "neither a run id nor a date", "write e.g. 2026-11-20 or 42") from None


CANARY = "_canary_failure_rate"  # the run-level metric of each judge check: the share of canaries that fooled it


@dataclass(frozen=True)
class JudgeFinding:
    judge: str  # the judge variant's name
    fingerprint: str  # its identity: one series per judge fingerprint, over every run it judged
    runs: int
    latest: float
    state: str
    regression: bool  # its canary failure rate rose (an unacknowledged alarm up in failures)


def judge_findings(engine: Engine, warmup: int = 5, alpha: float = 0.05) -> list[JudgeFinding]:
    """The canary failure rate as a series per judge identity (across the variants and suites it judged, in run
    order): a rise means the judge is easier to fool than it was (an upstream judge swap, a new template...). The
    canaries ship with evalsvc, so each evalsvc version starts the series again (new canaries are not a judge
    getting worse); one finding per judge identity, from its newest series."""
    from evalsvc.store.schema import CaseResult, MetricPoint, Run

    with Session(engine) as s:
        points = s.execute(select(MetricPoint.run_id, MetricPoint.run_ts, MetricPoint.metric, MetricPoint.value,
                                  MetricPoint.n).where(MetricPoint.metric.like(f"%{CANARY}"))
                           .order_by(MetricPoint.run_ts, MetricPoint.run_id)).all()
        identity: dict[tuple[int, str], tuple[str, str, str]] = {}
        run_ids = sorted({p.run_id for p in points})
        versions: dict[int, str] = {}
        for i in range(0, len(run_ids), 500):  # the canaries ship with evalsvc: a new version may bring new ones
            versions.update(s.execute(select(Run.id, Run.evalsvc_version).where(Run.id.in_(run_ids[i:i + 500]))).tuples().all())
        for i in range(0, len(run_ids), 500):  # one judged case per run tells its judges' identities: two queries a chunk
            first = select(CaseResult.run_id, func.min(CaseResult.case_id).label("case_id")).where(
                CaseResult.run_id.in_(run_ids[i:i + 500]), CaseResult.judge.is_not(None)).group_by(CaseResult.run_id).subquery()
            for run_id, judged in s.execute(select(CaseResult.run_id, CaseResult.judge).join(
                    first, (CaseResult.run_id == first.c.run_id) & (CaseResult.case_id == first.c.case_id))):
                for label, detail in (judged or {}).items():
                    if isinstance(detail, dict) and detail.get("fingerprint"):
                        identity[(run_id, label)] = (str(detail.get("judge") or label), str(detail["fingerprint"]),
                                                     str(versions.get(run_id) or ""))
    by_judge: dict[tuple[str, str, str], list[Any]] = {}
    for p in points:
        who = identity.get((p.run_id, p.metric.removesuffix(CANARY)))
        if who is not None:
            by_judge.setdefault(who, []).append(p)
    out: dict[tuple[str, str], JudgeFinding] = {}
    for (name, fp, _), pts in sorted(by_judge.items(), key=lambda kv: kv[1][-1].run_ts):  # the newest series wins
        found = drift.scan([drift.Point(value=p.value, n=p.n) for p in pts], warmup=warmup, alpha=alpha, higher_is_better=False)
        last = found.last
        if last is not None:
            state = f"ALARM {last.direction} since {pts[last.index].run_ts:%Y-%m-%d %H:%M}"
        elif len(pts) <= warmup:
            state = f"warming up ({len(pts)}/{warmup + 1})"
        else:
            state = "in control"
        out[(name, fp)] = JudgeFinding(name, fp, len(pts), pts[-1].value, state,
                                       bool(last is not None and last.direction == "down"))
    return list(out.values())
