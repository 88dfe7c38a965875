"""Re-judging a stored run: its stored answers judged again by the judges configured now, in a run of their own.

A case's pass holds its judge verdicts, so two runs judged by different judge identities (judge variant fingerprint
+ prompt template hash) are never paired (``verdicts/compare.py``). A gate that compares a stored run (a pinned
``--baseline-run``, or ``--reuse``) with a run judged by another judge re-judges the stored answers with the current
judge first, then pairs the two runs under one judge identity.

The re-judged answers go into a new run of the same series (suite version x variant fingerprint) whose slot names its
source run and the judge identity, ``rejudge:<source run id>:<identity hash>``: a second gate finds it done and asks
the judge nothing, a killed one resumes it, as any run key does. Its rows are copies of the source run's (the same
answers, latencies and errors), each answer awaiting the judge, and then go through the ordinary judge phase
(``judge_phase.Grader``). The source run is only read: its rows are never written. A re-judged run carries its
source's times (created and finished: its answers were made then; ``started_at`` says when it was re-judged)
and no output hash (its outputs are its source's, not a new draw the
upstream-change check should compare), and it is never "the latest run" of its series (``store/latest.py``).

Where it cannot be re-judged (the answers are not stored, a judge is not configured or does not answer), the run is
left as it was, and the comparison leaves its judged metrics undecided with the reason in a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.checks import score_output
from evalsvc.checks.judge import JudgeCheck
from evalsvc.config import Config
from evalsvc.engine.judge_phase import Grader, judge_checks
from evalsvc.errors import EvalsvcError
from evalsvc.identity import content_hash
from evalsvc.stats import aggregate, speed
from evalsvc.store import queries, repo
from evalsvc.store.latest import REJUDGED
from evalsvc.store.locks import RunLocks
from evalsvc.store.schema import CaseResult, Run, utcnow
from evalsvc.suites import Suite

Identity = dict[str, tuple[str, str]]  # judge check label -> (judge fingerprint, prompt template hash)


class CannotRejudge(EvalsvcError):
    """A stored run's answers could not be judged again now (the reason says why)."""


@dataclass
class Judged:
    """The runs to compare, each pair judged alike where that could be done, and what was done, for the report."""

    ids: dict[str, tuple[int, int]]
    notes: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)  # suite -> why its runs could not be judged alike


def judged_alike(cfg: Config, engine: Engine, suites: list[Suite], ids: dict[str, tuple[int, int]],
                 log_dir: Path | None = None) -> Judged:
    """Per suite, the (baseline, candidate) run ids to compare: a run judged by another judge identity than its pair's
    is replaced by its answers re-judged with the judges configured now (both runs, where neither is judged so)."""
    out = Judged(dict(ids))
    by_name = {suite.name: suite for suite in suites}
    for name, pair in ids.items():
        suite = by_name.get(name)
        if suite is None or not suite.model_graded:
            continue
        stored = [_stored_identity(engine, run_id) for run_id in pair]
        if stored[0] == stored[1] and not any(len(ids_) > 1 for ids_ in stored[0].values()):
            continue  # judged alike already (by the same judge, current or not)
        try:
            now = current_identity(cfg, suite)
        except EvalsvcError as exc:
            out.why[name] = _cannot("both", pair, f"a judge of the suite is not configured: {exc}")
            out.notes.append(f"{name}: the two runs were judged by different judges or prompt templates, and {out.why[name]}")
            continue
        new = list(pair)
        for k, (who, run_id) in enumerate(zip(("baseline", "candidate"), pair, strict=True)):
            if _flat(stored[k]) == now:
                continue
            try:
                new[k] = rejudge(cfg, engine, suite, run_id, now, log_dir)
            except EvalsvcError as exc:
                out.why[name] = _cannot(who, pair, str(exc))
                out.notes.append(f"{name}: the two runs were judged by different judges or prompt templates, and "
                                 f"{out.why[name]}")
                break
            judges = ", ".join(sorted(judge_checks(suite)))
            out.notes.append(f"{name}: {who} re-judged with {judges} (its answers from run {run_id}, judged again in "
                             f"run {new[k]}): the two runs had been judged by different judges or prompt templates")
        else:
            out.ids[name] = (new[0], new[1])
    return out


def current_identity(cfg: Config, suite: Suite) -> Identity:
    """Each judge check's identity under the configuration now (raises ConfigError for a judge not configured)."""
    return {check.label: (cfg.fingerprint(judge), check.template_hash)
            for judge, checks in judge_checks(suite).items() for check in checks}


def rejudge(cfg: Config, engine: Engine, suite: Suite, source_id: int, now: Identity, log_dir: Path | None = None) -> int:
    """The id of a succeeded run holding run ``source_id``'s answers judged by the current judges (made, resumed or
    found); raises CannotRejudge saying why not."""
    slot = f"{REJUDGED}{source_id}:{content_hash(sorted(now.items()), 16)}"
    with Session(engine) as s, s.begin():
        source = s.get(Run, source_id)
        if source is None or source.status != "succeeded":
            raise CannotRejudge(f"run {source_id} is not a succeeded run")
        run = repo.claim_run(s, source.suite_version, source.suite_name, source.variant_fingerprint, source.variant_name,
                             source.n_cases, slot)
        run.created_at = source.created_at  # the answers' time: its place in its series is its source's
        run_id, done, made = run.id, run.status == "succeeded", source.finished_at
    if done:
        return run_id
    with RunLocks(engine) as locks:
        if not locks.acquire(run_id):
            raise CannotRejudge(f"run {run_id} (its re-judging) is being executed by another evalsvc process right now")
        _start(engine, run_id)
        try:
            _copy_answers(engine, suite, source_id, run_id)
        except CannotRejudge as exc:
            _end(engine, run_id, "failed", f"re-judging: {exc}")
            raise
        try:
            rates = Grader(cfg, engine, log_dir or Path(".evalsvc/logs")).grade([(suite, run_id)])
        except EvalsvcError as exc:
            _end(engine, run_id, "failed", f"re-judging: {exc}; re-run to resume")
            raise CannotRejudge(f"the judge did not answer: {exc}") from exc
        return _close(cfg, engine, suite, run_id, rates.get(run_id, {}), made)


