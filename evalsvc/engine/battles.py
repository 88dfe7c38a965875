"""Arena: pairwise battles between variants on the same prompts, and ratings from them.

Each pair of answers to a case is judged twice, once in each order; a verdict that
changes with the order is position bias, not preference, and counts as a tie (Zheng et
al. 2023, "Judging LLM-as-a-judge", arXiv 2306.05685, section 3.4). Battles are stored
with the judge's identity, each pair in one canonical order (by fingerprint), and are never
judged twice; a battle the judge gave no verdict on (unparsable, or a refusal of that pair) is
asked again by the next arena run. Ratings come from ``ratings``.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from evalsvc.checks.judge import DEFAULT_RUBRIC, combine, pair_messages, template_hash
from evalsvc.config import Config, VariantConfig
from evalsvc.engine.judge_client import JudgeClient
from evalsvc.engine.judge_phase import WHOLE_JUDGE_STATUSES
from evalsvc.engine.runner import Runner
from evalsvc.errors import ConfigError, EvalsvcError, FatalEndpointError
from evalsvc.identity import content_hash
from evalsvc.serving import Served, serve
from evalsvc.serving.endpoint import EndpointClient
from evalsvc.stats import ratings
from evalsvc.store.latest import latest_runs
from evalsvc.store.schema import BattleRecord, CaseResult
from evalsvc.suites import Suite

CHECKS_JUDGE = "checks"  # not a model: battles decided by the suite's own check scores


@dataclass(frozen=True)
class Answers:
    variant: str
    fingerprint: str
    by_case: dict[str, str]
    scores: dict[str, dict[str, float]]


def checks_verdict(a: dict[str, float], b: dict[str, float], higher_is_better: dict[str, bool]) -> float:
    """A battle decided by the suite's checks: the case pass first, then the mean continuous score.

    Deterministic and order-free, so it needs no position-bias control; useful where no judge
    model is good enough (a 135M model cannot judge) and as a cross-check of a judge model.
    """
    if a.get("pass") != b.get("pass") and "pass" in a and "pass" in b:
        return 1.0 if a["pass"] > b["pass"] else 0.0
    shared = [m for m in a if m in b and m != "pass" and m in higher_is_better]
    diff = sum((a[m] - b[m]) * (1 if higher_is_better[m] else -1) for m in shared)
    if abs(diff) < 1e-9:
        return 0.5
    return 1.0 if diff > 0 else 0.0


def latest_answers(engine: Engine, suite: Suite, variant: str, fp: str) -> Answers | None:
    """Outputs of the latest run of the variant's series (this suite version x its fingerprint), sample 0."""
    with Session(engine) as s:
        found = latest_runs(s, suite.version, fp)
        if not found:
            return None
        rows = s.execute(select(CaseResult.case_id, CaseResult.output, CaseResult.scores).where(
            CaseResult.run_id == found[0].id, CaseResult.sample_index == 0, CaseResult.status == "ok")).all()
        return Answers(variant, fp, {cid: out or "" for cid, out, _ in rows}, {cid: sc or {} for cid, _, sc in rows})


def answers_hash(a: Answers, b: Answers, case_id: str) -> str:
    """The two answers a battle judges: an endpoint's answers can change under one fingerprint (a checkpoint swapped
    behind its URL), and a battle judged on the old ones says nothing of the new."""
    return content_hash({"a": a.by_case[case_id], "b": b.by_case[case_id]}, 16)


def canonical(answers: Answers) -> tuple[str, str]:
    """The order a pair is judged and stored in: by fingerprint (then name), so a pair is one battle per case whatever
    the order the variants were named in (the store's unique key is on the ordered pair)."""
    return answers.fingerprint, answers.variant


