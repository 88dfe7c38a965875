"""Tables of the result store (SQLAlchemy 2 declarative).

The two big, append-mostly tables (``case_results`` and ``metric_points``) carry
``run_ts`` (the run's creation time) and, on PostgreSQL, are range-partitioned by it.
PostgreSQL requires every unique key of a partitioned table to contain the partition
column, so their primary keys end with ``run_ts``; since all rows of a run share one
``run_ts``, the key is still unique on (run, case, sample) as the design requires.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PARTITIONED = {"postgresql_partition_by": "RANGE (run_ts)"}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Variant(Base):
    __tablename__ = "variants"
    fingerprint: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    family: Mapped[str] = mapped_column(String(200))
    quantization: Mapped[str | None] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)


class Suite(Base):
    __tablename__ = "suites"
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    header: Mapped[dict[str, Any]]
    n_cases: Mapped[int]
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)


class SuiteCase(Base):
    """The exact case content of a suite version, so any result can be shown with its input."""

    __tablename__ = "suite_cases"
    suite_version: Mapped[str] = mapped_column(ForeignKey("suites.version"), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[int]
    spec: Mapped[dict[str, Any]]


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("suite_version", "variant_fingerprint", "slot", name="uq_run_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    suite_version: Mapped[str] = mapped_column(ForeignKey("suites.version"))
    suite_name: Mapped[str] = mapped_column(String(200))
    variant_fingerprint: Mapped[str] = mapped_column(ForeignKey("variants.fingerprint"))
    variant_name: Mapped[str] = mapped_column(String(200))
    slot: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="planned", index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    n_cases: Mapped[int] = mapped_column(default=0)
    n_ok: Mapped[int] = mapped_column(default=0)
    n_errored: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    output_hash: Mapped[str | None] = mapped_column(String(64))  # of every (case, sample, output): temperature-0 runs only
    upstream_change: Mapped[str | None] = mapped_column(Text)  # set when outputs moved under an unchanged fingerprint
    outputs_compared: Mapped[int | None]  # temperature-0 outputs compared with the previous run of the series
    outputs_moved: Mapped[int | None]  # of those, how many differ (the series' output noise, learned run by run)
    self_kld: Mapped[float | None] = mapped_column(Float)  # mean top-k KL from that previous run's log-probabilities
    self_kld_cases: Mapped[int | None]  # the cases it averages (answered with log-probabilities in both runs)
    evalsvc_version: Mapped[str | None] = mapped_column(String(32))  # the evalsvc (and so scorer) version that made it


class CaseResult(Base):
    __tablename__ = "case_results"
    __table_args__ = (Index("ix_case_results_run", "run_id"), PARTITIONED)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    sample_index: Mapped[int] = mapped_column(primary_key=True, default=0)
    run_ts: Mapped[datetime] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # ok | errored | judge_error | generated (awaits the judge)
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    scores: Mapped[dict[str, Any] | None]
    judge: Mapped[dict[str, Any] | None]  # per judge check: judge name, fingerprint, template hash, verdict, reply
    # per generated token [token, logprob, [[alternative, logprob], ...]] (serving/logprobs.py); None: not asked or refused
    logprobs: Mapped[list[Any] | None] = mapped_column(JSON)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MetricPoint(Base):
    """One aggregate of one metric for one run: the time series the dashboard and drift read."""

    __tablename__ = "metric_points"
    __table_args__ = (Index("ix_metric_points_series", "suite_name", "variant_name", "metric", "run_ts"), PARTITIONED)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(100), primary_key=True)
    run_ts: Mapped[datetime] = mapped_column(primary_key=True)
    suite_name: Mapped[str] = mapped_column(String(200))
    suite_version: Mapped[str] = mapped_column(String(32))
    variant_name: Mapped[str] = mapped_column(String(200))
    variant_fingerprint: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    higher_is_better: Mapped[bool] = mapped_column(Boolean, default=True)
    value: Mapped[float] = mapped_column(Float)
    n: Mapped[int]
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    sd: Mapped[float | None] = mapped_column(Float)  # per-case SD of a continuous metric (None: binary, or older rows)


class BattleRecord(Base):
    """One arena battle: two variants' answers to one case, judged in both orders."""

    __tablename__ = "battles"
    __table_args__ = (UniqueConstraint("suite_version", "case_id", "fingerprint_a", "fingerprint_b", "judge_fingerprint",
                                       "template_hash", name="uq_battle"),
                      Index("ix_battles_suite", "suite_name", "created_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    suite_name: Mapped[str] = mapped_column(String(200))
    suite_version: Mapped[str] = mapped_column(String(32))
    case_id: Mapped[str] = mapped_column(String(200))
    variant_a: Mapped[str] = mapped_column(String(200))
    fingerprint_a: Mapped[str] = mapped_column(String(32))
    variant_b: Mapped[str] = mapped_column(String(200))
    fingerprint_b: Mapped[str] = mapped_column(String(32))
    judge_name: Mapped[str] = mapped_column(String(200))
    judge_fingerprint: Mapped[str] = mapped_column(String(32))
    template_hash: Mapped[str] = mapped_column(String(32))
    verdict_ab: Mapped[str] = mapped_column(String(8))  # A | B | tie | error, with a's answer shown first
    verdict_ba: Mapped[str] = mapped_column(String(8))  # the same, with b's answer shown first (still named by a/b)
    outcome: Mapped[float | None] = mapped_column(Float)  # 1 a won, 0 b won, 0.5 tie; None when the judge failed
    len_a: Mapped[int]
    len_b: Mapped[int]
    answers_hash: Mapped[str | None] = mapped_column(String(16))  # the two answers judged: new answers, a new battle
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """One alert condition: opened once when it starts, resolved once when it clears (deduplicated by key)."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_open", "key", "status"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(400))  # kind:variant:... identifies "the same problem"
    kind: Mapped[str] = mapped_column(String(16))  # regression | endpoint | upstream | drift
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | resolved
    summary: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]]
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    delivered: Mapped[dict[str, Any]] = mapped_column(default=dict)  # sink -> {"open": time, "resolved": time}


class Firing(Base):
    """One firing of a schedule by `evalsvc serve` (or `schedule run-now`): the service's job history."""

    __tablename__ = "firings"
    __table_args__ = (Index("ix_firings_schedule", "schedule", "started_at"),
                      Index("ix_firings_submission", "submission_id", unique=True))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(String(200))
    slot: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | done | error | interrupted
    runs: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"variant/suite": status}
    alerts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"firing": [keys]}
    error: Mapped[str | None] = mapped_column(Text)
    submission_id: Mapped[str | None] = mapped_column(String(300))  # the Ray Job carrying it (executor type ray)
    attempt: Mapped[int] = mapped_column(default=1, server_default="1")  # its submission's attempt number
    # every Ray Job attempt: [{"submission_id", "submitted_at", "ended": status, "why"}] (executor type ray)
    attempts: Mapped[list[Any] | None] = mapped_column(JSON)


