"""The judge phase of a run: answers awaiting a judge go to the judge variant, verdicts come back.

Answers from the generation phase are stored first with status ``generated``; each verdict
is written as it arrives (in the row's ``judge`` column, with the judge's identity), and a
row becomes ``ok`` (scored) or ``judge_error`` once all its judge checks are settled. A
crash at any point resumes where it stopped, like generation does, and a re-run asks the
judge again for the verdicts that failed (``judge_error`` rows await the judge once more). A
judge's refusal of one answer fails that case alone. Like generation, the phase
reads the suite's cases and their waiting answers a batch at a time, so its memory does not grow
with the suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.checks import Case, score_output
from evalsvc.checks.judge import JudgeCheck, canaries, canary_fooled
from evalsvc.config import Config, VariantConfig
from evalsvc.engine.judge_client import JudgeClient, Verdict
from evalsvc.errors import ConfigError, FatalEndpointError
from evalsvc.serving import Served, serve
from evalsvc.serving.endpoint import EndpointClient
from evalsvc.store import repo
from evalsvc.store.schema import CaseResult
from evalsvc.suites import Suite

CASE_BATCH = 500  # cases read, and their answers awaiting a verdict loaded, at a time
# refusals that say the judge itself is misconfigured (key, permission, model name): they stop the phase, since every
# case would get the same; any other refusal (400, 413, 422, no content) is about one answer and fails that case alone
WHOLE_JUDGE_STATUSES = (401, 403, 404)


def _question(suite: Suite, case: Case) -> str:
    return suite.messages(case)[-1]["content"]


def judge_checks(suite: Suite) -> dict[str, list[JudgeCheck]]:
    """Judge checks of a suite grouped by judge variant name."""
    out: dict[str, dict[str, JudgeCheck]] = {}
    for case in suite.cases:
        for c in case.checks:
            if isinstance(c, JudgeCheck):
                out.setdefault(c.judge, {})[c.template_hash + c.label] = c
    return {name: list(checks.values()) for name, checks in out.items()}


_Judged = tuple[Suite, int, list[JudgeCheck]]  # a run, its suite, and the checks one judge grades in it


class Grader:
    """Runs the judge phase for the runs of one variant."""

    def __init__(self, cfg: Config, engine: Engine, log_dir: Path) -> None:
        self.cfg, self.engine, self.log_dir = cfg, engine, log_dir

    def grade(self, runs: list[tuple[Suite, int]]) -> dict[int, dict[str, tuple[float, int]]]:
        """Judge every ``generated`` row of these runs; returns canary failure rates per run id.

        Raises EvalsvcError (unknown judge, judge server down): the rows stay ``generated``
        and a re-run resumes them.
        """
        canary_rates: dict[int, dict[str, tuple[float, int]]] = {}
        by_run = [(suite, run_id, judge_checks(suite)) for suite, run_id in runs]  # each suite's file read once here
        for _, run_id, checks in by_run:
            self._reopen(run_id, {name: self.cfg.fingerprint(name) for name in checks})
        for name in sorted({name for *_, checks in by_run for name in checks}):
            variant = self.cfg.variant(name)
            mine = [(suite, run_id, checks[name]) for suite, run_id, checks in by_run if name in checks]
            with serve(variant, self.log_dir) as served:
                asyncio.run(self._grade_with(served, variant, mine, canary_rates))
        for suite, run_id in runs:
            self._settle(suite, run_id)
        return canary_rates

    async def _grade_with(self, served: Served, variant: VariantConfig, runs: list[_Judged],
                          canary_rates: dict[int, dict[str, tuple[float, int]]]) -> None:
        client = EndpointClient.for_served(served, self.cfg)
        try:
            await self._grade_all(JudgeClient(self.cfg, self.engine, variant, client), runs, canary_rates)
        finally:
            await client.aclose()

    async def _grade_all(self, judge: JudgeClient, runs: list[_Judged],
                         canary_rates: dict[int, dict[str, tuple[float, int]]]) -> None:
        work = self._work(runs)

        async def worker() -> None:  # a fixed pool of workers takes the verdicts to ask for as they are read
            for suite, row, case, check in work:
                try:
                    v = await judge.grade(check, _question(suite, case), row.output or "", case.references)
                except FatalEndpointError as exc:
                    if exc.status in WHOLE_JUDGE_STATUSES:
                        raise
                    v = Verdict(None, None, "", f"the judge refused this answer: {exc}")  # this case's fault alone
                detail = {**judge.identity(check), "verdict": v.value, "prob": v.prob, "reply": v.reply, "error": v.error,
                          **({"prob_note": v.prob_note} if v.prob_note else {})}
                repo.save_verdict(self.engine, row, check.label, detail)

        await asyncio.gather(*(worker() for _ in range(self.cfg.concurrency)))
        for _, run_id, checks in runs:
            for check in checks:
                canary_rates.setdefault(run_id, {})[f"{check.label}_canary_failure_rate"] = await self._canaries(judge, check)

    def _work(self, runs: list[_Judged]) -> Iterator[tuple[Suite, CaseResult, Case, JudgeCheck]]:
        """Each (answer, judge check) of these runs that still lacks a verdict, in suite order."""
        for suite, run_id, checks in runs:
            for cases, rows in self._pending(suite, run_id):
                for row in rows:
                    case = cases[row.case_id]
                    for check in checks:
                        if check in case.checks and check.label not in (row.judge or {}):
                            yield suite, row, case, check

    async def _canaries(self, judge: JudgeClient, check: JudgeCheck) -> tuple[float, int]:
        """Share of the bundled manipulative answers the judge let through (judge errors left out)."""
        verdicts = await asyncio.gather(*(judge.grade(check, c.question, c.answer, (c.reference,)) for c in canaries()))
        valid = [v.value for v in verdicts if v.value is not None]
        fooled = sum(canary_fooled(check, v) for v in valid)
        return (fooled / len(valid) if valid else float("nan"), len(valid))

    def _pending(self, suite: Suite, run_id: int) -> Iterator[tuple[dict[str, Case], list[CaseResult]]]:
        """The run's ``generated`` answers with their cases, CASE_BATCH cases at a time, in suite order."""
        it = iter(suite.cases)
        while batch := {c.id: c for c in islice(it, CASE_BATCH)}:
            with Session(self.engine) as s:
                rows = list(s.scalars(select(CaseResult).where(CaseResult.run_id == run_id, CaseResult.status == "generated",
                                                               CaseResult.case_id.in_(batch))))
            if rows:
                yield batch, rows

    def _reopen(self, run_id: int, judges: dict[str, str]) -> None:
        """Judge errors of an earlier attempt are asked again: their failed verdicts are dropped and the rows await the
        judge once more. Only of the same judge identity: a judge whose fingerprint changed since would mix two judges
        in one run, so that is refused, saying what to do."""
        with Session(self.engine) as s:
            rows = list(s.scalars(select(CaseResult).where(CaseResult.run_id == run_id, CaseResult.status == "judge_error")))
        for row in rows:
            verdicts = row.judge or {}
            for detail in verdicts.values():
                now = judges.get(detail.get("judge", ""))
                if now is not None and detail.get("fingerprint") != now:
                    raise ConfigError(
                        "judge", f"judge '{detail['judge']}' changed since run {run_id} was judged (fingerprint "
                        f"{detail.get('fingerprint')} then, {now} now): its judge errors cannot be re-asked without mixing "
                        "two judges in one run", "run in a new slot (--slot) to judge every answer with the new judge, "
                        "or restore the judge's settings to re-ask only the failed verdicts")
            repo.reopen_for_judge(self.engine, row, {label: d for label, d in verdicts.items() if not d.get("error")})

    def _settle(self, suite: Suite, run_id: int) -> None:
        """Rows with every judge verdict in hand become ok (scored) or judge_error."""
        for cases, rows in self._pending(suite, run_id):
            for row in rows:
                self._settle_row(cases[row.case_id], row)

    def _settle_row(self, case: Case, row: CaseResult) -> None:
        wanted = [c for c in case.checks if isinstance(c, JudgeCheck)]
        got = row.judge or {}
        if any(c.label not in got for c in wanted):
            return
        errors = [f"{c.label}: {got[c.label]['error']}" for c in wanted if got[c.label]["error"]]
        if errors:
            repo.set_status(self.engine, row, "judge_error", error="; ".join(errors))
            return
        graded = {}
        for c in wanted:
            graded[c.label] = got[c.label]["verdict"]
            if got[c.label]["prob"] is not None:
                graded[f"{c.label}_prob"] = got[c.label]["prob"]
        scores = score_output(list(case.checks), row.output or "", case, graded)
        repo.set_status(self.engine, row, "ok", scores=scores)