class Arena:
    def __init__(self, cfg: Config, engine: Engine, log_dir: Path, progress: bool | None = None) -> None:
        self.cfg, self.engine, self.log_dir, self.progress = cfg, engine, log_dir, progress

    def answers(self, suite: Suite, variants: list[VariantConfig]) -> list[Answers]:
        """Each variant's answers, running (or resuming) the suite first where there are none."""
        out = []
        for v in variants:
            fp = self.cfg.fingerprint(v.name)
            found = latest_answers(self.engine, suite, v.name, fp)
            if found is None:
                outcome = Runner(self.cfg, self.engine, progress=self.progress, log_dir=self.log_dir).run(suite, v)
                if outcome.status != "succeeded":
                    raise EvalsvcError(f"cannot collect answers of '{v.name}' on '{suite.name}': {outcome.error}")
                found = latest_answers(self.engine, suite, v.name, fp)
            assert found is not None
            out.append(found)
        return out

    def battle(self, suite: Suite, variants: list[VariantConfig], judge_name: str,
               rubric: str = DEFAULT_RUBRIC, limit: int | None = None) -> list[ratings.Battle]:
        """Judge every missing battle between these variants on this suite; return all stored ones.

        ``limit`` keeps the first N cases of the suite (a quick arena).
        """
        if len(variants) < 2:
            raise ConfigError("--variant", "an arena needs at least two variants", "pass --variant twice or more")
        answers = self.answers(suite, variants)
        case_ids = [c.id for c in itertools.islice(suite.cases, limit)]  # the file is read only as far as the limit
        if judge_name == CHECKS_JUDGE:
            judge_fp, tmpl = CHECKS_JUDGE, content_hash({"checks_verdict": 1})
            todo = self._missing(suite, answers, judge_fp, tmpl, case_ids)
            directions = {name: spec.higher_is_better for name, spec in suite.metrics().items() if spec.kind == "continuous"}
            for case_id, a, b in todo:
                outcome = checks_verdict(a.scores[case_id], b.scores[case_id], directions)
                verdict = {1.0: "A", 0.0: "B", 0.5: "tie"}[outcome]
                self._store(suite, case_id, a, b, CHECKS_JUDGE, judge_fp, tmpl, verdict, verdict, outcome)
        else:
            judge_variant = self.cfg.variant(judge_name)
            judge_fp = self.cfg.fingerprint(judge_name)
            tmpl = template_hash(rubric)
            todo = self._missing(suite, answers, judge_fp, tmpl, case_ids)
            if todo:
                with serve(judge_variant, self.log_dir) as served:
                    asyncio.run(self._judge_all(served, judge_variant, suite, todo, rubric, tmpl))
        return self.stored(suite, answers, judge_fp, tmpl, case_ids)

    def _store(self, suite: Suite, case_id: str, a: Answers, b: Answers, judge_name: str, judge_fp: str, tmpl: str,
               ab: str, ba: str, outcome: float | None) -> None:
        out_a, out_b = a.by_case[case_id], b.by_case[case_id]
        with Session(self.engine) as s, s.begin():
            s.execute(delete(BattleRecord).where(  # a battle the judge failed on, or on other answers: asked again, replaced
                BattleRecord.suite_version == suite.version, BattleRecord.case_id == case_id,
                BattleRecord.fingerprint_a == a.fingerprint, BattleRecord.fingerprint_b == b.fingerprint,
                BattleRecord.judge_fingerprint == judge_fp, BattleRecord.template_hash == tmpl))
            s.add(BattleRecord(suite_name=suite.name, suite_version=suite.version, case_id=case_id, variant_a=a.variant,
                               fingerprint_a=a.fingerprint, variant_b=b.variant, fingerprint_b=b.fingerprint,
                               judge_name=judge_name, judge_fingerprint=judge_fp, template_hash=tmpl, verdict_ab=ab,
                               verdict_ba=ba, outcome=outcome, len_a=len(out_a.split()), len_b=len(out_b.split()),
                               answers_hash=answers_hash(a, b, case_id)))

    def _missing(self, suite: Suite, answers: list[Answers], judge_fp: str, tmpl: str,
                 case_ids: list[str]) -> list[tuple[str, Answers, Answers]]:
        with Session(self.engine) as s:
            done = set(s.execute(select(BattleRecord.case_id, BattleRecord.fingerprint_a, BattleRecord.fingerprint_b,
                                        BattleRecord.answers_hash).where(
                BattleRecord.suite_version == suite.version, BattleRecord.judge_fingerprint == judge_fp,
                BattleRecord.template_hash == tmpl, BattleRecord.outcome.is_not(None))).all())  # failed ones: asked again
        todo = []
        for a, b in itertools.combinations(sorted(answers, key=canonical), 2):  # each pair in one order, whatever -v's
            for cid in case_ids:
                if (cid in a.by_case and cid in b.by_case
                        and (cid, a.fingerprint, b.fingerprint, answers_hash(a, b, cid)) not in done):
                    todo.append((cid, a, b))
        return todo

    async def _judge_all(self, served: Served, judge_variant: VariantConfig, suite: Suite,
                         todo: list[tuple[str, Answers, Answers]], rubric: str, tmpl: str) -> None:
        client = EndpointClient.for_served(served, self.cfg)
        judge = JudgeClient(self.cfg, self.engine, judge_variant, client)
        cases = {c.id: c for c in suite.cases}
        sem = asyncio.Semaphore(self.cfg.concurrency)

        async def ask(question: str, first: str, second: str) -> str | None:
            try:
                return await judge.ask_pair(pair_messages(question, first, second, rubric))
            except FatalEndpointError as exc:  # this pair's fault alone (too long for the judge): no verdict, asked again
                if exc.status in WHOLE_JUDGE_STATUSES:  # on a re-run; a misconfigured judge stops the arena
                    raise
                return None

        async def one(case_id: str, a: Answers, b: Answers) -> None:
            question = suite.messages(cases[case_id])[-1]["content"]
            out_a, out_b = a.by_case[case_id], b.by_case[case_id]
            async with sem:  # a battle at a time per slot, so finished battles are stored early
                first = await ask(question, out_a, out_b)
                second = await ask(question, out_b, out_a)
            self._store(suite, case_id, a, b, judge_variant.name, judge.fingerprint, tmpl, *combine(first, second))

        try:
            await asyncio.gather(*(one(*t) for t in todo))
        finally:
            await client.aclose()

    def stored(self, suite: Suite, answers: list[Answers], judge_fp: str, tmpl: str,
               case_ids: list[str]) -> list[ratings.Battle]:
        """The battles of these variants' current answers (one judged on answers they no longer give is left out)."""
        fingerprints = [a.fingerprint for a in answers]
        by_fp = {a.fingerprint: a for a in answers}
        with Session(self.engine) as s:
            rows = s.execute(select(BattleRecord.variant_a, BattleRecord.variant_b, BattleRecord.outcome, BattleRecord.len_a,
                                    BattleRecord.len_b, BattleRecord.case_id, BattleRecord.fingerprint_a,
                                    BattleRecord.fingerprint_b, BattleRecord.answers_hash).where(
                BattleRecord.suite_version == suite.version, BattleRecord.judge_fingerprint == judge_fp,
                BattleRecord.template_hash == tmpl, BattleRecord.fingerprint_a.in_(fingerprints),
                BattleRecord.fingerprint_b.in_(fingerprints), BattleRecord.outcome.is_not(None),
                BattleRecord.case_id.in_(case_ids))).all()
        return [ratings.Battle(r.variant_a, r.variant_b, r.outcome, r.len_a, r.len_b, r.case_id)
                for r in rows if r.outcome is not None and _current(r, by_fp)]


def _current(row: object, by_fp: dict[str, Answers]) -> bool:
    """Whether a stored battle judged the answers its two variants give now."""
    a, b = by_fp.get(row.fingerprint_a), by_fp.get(row.fingerprint_b)  # type: ignore[attr-defined]
    cid = row.case_id  # type: ignore[attr-defined]
    return (a is not None and b is not None and cid in a.by_case and cid in b.by_case
            and row.answers_hash == answers_hash(a, b, cid))  # type: ignore[attr-defined]
