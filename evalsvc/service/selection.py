"""`-s/-v/-m` on the read commands: a name that matches nothing is an error with "did you mean", never an empty table.

A nightly `evalsvc drift -v candidat-fp8` that printed "no series yet" and exited 0 would pass forever; every read
command checks the names it is given against what the store (or the config) knows before it answers.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.config import Config
from evalsvc.errors import ConfigError
from evalsvc.store.schema import MetricPoint, Run
from evalsvc.suites import discover

OPTIONS = {"suite": "--suite/-s", "variant": "--variant/-v", "metric": "--metric/-m", "schedule": "schedule"}


def stored_names(engine: Engine, what: str) -> list[str]:
    """The suite, variant or metric names that the store has results for."""
    column = {"suite": Run.suite_name, "variant": Run.variant_name, "metric": MetricPoint.metric}[what]
    with Session(engine) as s:
        return sorted(s.scalars(select(column).distinct()).all())


def check_names(what: str, given: Iterable[str | None], known: Iterable[str], where: str = "the store",
                option: str | None = None) -> None:
    """Raise a ConfigError (exit 2) for the first name in ``given`` that is not ``known``, suggesting the nearest."""
    known = sorted(set(known))
    for name in given:
        if name is None or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else (f"{where} knows: {', '.join(known)}" if known else
                                                            f"{where} has no {what} yet: `evalsvc run` makes results")
        raise ConfigError(f"{option or OPTIONS[what]} {name}", f"no {what} of that name in {where}", hint)


def check_stored(engine: Engine, suites: Iterable[str | None] = (), variants: Iterable[str | None] = (),
                 metrics: Iterable[str | None] = ()) -> None:
    """Check each selection against the names the store has results for (a metric 'all' is every one)."""
    for what, given in (("suite", suites), ("variant", variants), ("metric", metrics)):
        names = [n for n in given if n is not None and not (what == "metric" and n == "all")]
        if names:
            check_names(what, names, stored_names(engine, what))


def check_config_suites(cfg: Config) -> None:
    """The suites that evalsvc.yaml names (``suites:`` and each schedule's) exist in suites_dir: checked when the file
    is checked (`evalsvc variants`, `suites validate`, `schedule list`), not first when a schedule fires."""
    known = list(discover(cfg.suites_dir))
    named = [("suites:", cfg.suites or []), *((f"schedules: {s.name}: suites:", s.suites or []) for s in cfg.schedules)]
    for option, names in named:
        check_names("suite", [n for n in names if not Path(n).is_file()], known, f"suites_dir {cfg.suites_dir}", option)
