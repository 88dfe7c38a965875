"""`schedules:` in evalsvc.yaml: what `evalsvc serve` runs, and when.

The crontab expression is checked here, field by field, with the ranges and names that
APScheduler's ``CronTrigger`` accepts, so that reading the file needs no scheduler. Five fields are the classic
crontab; a sixth in front is the second (``*/10 * * * * *``: every ten seconds), for tests, soaks and fast polls.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from evalsvc.config.base import Strict

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# (name, lowest, highest, names allowed in place of numbers)
_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day", 1, 31, ()), ("month", 1, 12, _MONTHS),
           ("day of week", 0, 6, _DAYS))
_SECOND = ("second", 0, 59, ())
_PART = re.compile(r"^(?:(?P<any>\*)|(?P<lo>[A-Za-z0-9]+)(?:-(?P<hi>[A-Za-z0-9]+))?)(?:/(?P<step>\d+))?$")


def _value(token: str, lo: int, hi: int, names: tuple[str, ...]) -> int:
    if token.isdigit():
        value = int(token)
    elif token.lower() in names:
        return names.index(token.lower())
    else:
        raise ValueError(f"'{token}' is not a number" + (f" or one of {', '.join(names)}" if names else ""))
    if not lo <= value <= hi:
        raise ValueError(f"{value} is outside {lo}-{hi}")
    return value


def check_crontab(cron: str) -> None:
    """Raise ValueError naming the field at fault unless ``cron`` is a five-field crontab expression, or six with the
    second in front."""
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5 (or 6, with a second in front)")
    for text, (name, lo, hi, names) in zip(fields, _FIELDS if len(fields) == 5 else (_SECOND, *_FIELDS), strict=True):
        for part in text.split(","):
            m = _PART.match(part)
            if m is None:
                raise ValueError(f"{name} field: cannot read '{part}'")
            try:
                step = int(m["step"]) if m["step"] is not None else None
                if step == 0:
                    raise ValueError("a step of 0")
                if m["any"]:
                    first, last = lo, hi
                else:
                    first = _value(m["lo"], lo, hi, names)
                    last = _value(m["hi"], lo, hi, names) if m["hi"] is not None else hi
                    if last < first:
                        raise ValueError(f"the range '{part}' runs backwards")
                if step is not None and step > last - first:
                    raise ValueError(f"the step {step} is larger than the range it steps through ({last - first})")
            except ValueError as exc:
                raise ValueError(f"{name} field: {exc}") from None


class ScheduleSpec(Strict):
    """One entry of ``schedules:`` in evalsvc.yaml."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    cron: str = Field(description="crontab expression in UTC, e.g. '0 3 * * *' (daily at 03:00); a sixth "
                      "field in front is the second: '*/10 * * * * *' (every ten seconds)")
    suites: list[str] | None = Field(None, description="default: the config's suites")
    variants: list[str] | None = Field(None, description="default: every variant")
    compare: bool = Field(True, description="after the runs, compare each variant with its family's baseline and alert")
    sequential: bool = Field(False, description="compare each candidate whose baseline the schedule runs by the "
                             "sequential gate (gate.sequential, else its defaults) instead of a whole run: it is asked "
                             "only as many cases as the verdict needs (docs/gate.md); needs compare: true")

    @model_validator(mode="after")
    def _sequential_compares(self) -> ScheduleSpec:
        if self.sequential and not self.compare:
            raise ValueError(f"schedules: {self.name}: sequential: true compares sequentially, but compare is false; "
                             "set compare: true, or drop sequential")
        return self

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        try:
            check_crontab(cron)
        except ValueError as exc:
            raise ValueError(f"invalid crontab expression {cron!r}: {exc} (five fields: minute hour day month weekday; "
                             "or six, second first)") from None
        return cron
