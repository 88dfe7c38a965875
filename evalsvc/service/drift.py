"""The drift state of each live metric series (a variant fingerprint x suite version x metric), and marks on it.

A series' state is its last alarm (``drift.scan`` restarts at each): down is a regression until a later alarm up
says it recovered, or a person acknowledges it (``acknowledge``: who, when, why). A pinned reference window makes
the earlier runs history: the detector starts there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from evalsvc.errors import ConfigError
from evalsvc.stats import drift
from evalsvc.store.schema import DriftMark
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
                                  DriftMark.at, DriftMark.by, DriftMark.note).order_by(DriftMark.id)):
            out.setdefault((m.fingerprint, m.suite_version, m.metric), []).append(m)
    return out


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _holm(live: list[tuple[series_mod.Series, int]], warmup: int, alpha: float) -> list[tuple[drift.Scan, float]]:
    """Each series scanned at its Holm level across the family [holm1979], with each series' p-value the chance that an
    unchanged series alarms at that level: alpha / m for all first; every series that alarms (a rejection) leaves the
    family, and the rest are scanned again at alpha / (m - rejected), until no new series alarms. A series' level only
    grows as others are rejected and its alarms only grow with its level, so this is Holm's step-down, and the chance
    of any false alarm over a block of looks across all the series stays <= alpha."""
    m = len(live)
    level = {i: alpha / max(m, 1) for i in range(m)}
    rejected: set[int] = set()
    scans = {i: series_mod.check(s, warmup=warmup, alpha=level[i], start=start) for i, (s, start) in enumerate(live)}
    while True:
        new = {i for i, sc in scans.items() if sc.alarms and i not in rejected}
        if not new:
            return [(scans[i], level[i]) for i in range(m)]
        rejected |= new
        wider = alpha / max(m - len(rejected), 1)
        for i, (s, start) in enumerate(live):
            if i not in rejected:
                level[i] = wider
                scans[i] = series_mod.check(s, warmup=warmup, alpha=wider, start=start)


@dataclass(frozen=True)
class Watched:
    """One live series as the detector sees it: where its reference starts, the marks on it, its scan and level."""

    series: series_mod.Series
    start: int  # the pinned reference's position (0 without one)
    marks: tuple[Any, ...]  # its acknowledgements and pinned references, oldest first
    scan: drift.Scan
    level: float  # the Holm level it was scanned at


def watched(engine: Engine, suites: list[str] | None = None, variants: list[str] | None = None,
            metrics: list[str] | None = None, warmup: int = 5, alpha: float = 0.05) -> list[Watched]:
    """Every live series (the newest of each variant x suite x metric; older ones are history), scanned together."""
    marks = _marks(engine)
    live = []
    for s in series_mod.with_cases(engine, list(_newest(engine, suites, variants, metrics).values())):
        own = marks.get((s.fingerprint, s.suite_version, s.metric), [])
        pins = [_utc(m.at) for m in own if m.kind == "reference"]
        live.append((s, next((i for i, p in enumerate(s.points) if _utc(p.run_ts) >= pins[-1]), len(s.points)) if pins else 0))
    return [Watched(s, start, tuple(marks.get((s.fingerprint, s.suite_version, s.metric), [])), scan, level)
            for (s, start), (scan, level) in zip(live, _holm(live, warmup, alpha), strict=True)]


def check_drift(engine: Engine, suites: list[str] | None = None, variants: list[str] | None = None,
                metrics: list[str] | None = None, warmup: int = 5, alpha: float = 0.05) -> list[DriftFinding]:
    """One finding per live series, decided together: alpha is the chance of any false alarm over a block of 20 looks
    across all of them (Holm)."""
    findings = []
    for w in watched(engine, suites, variants, metrics, warmup, alpha):
        s, start, found = w.series, w.start, w.scan
        r, last = found.current, found.last
        alarm_at = s.points[last.index].run_ts if last is not None else None
        acked = next((m for m in reversed(w.marks) if m.kind == "ack" and alarm_at is not None
                      and _utc(m.at) == _utc(alarm_at)), None)
        if last is not None:
            earlier = "; ".join(f"{a.direction} {s.points[a.index].run_ts:%Y-%m-%d}" for a in found.alarms[:-1])
            state = f"ALARM {last.direction} since {alarm_at:%Y-%m-%d %H:%M}" + (f" (earlier: {earlier})" if earlier else "")
            if acked is not None:
                state = f"acknowledged by {acked.by}: {acked.note or 'no note'} ({state})"
        elif len(s.points) - start <= warmup:
            state = f"warming up ({len(s.points) - start}/{warmup + 1})"
        else:
            state = "in control"
        reference = last.reference_mean if last is not None else r.reference_mean
        findings.append(DriftFinding(s.variant, s.suite, s.metric, len(s.points), s.points[-1].value, reference,
                                     r.statistic, r.threshold, state,
                                     bool(last is not None and last.direction == "down" and acked is None),
                                     s.fingerprint, s.suite_version, alarm_at))
    return findings


def parse_series(text: str) -> tuple[str, str, str]:
    """'VARIANT/SUITE[/METRIC]' -> (variant, suite, metric); the metric defaults to pass."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"series {text}", "not VARIANT/SUITE[/METRIC]", "write e.g. smollm2-q8_0/facts/pass, as "
                          "`evalsvc drift` lists them")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else "pass"


def acknowledge(engine: Engine, series: str, by: str, note: str | None, reference: str | None = None,
                warmup: int = 5, alpha: float = 0.05) -> str:
    """Store an acknowledgement of the series' last alarm, or (``reference``: a run id or a date) pin its reference."""
    variant, suite, metric = parse_series(series)
    found = check_drift(engine, [suite], [variant], [metric], warmup, alpha)
    if not found:
        raise ConfigError(f"series {series}", "no such series in the store", "pick one that `evalsvc drift -m METRIC` lists")
    f = found[0]
    if reference is not None:
        at, kind = _reference_time(engine, f, reference), "reference"
    elif f.alarm_at is None:
        raise ConfigError(f"series {series}", f"it has no alarm to acknowledge ({f.state})",
                          "acknowledge an alarm that `evalsvc drift` shows, or pin a reference with --reference")
    else:
        at, kind = f.alarm_at, "ack"
    with Session(engine) as s, s.begin():
        s.add(DriftMark(fingerprint=f.fingerprint, suite_version=f.suite_version, metric=metric, kind=kind, at=at,
                        by=by, note=note))
    return (f"{series}: reference pinned at {at:%Y-%m-%d %H:%M}" if kind == "reference"
            else f"{series}: alarm of {at:%Y-%m-%d %H:%M} acknowledged by {by}")


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
