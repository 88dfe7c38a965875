"""The SQL behind each dashboard page: aggregated in the database, small frames out.

Every function takes an Engine and returns a pandas DataFrame (or plain values) sized for a
page, never a table: on a store with a million case results each one stays well under a
second (bench/dashboard_store.py measures them on SQLite and PostgreSQL).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Float, and_, case, cast, func, select, tuple_
from sqlalchemy.orm import Session

from evalsvc.config import GateConfig
from evalsvc.dashboard.divergence import case_divergence as case_divergence  # ui.query calls each by name here
from evalsvc.dashboard.divergence import divergence_metrics as divergence_metrics
from evalsvc.dashboard.divergence import divergence_series as divergence_series
from evalsvc.dashboard.divergence import kld_of
from evalsvc.dashboard.frames import frame as _frame
from evalsvc.dashboard.sequential import sequential_verdict as sequential_verdict
from evalsvc.service.compare import compare_latest
from evalsvc.stats import ratings
from evalsvc.store.latest import BY_NAME, latest_ids, rejudged_ids
from evalsvc.store.schema import Alert, BattleRecord, CaseResult, Firing, MetricPoint, Run, SuiteCase, VerdictRecord, utcnow
from evalsvc.verdicts.compare import POOLED, NotComparable
from evalsvc.verdicts.gate_report import how_decided, roles

SEVERITY = {"regression": 3, "inconclusive": 2, "pass": 1, "improvement": 0}


def names(engine: Engine) -> dict[str, list[str]]:
    """Variant and suite names that have runs (the pages' filter choices)."""
    with engine.connect() as conn:
        pairs = conn.execute(select(Run.variant_name, Run.suite_name).group_by(Run.variant_name, Run.suite_name)).all()
    return {"variants": sorted({p[0] for p in pairs}), "suites": sorted({p[1] for p in pairs})}


def metrics_of(engine: Engine, suite: str) -> list[str]:
    newest = select(func.max(Run.id)).where(Run.suite_name == suite, Run.status == "succeeded").scalar_subquery()
    with engine.connect() as conn:
        return sorted(conn.scalars(select(MetricPoint.metric).where(MetricPoint.run_id == newest)).all())


def overview(engine: Engine, baselines: dict[str, str], stale_after: timedelta, now: datetime | None = None) -> pd.DataFrame:
    """One row per variant x suite: the newest run, the newest verdict against the baseline, and a status.

    status, most urgent first: failed run (the newest run failed: an endpoint problem, not quality),
    regression, upstream change (temperature-0 outputs moved under an unchanged fingerprint),
    inconclusive, pass, improvement; "baseline" for a family's baseline; "no verdict" before any
    comparison. ``stale`` marks a pair whose newest succeeded run is older than ``stale_after``.
    """
    now = now or utcnow()
    latest = _frame(engine, select(Run.variant_name.label("variant"), Run.suite_name.label("suite"),
                                   Run.status.label("last_status"), Run.created_at.label("last_run"), Run.error,
                                   Run.upstream_change).where(Run.id.in_(latest_ids(BY_NAME, status=None))))
    if latest.empty:
        return latest
    ok = _frame(engine, select(Run.variant_name.label("variant"), Run.suite_name.label("suite"),
                               Run.created_at.label("last_success")).where(Run.id.in_(latest_ids(BY_NAME))))
    frame = latest.merge(ok, on=["variant", "suite"], how="left")
    verdicts = latest_verdicts(engine)
    if not verdicts.empty:
        cells = (verdicts.assign(rank=verdicts["verdict"].map(SEVERITY), key=~verdicts["primary"])
                 .sort_values(["candidate", "scope", "key", "rank"], ascending=[True, True, True, False])
                 .groupby(["candidate", "scope"], as_index=False).first())
        cells = cells.rename(columns={"candidate": "variant", "scope": "suite"})[
            ["variant", "suite", "baseline", "metric", "verdict", "delta", "ci_low", "ci_high", "margin", "n", "compared_at"]]
        frame = frame.merge(cells, on=["variant", "suite"], how="left")
    else:
        for col in ("baseline", "metric", "verdict", "delta", "ci_low", "ci_high", "margin", "n", "compared_at"):
            frame[col] = None
    is_baseline = frame["variant"].isin(set(baselines.values()))
    last_success = pd.to_datetime(frame["last_success"], utc=True)
    frame["stale"] = last_success.isna() | (last_success < pd.Timestamp(now) - stale_after)
    frame["status"] = [_status(r.last_status, r.verdict, r.upstream_change, base)
                       for r, base in zip(frame.itertuples(), is_baseline, strict=True)]
    return frame.sort_values(["variant", "suite"]).reset_index(drop=True)


def _status(last_status: str, verdict: Any, upstream: Any, is_baseline: bool) -> str:
    if last_status == "failed":
        return "failed run"
    if isinstance(verdict, str) and verdict == "regression":
        return "regression"
    if isinstance(upstream, str) and upstream:
        return "upstream change"
    if isinstance(verdict, str):
        return verdict
    return "baseline" if is_baseline else "no verdict"


def latest_verdicts(engine: Engine) -> pd.DataFrame:
    """Every row of the newest comparison of each candidate, per scope (suite or 'all suites'), with where a sequential
    gate stopped (``sequential``, None for a fixed comparison)."""
    newest = select(VerdictRecord.candidate, VerdictRecord.scope, func.max(VerdictRecord.id).label("id")).group_by(
        VerdictRecord.candidate, VerdictRecord.scope).subquery()
    reports = select(VerdictRecord.report_id, VerdictRecord.scope).join(newest, VerdictRecord.id == newest.c.id)
    cols = [VerdictRecord.candidate, VerdictRecord.baseline, VerdictRecord.scope, VerdictRecord.metric, VerdictRecord.kind,
            VerdictRecord.primary, VerdictRecord.lower_is_better, VerdictRecord.verdict, VerdictRecord.delta,
            VerdictRecord.ci_low, VerdictRecord.ci_high, VerdictRecord.margin, VerdictRecord.n, VerdictRecord.baseline_mean,
            VerdictRecord.candidate_mean, VerdictRecord.flips_down, VerdictRecord.flips_up, VerdictRecord.overall,
            VerdictRecord.sequential, VerdictRecord.created_at.label("compared_at")]
    return _frame(engine, select(*cols).where(tuple_(VerdictRecord.report_id, VerdictRecord.scope).in_(reports)))


def tradeoff(engine: Engine, quality: list[str]) -> pd.DataFrame:
    """Per candidate, its newest comparison pooled over the suites: the quality delta with its interval against the
    speed ratios (candidate / baseline) of tokens per second and of latency p50 and p95, and its kld from the baseline
    with its interval (``kld_max``: the bound that made it decide, if one did); empty before any comparison."""
    rows = latest_verdicts(engine)
    if rows.empty:
        return rows
    pooled = rows[rows["scope"] == POOLED]
    out = []
    for cand, group in pooled.groupby("candidate"):
        by_metric = {r.metric: r for r in group.itertuples()}
        q = next((by_metric[m] for m in quality if m in by_metric), None)
        if q is None:
            continue
        ratios = {f"{m}_ratio": (by_metric[m].candidate_mean / by_metric[m].baseline_mean
                                 if m in by_metric and by_metric[m].baseline_mean else None)
                  for m in ("tokens_per_s", "latency_p50", "latency_p95")}
        out.append({"candidate": cand, "baseline": q.baseline, "metric": q.metric, "delta": q.delta, "ci_low": q.ci_low,
                    "ci_high": q.ci_high, "margin": q.margin, "verdict": q.overall, **ratios,
                    **kld_of(rows[rows["candidate"] == cand]), "compared_at": q.compared_at})
    return pd.DataFrame(out)


def drift_findings(engine: Engine, suite: str | None, watching: Any) -> pd.DataFrame:
    """Every watched series of a suite (or of all) with its drift state, as `evalsvc drift` shows it: ``watching``
    (`drift_family.spec` of the dashboard's evalsvc.yaml) fixes the families and each series' level; nothing is
    written."""
    from evalsvc.service.drift import check_drift
    from evalsvc.service.drift_family import build

    rows = [vars(f) for f in check_drift(engine, build(watching, engine), [suite] if suite else None, store=False)]
    return pd.DataFrame(rows)


def drift_series(engine: Engine, suite: str, variant: str, metric: str, watching: Any) -> dict[str, pd.DataFrame]:
    """One live series: its points with the detector's statistic and threshold at each (the scan restarts at each
    alarm: a new regime), and its events (alarms, acknowledgements, pinned references, upstream flags).

    Scanned at its watched family's level, as `drift_findings` lists it, so the chart's threshold, its alarms and the
    state are the ones in the page's table: one threshold per series."""
    from evalsvc.service.drift import check_drift, watched
    from evalsvc.service.drift_family import build
    from evalsvc.stats import drift as drift_mod
    from evalsvc.verdicts import series as series_mod

    families = [f for f in build(watching, engine) if f.of(variant, suite, metric)]
    found = watched(engine, families, [suite], [variant], [metric], store=False) if families else []
    if not found:
        return {"points": pd.DataFrame(), "events": pd.DataFrame()}
    w = found[0]
    live, scan = w.series, w.scan
    finding = check_drift(engine, families, [suite], [variant], [metric], store=False)[0]
    with Session(engine) as s:
        flags = s.execute(select(Run.created_at, Run.upstream_change).where(
            Run.variant_fingerprint == live.fingerprint, Run.suite_version == live.suite_version,
            Run.upstream_change.is_not(None))).all()
    stats_at = series_mod.statistic_path(live, scan, w.warmup, w.level)
    threshold = drift_mod.threshold(20, w.level, 1.0)
    points = pd.DataFrame([{"run_ts": p.run_ts, "run_id": p.run_id, "value": p.value, "ci_low": p.ci_low, "ci_high": p.ci_high,
                            "statistic": st_, "threshold": threshold} for p, st_ in zip(live.points, stats_at, strict=True)])
    events = [{"run_ts": live.points[a.index].run_ts, "event": f"alarm {a.direction}",
               "detail": f"CUSUM {a.statistic:.2f} > h {threshold:.2f}; level before {a.reference_mean:.3f}"}
              for a in scan.alarms]
    events += [{"run_ts": m.at, "event": "acknowledged" if m.kind == "ack" else "reference pinned",
                "detail": f"{m.by}: {m.note or ''}"} for m in w.marks]
    events += [{"run_ts": t, "event": "upstream change", "detail": msg} for t, msg in flags]
    return {"points": points, "events": pd.DataFrame(events),
            "state": pd.DataFrame([{"state": finding.state, "threshold": threshold}])}


def series(engine: Engine, suite: str, metric: str, variants: list[str] | None = None,
           since: datetime | None = None) -> pd.DataFrame:
    """One metric's points over time for each variant on a suite, with their intervals."""
    q = select(MetricPoint.run_ts, MetricPoint.variant_name.label("variant"), MetricPoint.variant_fingerprint.label("fingerprint"),
               MetricPoint.value, MetricPoint.ci_low, MetricPoint.ci_high, MetricPoint.n, MetricPoint.run_id,
               MetricPoint.higher_is_better).where(MetricPoint.suite_name == suite, MetricPoint.metric == metric,
                                                   MetricPoint.run_id.not_in(rejudged_ids()))  # no new observation
    if variants:
        q = q.where(MetricPoint.variant_name.in_(variants))
    if since is not None:
        q = q.where(MetricPoint.run_ts >= since)
    frame = _frame(engine, q.order_by(MetricPoint.run_ts))
    frame["run_ts"] = pd.to_datetime(frame["run_ts"], utc=True)
    return frame


def markers(engine: Engine, suite: str, metric: str, variants: list[str] | None = None,
            since: datetime | None = None) -> pd.DataFrame:
    """Events to mark on a trend: regressions, upstream changes and new checkpoints (a fingerprint's first point)."""
    def scoped(q: Any, ts: Any, variant: Any) -> Any:
        q = q.where(ts >= since) if since is not None else q
        return q.where(variant.in_(variants)) if variants else q

    reg = _frame(engine, scoped(select(VerdictRecord.candidate_run_ts.label("run_ts"), VerdictRecord.candidate.label("variant"),
                                       VerdictRecord.baseline.label("detail")).where(
        VerdictRecord.scope == suite, VerdictRecord.metric == metric, VerdictRecord.verdict == "regression",
        VerdictRecord.candidate_run_ts.is_not(None)).distinct(), VerdictRecord.candidate_run_ts, VerdictRecord.candidate))
    up = _frame(engine, scoped(select(Run.created_at.label("run_ts"), Run.variant_name.label("variant"),
                                      Run.upstream_change.label("detail")).where(
        Run.suite_name == suite, Run.upstream_change.is_not(None)), Run.created_at, Run.variant_name))
    first = select(MetricPoint.variant_name.label("variant"), MetricPoint.variant_fingerprint.label("detail"),
                   func.min(MetricPoint.run_ts).label("run_ts")).where(
        MetricPoint.suite_name == suite, MetricPoint.metric == metric).group_by(
        MetricPoint.variant_name, MetricPoint.variant_fingerprint)
    if variants:
        first = first.where(MetricPoint.variant_name.in_(variants))
    new = _frame(engine, first)
    if not new.empty:  # a variant's first fingerprint is where its series starts, not a change
        new = new.sort_values("run_ts").groupby("variant").apply(lambda g: g.iloc[1:], include_groups=False).reset_index(
            level=0).reset_index(drop=True)
        new["detail"] = "new checkpoint " + new["detail"].astype(str)
        if since is not None:
            new = new[pd.to_datetime(new["run_ts"], utc=True) >= pd.Timestamp(since)]
    parts = [f.assign(event=name) for name, f in (("regression", reg), ("upstream change", up), ("new checkpoint", new))
             if not f.empty]
    if not parts:
        return pd.DataFrame(columns=["run_ts", "variant", "detail", "event"])
    out = pd.concat(parts, ignore_index=True)[["run_ts", "variant", "detail", "event"]]
    out["run_ts"] = pd.to_datetime(out["run_ts"], utc=True)
    return out.sort_values("run_ts").reset_index(drop=True)


def case_detail(engine: Engine, run_id: int, case_id: str) -> dict[str, Any] | None:
    """One case of one run (sample 0) with the case's content: input, context, references, judge replies."""
    with Session(engine) as s:
        row = s.scalars(select(CaseResult).where(CaseResult.run_id == run_id, CaseResult.case_id == case_id)
                        .order_by(CaseResult.sample_index).limit(1)).first()
        run = s.get(Run, run_id)
        if row is None or run is None:
            return None
        spec = s.scalars(select(SuiteCase.spec).where(SuiteCase.suite_version == run.suite_version,
                                                      SuiteCase.case_id == case_id)).first()
        return {"status": row.status, "output": row.output or "", "error": row.error, "scores": row.scores or {},
                "judge": row.judge or {}, "spec": spec or {}, "latency_ms": row.latency_ms}


def battle_judges(engine: Engine) -> pd.DataFrame:
    """Each suite's judge identities (name, fingerprint, rubric template) with their battle counts, newest first."""
    return _frame(engine, select(BattleRecord.suite_name.label("suite"), BattleRecord.judge_name.label("judge"),
                                 BattleRecord.judge_fingerprint.label("judge_fingerprint"),
                                 BattleRecord.template_hash.label("template"), func.count().label("battles"),
                                 func.max(BattleRecord.id).label("newest"))
                  .group_by(BattleRecord.suite_name, BattleRecord.judge_name, BattleRecord.judge_fingerprint,
                            BattleRecord.template_hash).order_by(func.max(BattleRecord.id).desc()))


def _judged_by(suite: str, judge_fingerprint: str, template: str) -> Any:
    """Decided battles on the suite's newest version judged by one judge identity (fingerprint and rubric: never a
    judge's name alone, which can cover several)."""
    mine = and_(BattleRecord.suite_name == suite, BattleRecord.judge_fingerprint == judge_fingerprint,
                BattleRecord.template_hash == template)
    newest = select(BattleRecord.suite_version).where(mine).order_by(BattleRecord.id.desc()).limit(1).scalar_subquery()
    return and_(mine, BattleRecord.suite_version == newest, BattleRecord.outcome.is_not(None))


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """Each side labelled by its variant name, with its fingerprint where one name stands for several checkpoints, so
    two checkpoints are never one model."""
    sides = pd.concat([frame[["variant_a", "fingerprint_a"]].set_axis(["variant", "fingerprint"], axis=1),
                       frame[["variant_b", "fingerprint_b"]].set_axis(["variant", "fingerprint"], axis=1)]).drop_duplicates()
    shared = set(sides["variant"][sides["variant"].duplicated()])
    out = {}
    for side in ("a", "b"):
        name, fp = frame[f"variant_{side}"], frame[f"fingerprint_{side}"]
        out[side] = name.where(~name.isin(shared), name + " (" + fp.str[:8] + ")")
    return frame.assign(**out)


def battles(engine: Engine, suite: str, judge_fingerprint: str, template: str) -> pd.DataFrame:
    """Decided battles of one judge identity, case by case, with their sides labelled (`_labelled`)."""
    return _labelled(_frame(engine, select(BattleRecord.variant_a, BattleRecord.fingerprint_a, BattleRecord.variant_b,
                                           BattleRecord.fingerprint_b, BattleRecord.case_id, BattleRecord.outcome)
                            .where(_judged_by(suite, judge_fingerprint, template))))


def win_matrix(engine: Engine, suite: str, judge_fingerprint: str, template: str) -> pd.DataFrame:
    """Row model's share of points against the column model (ties count half), with the battle count, tallied in SQL."""
    keys = (BattleRecord.variant_a, BattleRecord.fingerprint_a, BattleRecord.variant_b, BattleRecord.fingerprint_b)
    pairs = _frame(engine, select(*keys, func.sum(BattleRecord.outcome).label("points"), func.count().label("n"))
                   .where(_judged_by(suite, judge_fingerprint, template)).group_by(*keys))
    if pairs.empty:
        return pd.DataFrame(columns=["model", "opponent", "win_rate", "battles"])
    pairs = _labelled(pairs)[["a", "b", "points", "n"]]
    flipped = pairs.rename(columns={"a": "b", "b": "a"}).assign(points=lambda f: f["n"] - f["points"])
    both = pd.concat([pairs, flipped]).groupby(["a", "b"], as_index=False)[["points", "n"]].sum()
    return pd.DataFrame({"model": both["a"], "opponent": both["b"], "win_rate": both["points"] / both["n"],
                         "battles": both["n"]})


def leaderboard(engine: Engine, suite: str, judge_fingerprint: str, template: str, anchor: str,
                n_boot: int = 300) -> pd.DataFrame:
    """Bradley-Terry ratings (anchor = 1000) with bootstrap intervals (cases resampled), and each model's fingerprint."""
    frame = battles(engine, suite, judge_fingerprint, template)
    fights = [ratings.Battle(a, b, float(y), case_id=c)
              for a, b, y, c in zip(frame["a"], frame["b"], frame["outcome"], frame["case_id"], strict=True)]
    if not fights:
        return pd.DataFrame(columns=["model", "fingerprint", "rating", "ci_low", "ci_high", "battles", "win_rate_vs_anchor"])
    if anchor not in {f.a for f in fights} | {f.b for f in fights}:
        anchor = fights[0].a
    fingerprints = {**dict(zip(frame["a"], frame["fingerprint_a"], strict=True)),
                    **dict(zip(frame["b"], frame["fingerprint_b"], strict=True))}
    rows = ratings.leaderboard(fights, anchor, n_boot=n_boot)
    return pd.DataFrame([{"model": r.model, "fingerprint": fingerprints[r.model], "rating": r.rating, "ci_low": r.ci_low,
                          "ci_high": r.ci_high, "battles": r.n_battles, "win_rate_vs_anchor": r.win_rate_vs_anchor,
                          "win_ci_low": r.win_ci_low, "win_ci_high": r.win_ci_high} for r in rows])


def runs(engine: Engine, variant: str | None = None, suite: str | None = None, status: str | None = None,
         limit: int = 500) -> pd.DataFrame:
    """Newest runs first, with duration and error; the newest ``limit`` of them."""
    duration = (func.julianday(Run.finished_at) - func.julianday(Run.started_at)) * 86400.0 \
        if engine.dialect.name == "sqlite" else cast(func.extract("epoch", Run.finished_at - Run.started_at), Float)
    q = select(Run.id, Run.created_at.label("run_time"), Run.variant_name.label("variant"), Run.suite_name.label("suite"),
               Run.status, duration.label("duration_s"), Run.n_cases, Run.n_ok, Run.n_errored, Run.attempts, Run.slot,
               Run.error, Run.upstream_change)
    conds = [c for c in (Run.variant_name == variant if variant else None, Run.suite_name == suite if suite else None,
                         Run.status == status if status else None) if c is not None]
    if conds:
        q = q.where(and_(*conds))
    return _frame(engine, q.order_by(Run.id.desc()).limit(limit))


def run_totals(engine: Engine) -> pd.DataFrame:
    """Runs per variant and status (all time), counted in SQL."""
    return _frame(engine, select(Run.variant_name.label("variant"), Run.status, func.count().label("runs"),
                                 func.sum(case((Run.n_errored > 0, 1), else_=0)).label("with_errors"))
                  .group_by(Run.variant_name, Run.status))


def alerts(engine: Engine, variant: str | None = None, limit: int = 200) -> pd.DataFrame:
    frame = _frame(engine, select(Alert.id, Alert.kind, Alert.status, Alert.summary, Alert.opened_at, Alert.last_seen_at,
                                  Alert.resolved_at, Alert.delivered, Alert.detail).order_by(Alert.id.desc()).limit(limit))
    if variant and not frame.empty:
        frame = frame[frame["detail"].map(lambda d: (d or {}).get("variant") == variant)]
    if not frame.empty:
        frame["sent_to"] = frame["delivered"].map(lambda d: ", ".join(f"{k}: {', '.join(v)}" for k, v in (d or {}).items())
                                                  or "not sent")
    return frame.drop(columns=["delivered", "detail"], errors="ignore")


def firings(engine: Engine, limit: int = 100) -> pd.DataFrame:
    return _frame(engine, select(Firing.id, Firing.schedule, Firing.slot, Firing.status, Firing.started_at,
                                 Firing.finished_at, Firing.error).order_by(Firing.id.desc()).limit(limit))


def comparison(engine: Engine, gate: dict[str, Any], baseline: str, candidate: str,
               suites: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Baseline vs candidate, paired live on their newest shared runs with the gate's own statistics.

    Plain frames out (the page caches them): ``metrics`` per scope and metric, ``flips`` per case,
    ``runs`` {suite: (baseline run id, candidate run id)}, the overall ``verdict`` and ``notes``.
    None when the two have no suite version in common.
    """
    try:
        report = compare_latest(engine, GateConfig.model_validate(gate), baseline, candidate, suites)
    except NotComparable as exc:
        return {"error": str(exc)}
    if report is None:
        return None
    runs = {name: (b.id, c.id) for name, (b, c) in report.runs.items()}
    rows = []
    role = {id(c): r for r, _, c in roles(report)}  # as the gate's JSON and JUnit name them
    for scope, c in [*report.pooled, *report.primary, *report.secondary]:
        base, cand = report.measured_means(c)
        rows.append({"scope": scope, "metric": c.metric, "role": role.get(id(c), "informational"), "n": c.n,
                     "baseline": base, "candidate": cand, "delta": c.delta, "ci_low": c.ci_low, "ci_high": c.ci_high,
                     "margin": c.margin, "verdict": c.verdict, "flips_down": c.flips_down, "flips_up": c.flips_up,
                     "n_needed": c.n_needed, "method": c.method})
    flips = pd.DataFrame([{"suite": f.suite, "case_id": f.case_id, "direction": f.direction} for f in report.flips],
                         columns=["suite", "case_id", "direction"])
    reasons = report.decision.reasons if report.decision else []
    return {"verdict": report.verdict, "metrics": pd.DataFrame(rows), "flips": flips, "runs": runs, "notes": report.notes,
            "how": how_decided(report), "reasons": reasons}


def shared_cases(engine: Engine, base_run: int, cand_run: int) -> list[str]:
    with engine.connect() as conn:
        base = set(conn.scalars(select(CaseResult.case_id).where(CaseResult.run_id == base_run)))
        return sorted(base & set(conn.scalars(select(CaseResult.case_id).where(CaseResult.run_id == cand_run))))