class StoreIdentity(Base):
    """One row: a random id written when the store was created, so what the store leaves outside itself (the Ray
    Jobs of its firings) can be told apart from another store's."""

    __tablename__ = "store_identity"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)


class ScheduleState(Base):
    """A schedule of evalsvc.yaml as `evalsvc serve` keeps it: plain values, no code. The jobs themselves are rebuilt
    from evalsvc.yaml at every start; a slot due since ``since`` with no firing row was missed and fires once."""

    __tablename__ = "schedule_states"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    cron: Mapped[str] = mapped_column(String(200))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    since: Mapped[datetime]  # slots from here on are owed (set when first seen, when its cron changes, when resumed)


class CachedResponse(Base):
    """Responses keyed by variant fingerprint + request: never shared across variants."""

    __tablename__ = "response_cache"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    variant_fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VerdictRecord(Base):
    """One metric's verdict from one comparison (gate, schedule or `evalsvc run`): what the dashboard's Overview shows.

    ``scope`` is a suite name, or "all suites" for the pooled primary metrics that decide the gate.
    Means are as measured; ``delta`` and its interval are oriented so a negative delta is a loss.
    """

    __tablename__ = "verdicts"
    __table_args__ = (Index("ix_verdicts_latest", "candidate", "baseline", "scope", "created_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    report_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    baseline: Mapped[str] = mapped_column(String(200))
    candidate: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(200))
    baseline_run_id: Mapped[int | None]
    candidate_run_id: Mapped[int | None]
    candidate_run_ts: Mapped[datetime | None]  # the candidate run's place in the time series (trend markers)
    metric: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    primary: Mapped[bool] = mapped_column(Boolean, default=False)  # one of gate.primary (decides the verdict)
    lower_is_better: Mapped[bool] = mapped_column(Boolean, default=False)
    n: Mapped[int]
    baseline_mean: Mapped[float] = mapped_column(Float)
    candidate_mean: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    ci_low: Mapped[float] = mapped_column(Float)
    ci_high: Mapped[float] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(16))
    flips_down: Mapped[int]
    flips_up: Mapped[int]
    n_needed: Mapped[int | None]
    overall: Mapped[str] = mapped_column(String(16))  # the whole comparison's verdict (same on every row of a report)
    # a sequential gate's stop, the same on every row of its report (None: a fixed comparison): {"look", "looks",
    # "asked", "total", "seed", "slot", "stopped_early", "requests_saved"} (verdicts/record.py)
    sequential: Mapped[dict[str, Any] | None]


