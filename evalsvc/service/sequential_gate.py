"""`evalsvc gate --sequential`: ask the cases in looks, both arms together, and stop once the verdict is decided.

The gate's two runs per suite live under one slot, ``gate:seq:<seed>:<time>:<id>``, the seed of the case order
stored in it. Each look asks the next batch of the seeded order (``verdicts.sequential``) through the same
interleaved ``Runner.run_pair`` as the fixed gate, restricted to the batch's cases; between looks the runs stand
``cancelled`` with the cases not asked yet, and the servers stay up. A gate stopped before its verdict (killed,
an endpoint down) is resumed by the next sequential gate of the same candidate on the same suites within
``resume_within_h``: the same slot, the same order, no case asked twice. A decided gate's runs are ordinary partial
runs: ``evalsvc run --slot <its slot>`` completes them.
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.config import Config
from evalsvc.config.sequential import SPENDING, SequentialGate
from evalsvc.engine import teacher_forced
from evalsvc.engine.runner import Outcome, Runner
from evalsvc.serving import serve
from evalsvc.store.latest import runs_by_id
from evalsvc.store.locks import RunLocks
from evalsvc.store.schema import Run, utcnow
from evalsvc.suites import Suite
from evalsvc.verdicts.compare import Report
from evalsvc.verdicts.sequential import (
    Rule,
    SequentialSummary,
    anytime_looks,
    case_order,
    evaluate_look,
    evidence,
    kinds_of,
    looks_for,
)

PREFIX = "gate:seq:"
RESUMABLE = ("running", "failed", "cancelled")


@dataclass
class Arms:
    """How the fixed gate measures the two arms (``service.gate._measure_now`` decides it)."""

    first: Runner
    second: Runner
    slots: tuple[str, str]
    coin: int
    timed: bool  # both arms are timed in full (a speed margin decides, or an A/A gate): no stored answer stands in
    together: bool  # both variants can be served at once (not two vLLM servers on the same GPUs)
    notes: list[str]  # what the report says of how they were measured


def run_sequential(cfg: Config, engine: Engine, suites: list[Suite], baseline: str, candidate: str,
                   seq: SequentialGate, made: list[Outcome], notes: list[str], *, progress: bool | None,
                   logs: Any, gone: str, make_arms: Any) -> tuple[Report | None, list[Outcome]]:
    """The report of the look that decided (None and the failed runs when a look could not be made)."""
    whole = [s.name for s in suites if s.harness is not None]
    if whole:  # lm-eval reads its own documents: they are not in the seeded order, so not in the sequential tests
        notes.append(f"sequential gate: {', '.join(whole)} {'is an lm-eval task' if len(whole) == 1 else 'are lm-eval tasks'}"
                     ", run whole at the first look: decided at each look by the pooled rule (its vetoes and the pooled "
                     "rows), not by the sequential test of the other suites' cases")
    slot, seed, resumed = _slot(cfg, engine, suites, candidate, seq.seed, gone)
    arms: Arms = make_arms(slot)
    notes += arms.notes
    order = case_order(suites, seed)
    total = len(order)
    early_pass = not arms.timed and not any(s.model_graded for s in suites) and not any(
        cfg.gate.suite(s.name).critical for s in suites)
    if seq.mode == "anytime":
        budget = min(seq.budget or total, total)
        planned = anytime_looks(budget, seq.every)
        rule = Rule("anytime", budget, early_pass=early_pass, population=total if seq.finite else None)
        summary = SequentialSummary(seed, slot, planned, total, "anytime", resumed=resumed)
    else:
        planned = looks_for(total, seq.looks)
        rule = Rule("looks", total, SPENDING[seq.spending], early_pass)
        summary = SequentialSummary(seed, slot, planned, total, seq.spending, resumed=resumed)
    if not early_pass:
        notes.append("sequential gate: it can stop early only with a regression here (a judged or critical suite, or "
                     "a speed margin, is decided on complete runs), so a pass comes at the last look")
    kinds = kinds_of(suites)
    vb, vc = cfg.variant(baseline), cfg.variant(candidate)
    force = teacher_forced.wanted(cfg.divergence, vc)  # (scored between looks where the servers stay up)
    started = time.monotonic()
    with ExitStack() as stack:
        held = {}
        if arms.together:  # one server per variant for the whole gate, not one per look
            held[vb.name] = stack.enter_context(serve(vb, arms.first.log_dir))
            same = cfg.fingerprint(baseline) == cfg.fingerprint(candidate)
            held[vc.name] = held[vb.name] if same else stack.enter_context(serve(vc, arms.first.log_dir))
        arms.first.held = arms.second.held = held
        sizes: list[int] = []
        for n_k in planned:
            sizes.append(n_k)
            only = _batch(order[:n_k])
            if arms.together:
                base, cand = arms.first.run_pair(arms.second, (suites, vb, arms.slots[0]), (suites, vc, arms.slots[1]),
                                                 arms.coin, only=only)
            else:  # two vLLM servers on the same GPUs: one after the other, each look (the fixed gate's note says so)
                base = arms.first.run_variant(suites, vb, arms.slots[0], only)
                cand = arms.second.run_variant(suites, vc, arms.slots[1], only)
            made += [*base, *cand]
            failed = [o for o in [*base, *cand] if o.status not in ("succeeded", "cancelled")]
            if failed:
                return None, failed
            if force and vc.name in held:  # the candidate's server is up between looks: score this look's new cases
                ids = {o.suite: o.run_id for o in base}
                teacher_forced.force_runs(engine, held[vc.name], vc, cfg.divergence.top_logprobs,
                                          [(x, ids[x.name], o.run_id) for x in suites for o in cand
                                           if o.suite == x.name and x.name in ids])
            with Session(engine) as s:
                rows = runs_by_id(s, [o.run_id for o in [*base, *cand]])
                by_suite = {o.suite: rows[o.run_id] for o in base}
                runs = {o.suite: (by_suite[o.suite], rows[o.run_id]) for o in cand}
                look, report = evaluate_look(s, cfg.gate, baseline, candidate, runs, order, sizes, rule, kinds, notes)
            summary.looks.append(look)
            _say(look, total, planned, started)
            if report is not None:
                summary.requests_saved = 2 * (total - n_k) * _samples(cfg, suites, vc)
                report.notes.append(_stopped(summary, time.monotonic() - started))
                report.sequential = summary
                return report, []
    raise AssertionError("the last look always decides")  # pragma: no cover


def _batch(prefix: list[tuple[str, str]]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for suite, cid in prefix:
        out.setdefault(suite, set()).add(cid)
    return {k: frozenset(v) for k, v in out.items()}


def _samples(cfg: Config, suites: list[Suite], variant: Any) -> int:
    gen = cfg.generation_for(variant)
    return max(int(gen.model_copy(update=s.header.generation).samples) for s in suites) if suites else 1


def _slot(cfg: Config, engine: Engine, suites: list[Suite], candidate: str, seed: int | None, gone: str
          ) -> tuple[str, int, bool]:
    """The slot of a stopped sequential gate of this candidate on these suites to resume, else a new one."""
    fp = cfg.fingerprint(candidate)
    since = utcnow() - timedelta(hours=cfg.resume_within_h)
    versions = {s.version for s in suites}
    with Session(engine) as s:
        found = s.scalars(select(Run).where(Run.variant_fingerprint == fp, Run.suite_version.in_(versions),
                                            Run.slot.startswith(PREFIX, autoescape=True), Run.created_at >= since,
                                            Run.status.in_(RESUMABLE)).order_by(Run.id.desc())).all()
    with RunLocks(engine) as locks:
        for run in found:
            stopped = run.status == "failed" or run.error == gone or (run.status == "running" and locks.acquire(run.id))
            slot = re.sub(r":[ab]$", "", run.slot)  # (an A/A gate's two arms: <slot>:a and <slot>:b)
            if stopped and (seed is None or slot.startswith(f"{PREFIX}{seed}:")):
                return slot, int(slot.removeprefix(PREFIX).split(":")[0]), True
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    stamp = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
    return f"{PREFIX}{seed}:{stamp}:{hashlib.sha256(f'{seed}{stamp}{time.time_ns()}'.encode()).hexdigest()[:8]}", seed, False


def _say(look: Any, total: int, planned: list[int], started: float) -> None:
    """One plain line per look on stderr (a CI log shows where the gate stands)."""
    parts = [f"{r.metric} Δ {r.delta:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] {evidence(r)}" for r in look.rows]
    print(f"sequential gate: look {look.look}/{len(planned)}, {look.asked}/{total} cases asked, "
          f"{'; '.join(parts) or 'too few pairs yet'}: {look.verdict} ({time.monotonic() - started:.0f} s)",
          file=sys.stderr, flush=True)


def _stopped(summary: SequentialSummary, seconds: float) -> str:
    last = summary.looks[-1]
    where = (f"stopped at look {last.look} of {len(summary.planned)} with {last.asked} of {summary.total} cases asked "
             f"({summary.requests_saved} requests not sent)" if summary.stopped_early
             else f"ran to its last look ({summary.total} cases)")
    return (f"sequential gate (seed {summary.seed}, {summary.spending} spending, slot {summary.slot}"
            f"{', resumed' if summary.resumed else ''}): {where} in {seconds:.0f} s; decided at one-sided level "
            f"{last.level:.2g} (the boundary's), so the intervals shown are valid for a sequential stop")
