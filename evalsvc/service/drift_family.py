"""The watched families of drift series, and the alarms raised on them, as the store keeps them.

A family is fixed by evalsvc.yaml: every configured variant x suite x watched metric, quality and speed apart. Each
series in it is scanned at alpha / (the family's size), a Bonferroni level that does not depend on which series a
query happens to look at, so `evalsvc drift`, the service and the dashboard give every series the same verdict. A
family is stored (a new row when the config changes it) and each alarm is stored when first raised, with the level it
was raised at: the detector's next regime starts at a stored alarm, so no later check, at whatever level, moves or
erases it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from evalsvc.config import Config
from evalsvc.store.schema import DriftAlarm, DriftFamily


@dataclass(frozen=True)
class Family:
    name: str  # "quality" or "speed"
    members: frozenset[tuple[str, str, str]]  # (variant, suite, metric)
    alpha: float
    warmup: int
    id: int | None = None  # its stored row (None until stored)

    @property
    def level(self) -> float:
        """Each member's level: alpha / size (Bonferroni), so any false alarm across the family in a block of 20 looks
        stays <= alpha whatever the series do to each other."""
        return self.alpha / max(len(self.members), 1)

    def of(self, variant: str, suite: str, metric: str) -> bool:
        return (variant, suite, metric) in self.members


Spec = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...], float, int]


def spec(cfg: Config) -> Spec:
    """What evalsvc.yaml says is watched, as plain values (the dashboard caches on them): its variants, its suites
    (`suites:`, else every suite in suites_dir; empty where that folder is not here; and every suite a schedule
    runs), drift.metrics, drift.speed_metrics, alpha and warmup."""
    from evalsvc.suites import discover, load_suite

    found = discover(cfg.suites_dir) if cfg.suites_dir.is_dir() else {}
    named = [*(cfg.suites or found), *(n for sched in cfg.schedules for n in sched.suites or ())]
    suites = dict.fromkeys(load_suite(n).name if n not in found and Path(n).is_file() else n for n in named)
    return (tuple(v.name for v in cfg.variants), tuple(suites), tuple(cfg.drift.metrics), tuple(cfg.drift.speed_metrics),
            cfg.drift.alpha, cfg.drift.warmup)


def build(watched: Spec, engine: Engine | None = None) -> list[Family]:
    """The families: variants x suites x quality metrics, and x speed metrics when any. Where no suite is named or
    found here (a dashboard away from the suite files), the suites the store holds runs of stand in."""
    variants, suites, metrics, speed, alpha, warmup = watched
    if not suites and engine is not None:
        from evalsvc.store.schema import Run

        with Session(engine) as s:
            suites = tuple(sorted(s.scalars(select(Run.suite_name).distinct())))
    out = [Family("quality", frozenset((v, su, m) for v in variants for su in suites for m in metrics), alpha, warmup)]
    if speed:
        out.append(Family("speed", frozenset((v, su, m) for v in variants for su in suites for m in speed), alpha, warmup))
    return out


def families(cfg: Config, engine: Engine | None = None) -> list[Family]:
    """The families evalsvc.yaml watches (`spec`, `build`)."""
    return build(spec(cfg), engine)


def _row(f: DriftFamily) -> Family:
    members = frozenset((v, s, m) for v, s, m in (member.split("/", 2) for member in f.members))
    return Family(f.name, members, f.alpha, f.warmup, f.id)


def register(engine: Engine, wanted: Sequence[Family]) -> list[Family]:
    """Store each family unless the store's newest of that name is the same; return them with their stored ids."""
    out = []
    with Session(engine) as s, s.begin():
        for fam in wanted:
            newest = s.scalars(select(DriftFamily).where(DriftFamily.name == fam.name).order_by(DriftFamily.id.desc())
                               .limit(1)).first()
            if newest is None or _row(newest).members != fam.members or (newest.alpha, newest.warmup) != (fam.alpha, fam.warmup):
                newest = DriftFamily(name=fam.name, members=sorted("/".join(m) for m in fam.members), alpha=fam.alpha,
                                     warmup=fam.warmup)
                s.add(newest)
                s.flush()
            out.append(Family(fam.name, fam.members, fam.alpha, fam.warmup, newest.id))
    return out


def alarms(engine: Engine, series: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], list[DriftAlarm]]:
    """The stored alarms of each (fingerprint, suite version, metric), oldest first."""
    wanted = set(series)
    out: dict[tuple[str, str, str], list[DriftAlarm]] = {}
    if not wanted:
        return out
    with Session(engine, expire_on_commit=False) as s:
        fps = sorted({fp for fp, _, _ in wanted})
        for i in range(0, len(fps), 500):
            for a in s.scalars(select(DriftAlarm).where(DriftAlarm.fingerprint.in_(fps[i:i + 500]))
                               .order_by(DriftAlarm.run_ts, DriftAlarm.run_id)):
                key = (a.fingerprint, a.suite_version, a.metric)
                if key in wanted:
                    out.setdefault(key, []).append(a)
        s.expunge_all()
    return out


def save(engine: Engine, raised: Sequence[DriftAlarm]) -> None:
    """Store newly raised alarms; one that another process stored meanwhile (the same series and run) is kept as is."""
    for alarm in raised:
        try:
            with Session(engine) as s, s.begin():
                s.add(alarm)
        except IntegrityError:
            continue


def utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)