class DriftMark(Base):
    """A person's word on one drift series: an acknowledged alarm, or a pinned reference window.

    ``kind`` "ack": the alarm raised at run ``run_id`` (at run time ``at``) is known (who, why); it no longer alerts.
    "reference": the series' reference starts at ``at`` (earlier runs are history). A series is fingerprint x suite
    version x metric.
    """

    __tablename__ = "drift_marks"
    __table_args__ = (Index("ix_drift_marks_series", "fingerprint", "suite_version", "metric"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(32))
    suite_version: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    by: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    run_id: Mapped[int | None] = mapped_column(Integer)  # the acknowledged alarm's run (None: a pinned reference)


class DriftFamily(Base):
    """A watched family of drift series as evalsvc.yaml set it (one row per change): every series in it is scanned at
    alpha / size, so each alarm keeps the level it was raised at however the family changes later."""

    __tablename__ = "drift_families"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(16))  # quality | speed
    members: Mapped[list[str]] = mapped_column(JSON)  # "variant/suite/metric", sorted
    alpha: Mapped[float] = mapped_column(Float)
    warmup: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DriftAlarm(Base):
    """A drift alarm, stored when first raised and never recomputed: the detector's next regime starts at its run."""

    __tablename__ = "drift_alarms"
    __table_args__ = (UniqueConstraint("fingerprint", "suite_version", "metric", "run_id", name="uq_drift_alarm"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    family_id: Mapped[int] = mapped_column(ForeignKey("drift_families.id"))
    fingerprint: Mapped[str] = mapped_column(String(32))
    suite_version: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(100))
    run_id: Mapped[int]  # the run at which it fired
    run_ts: Mapped[datetime]
    direction: Mapped[str] = mapped_column(String(8))  # down (worse) | up, in quality terms
    statistic: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    level: Mapped[float] = mapped_column(Float)  # the family's alpha / size when it was raised
    reference_mean: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ForcedCase(Base):
    """One case of a candidate run scored by teacher forcing on the baseline run's answer (engine/teacher_forced.py).

    ``status`` "ok": the comparison's numbers (stats.divergence.CaseDivergence, mode teacher_forced); "skipped": the
    case cannot be forced (an empty answer, or tokens the candidate's tokenizer does not give back), never asked again;
    "error": the endpoint failed on it, asked again by the next gate of the same pair. ``note`` says why for both;
    the gate's divergence rows compare those cases on the shared prefix instead (verdicts/divergence.py).
    """

    __tablename__ = "forced_cases"
    candidate_run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    baseline_run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    kld: Mapped[float | None] = mapped_column(Float)
    top1_agreement: Mapped[float | None] = mapped_column(Float)
    delta_p: Mapped[float | None] = mapped_column(Float)
    same_output: Mapped[int | None]
    first_divergence: Mapped[int | None]
    positions: Mapped[int | None]
    baseline_token: Mapped[str | None] = mapped_column(Text)  # where the candidate's top-1 first differs (None: never)
    candidate_token: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