def _stored_identity(engine: Engine, run_id: int) -> dict[str, set[tuple[str, str]]]:
    """Each judge check label of a run's answers -> the judge identities that graded it (more than one: mixed)."""
    out: dict[str, set[tuple[str, str]]] = {}
    with Session(engine) as s:
        for (verdicts,) in s.execute(select(CaseResult.judge).where(CaseResult.run_id == run_id,
                                                                   CaseResult.judge.is_not(None))):
            for label, detail in (verdicts or {}).items():
                out.setdefault(label, set()).add((detail.get("fingerprint"), detail.get("template")))
    return out


def _flat(stored: dict[str, set[tuple[str, str]]]) -> Identity | None:
    """A run's identity where each label was graded by one judge identity; None where one was graded by several."""
    if any(len(ids) != 1 for ids in stored.values()):
        return None
    return {label: next(iter(ids)) for label, ids in stored.items()}


def _cannot(who: str, pair: tuple[int, int], why: str) -> str:
    whose = {"baseline": f"the baseline answers (run {pair[0]})", "candidate": f"the candidate answers (run {pair[1]})"
             }.get(who, f"the answers (runs {pair[0]} and {pair[1]})")
    return f"{whose} could not be re-judged with the current judge: {why}"


def _start(engine: Engine, run_id: int) -> None:
    with Session(engine) as s, s.begin():
        run = s.get(Run, run_id)
        assert run is not None
        run.status, run.started_at, run.attempts, run.error = "running", utcnow(), run.attempts + 1, None


def _end(engine: Engine, run_id: int, status: str, error: str | None) -> None:
    with Session(engine) as s, s.begin():
        run = s.get(Run, run_id)
        assert run is not None
        n = repo.counts(s, run_id)
        run.status, run.error, run.finished_at = status, error, utcnow()
        run.n_ok, run.n_errored = n.get("ok", 0), n.get("errored", 0)


def _copy_answers(engine: Engine, suite: Suite, source_id: int, run_id: int) -> None:
    """The source run's answers as rows of the new run (once: a resumed re-judging keeps what it has), each answer to a
    judged case awaiting the judge again; the source's rows are only read."""
    cases = {case.id: case for case in suite.cases}
    with Session(engine) as s:
        if s.scalar(select(CaseResult.case_id).where(CaseResult.run_id == run_id).limit(1)) is not None:
            return
        run_ts = s.get(Run, run_id).created_at  # type: ignore[union-attr]
        rows = []
        for src in s.scalars(select(CaseResult).where(CaseResult.run_id == source_id)):
            case = cases.get(src.case_id)
            judged = case is not None and any(isinstance(c, JudgeCheck) for c in case.checks)
            status, scores, error = src.status, src.scores, src.error
            if judged and src.status != "errored":
                assert case is not None
                if src.output is None:
                    raise CannotRejudge(f"run {source_id} holds no answer for case {src.case_id} (its answers are "
                                        "not stored)")
                status, scores, error = "generated", score_output(list(case.checks), src.output, case), None
            rows.append(CaseResult(run_id=run_id, case_id=src.case_id, sample_index=src.sample_index, run_ts=run_ts,
                                   status=status, output=src.output, error=error, latency_ms=src.latency_ms,
                                   prompt_tokens=src.prompt_tokens, completion_tokens=src.completion_tokens,
                                   finish_reason=src.finish_reason, scores=scores, judge=None, logprobs=src.logprobs,
                                   cached=src.cached, created_at=utcnow()))
    if not rows:
        raise CannotRejudge(f"run {source_id} has no stored answers")
    repo.save_results(engine, rows, [])


def _close(cfg: Config, engine: Engine, suite: Suite, run_id: int, rates: dict[str, tuple[float, int]],
           made: datetime | None) -> int:
    """Succeeded, with its metric points, when every answer has its verdicts and errors stay within max_error_rate;
    finished when its answers were (``made``, the source's finish: a gate's --max-age is about the answers' age)."""
    with Session(engine) as s:
        n = repo.counts(s, run_id)
        total = s.get(Run, run_id).n_cases  # type: ignore[union-attr]
    failed = n.get("errored", 0) + n.get("judge_error", 0)
    if n.get("generated", 0):
        why = f"{n['generated']} answers still await their judge verdict"
    elif total and failed / total > cfg.max_error_rate:
        why = f"{failed}/{total} cases errored or got no valid verdict (limit {cfg.max_error_rate:.0%})"
    else:
        why = ""
    if why:
        _end(engine, run_id, "failed", f"re-judging: {why}; re-run to resume")
        raise CannotRejudge(why)
    with Session(engine) as s, s.begin():
        run = s.get(Run, run_id)
        assert run is not None
        run.status, run.error, run.finished_at = "succeeded", None, made or utcnow()
        run.n_ok, run.n_errored = n.get("ok", 0), n.get("errored", 0)
        aggs = aggregate.aggregate(suite.metrics(), repo.ok_scores(s, run_id))
        timed = speed.aggregates(speed.per_case(queries.speed_rows(s, run_id)))
        extra = [aggregate.Aggregate(name, "continuous", False, value, k, None, None) for name, (value, k) in rates.items() if k]
        repo.write_metric_points(s, run, aggs + timed + extra)
    return run_id
