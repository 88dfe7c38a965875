"""The pre-deploy gate: measure baseline and candidate now, compare exactly those runs, store the verdict, write outputs.

Fresh by default: both variants run under one new shared slot, so the verdict is about what the
endpoints answer today (an endpoint's fingerprint cannot see a checkpoint swapped behind its URL), with
their requests interleaved case by case so that both arms meet the same machine load. Stored answers
stand in for requests only where the fingerprint pins the checkpoint bytes (local files) and no speed
metric decides (a stored answer has no latency of this gate). ``reuse`` compares the latest stored runs
instead (``max_age`` bounds how old they may be); ``baseline_runs`` pins a release reference run per suite.
"""

from __future__ import annotations

import hashlib
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.config import Config, VariantConfig
from evalsvc.config.sequential import SequentialGate
from evalsvc.engine import teacher_forced
from evalsvc.engine.rejudge import judged_alike
from evalsvc.engine.runner import Outcome, Runner
from evalsvc.errors import ConfigError, EvalsvcError
from evalsvc.service.schedule_state import close_abandoned_runs
from evalsvc.service.sequential_gate import Arms, run_sequential
from evalsvc.serving import Served, serve
from evalsvc.stats import speed
from evalsvc.store import queries
from evalsvc.store.latest import latest_pairs, runs_by_id
from evalsvc.store.schema import Variant
from evalsvc.suites import Suite
from evalsvc.verdicts.compare import NotComparable, Report, compare_runs, stored_runs, without_runs
from evalsvc.verdicts.gate_report import could_not_evaluate, exit_code, write_outputs
from evalsvc.verdicts.record import record

A_A_SEED_OFFSET = 1_000_003  # far past any sample index, so the two arms share no seed
STORED_NOTE = ("stored results compared (a variant evalsvc does not run, imported from lm-eval): the "
               "latest runs of both on each suite, nothing measured now")
A_A_NOTE = ("baseline and candidate have the same fingerprint: an A/A comparison of two fresh runs (response cache off, "
            "the second with other seeds): the noise floor")
ONE_AT_A_TIME_NOTE = ("baseline and candidate are vLLM servers on the same GPUs, so they were served one after the other, "
                      "not interleaved: their speed intervals do not cover load that differed between the two runs")


@dataclass
class GateResult:
    exit_code: int
    report: Report | None = None
    markdown: str = ""
    failed: list[Outcome] = field(default_factory=list)  # runs that could not be made: nothing was compared
    made: list[Outcome] = field(default_factory=list)  # every run the gate made (a scheduled firing lists them)

    def failure(self) -> str:
        return "\n".join(f"{o.variant} on {o.suite}: {o.error}" for o in self.failed)


def baseline_of(cfg: Config, candidate: str, baseline: str | None, family: str | None = None) -> str:
    """The baseline named, else the configured baseline of the candidate's family (``family``: an imported one's)."""
    if baseline is not None:
        return baseline
    family = family or cfg.variant(candidate).family
    found = cfg.baselines.get(family)
    if found is None:
        raise ConfigError("--baseline", f"none given and evalsvc.yaml has no baselines.{family}",
                          f"pass --baseline NAME or add 'baselines: {{{family}: NAME}}' to evalsvc.yaml")
    return found


def configured(cfg: Config, name: str) -> bool:
    return any(v.name == name for v in cfg.variants)


def run_stored_gate(cfg: Config, engine: Engine, candidate: str, baseline: str | None, suite_names: list[str], *,
                    max_age: timedelta | None = None, fail_on_inconclusive: bool | None = None,
                    markdown_path: Path | None = None, junit_path: Path | None = None,
                    json_path: Path | None = None) -> GateResult:
    """The gate on variants evalsvc cannot run (imported results): each suite's latest stored runs of both names on the
    newest suite version both have, compared as a ``--reuse --no-run`` gate compares configured ones."""
    try:
        if baseline is None:
            baseline = baseline_of(cfg, candidate, None, _stored_family(engine, candidate))
        with Session(engine) as s:
            runs = latest_pairs(s, baseline, candidate, suite_names or None)
            if not runs:
                raise NotComparable(f"no suite has succeeded runs of both {baseline} and {candidate} on one suite version"
                                    f"{' among ' + ', '.join(suite_names) if suite_names else ''}: import (or run) the same "
                                    "task for both (`evalsvc runs list` shows what is stored)")
            report = compare_runs(s, cfg.gate, baseline, candidate, runs, [STORED_NOTE])
        report.provenance = _provenance(engine, report, max_age)
    except EvalsvcError as exc:
        could_not_evaluate(candidate, baseline, str(exc), [], markdown_path, junit_path, json_path)
        raise
    record(engine, report)
    fail_inc = cfg.gate.fail_on_inconclusive if fail_on_inconclusive is None else fail_on_inconclusive
    md = write_outputs(report, markdown_path, junit_path, fail_inc, cfg.gate.top_flips, cfg.gate.alpha, json_path)
    return GateResult(exit_code(report, fail_inc), report, md)


def _stored_family(engine: Engine, name: str) -> str:
    with Session(engine) as s:
        family = s.scalars(select(Variant.family).where(Variant.name == name).order_by(Variant.first_seen.desc())).first()
    if family is None:
        raise ConfigError(f"--candidate {name}", "neither evalsvc.yaml nor the store knows a variant of that name",
                          "configure it, or store its results with `evalsvc import`")
    return family


GATE_GONE = "its gate was stopped before it finished (a gate's slot is never measured again; the next gate measures anew)"


def run_gate(cfg: Config, engine: Engine, suites: list[Suite], candidate: str, baseline: str, *, reuse: bool = False,
             run_missing: bool = True, max_age: timedelta | None = None, baseline_runs: tuple[int, ...] = (),
             fail_on_inconclusive: bool | None = None, markdown_path: Path | None = None, junit_path: Path | None = None,
             json_path: Path | None = None, progress: bool | None = None, logs: Path | None = None,
             sequential: SequentialGate | None = None) -> GateResult:
    """Is the candidate non-inferior to the baseline on these suites? Exit code 0/1/2/3 as the CLI documents.
    ``sequential``: ask the cases in looks and stop once the verdict is decided (``service.sequential_gate``).

    Could not evaluate (exit 2: a run failed, or an error was raised) still writes the files asked for, saying why
    and which runs were made (``could_not_evaluate``), so a CI job has a report to upload."""
    made: list[Outcome] = []
    close_abandoned_runs(engine, GATE_GONE, slot_prefix="gate:")  # a killed gate's runs: its slot is never used again
    try:
        result = _gate(cfg, engine, suites, candidate, baseline, made, reuse=reuse, run_missing=run_missing, max_age=max_age,
                       baseline_runs=baseline_runs, fail_on_inconclusive=fail_on_inconclusive, markdown_path=markdown_path,
                       junit_path=junit_path, json_path=json_path, progress=progress, logs=logs, sequential=sequential)
    except EvalsvcError as exc:
        could_not_evaluate(candidate, baseline, str(exc), made, markdown_path, junit_path, json_path)
        raise
    if result.failed:
        could_not_evaluate(candidate, baseline, result.failure(), made, markdown_path, junit_path, json_path)
    result.made = made
    return result


def _gate(cfg: Config, engine: Engine, suites: list[Suite], candidate: str, baseline: str, made: list[Outcome], *,
          reuse: bool, run_missing: bool, max_age: timedelta | None, baseline_runs: tuple[int, ...],
          fail_on_inconclusive: bool | None, markdown_path: Path | None, junit_path: Path | None, json_path: Path | None,
          progress: bool | None, logs: Path | None, sequential: SequentialGate | None = None) -> GateResult:
    pinned = _pinned(engine, suites, baseline_runs)
    teacher_forced.wanted(cfg.divergence, cfg.variant(candidate))  # divergence.mode it cannot follow: say so now
    if sequential is not None and (reuse or pinned):
        raise ConfigError("--sequential", "a sequential gate measures both arms now, look by look",
                          "leave out --reuse/--no-run/--baseline-run, or gate without --sequential")
    if sequential is not None:
        aa = cfg.fingerprint(baseline) == cfg.fingerprint(candidate)
        found, failed = run_sequential(cfg, engine, suites, baseline, candidate, sequential, made, [A_A_NOTE] * aa,
                                       progress=progress, logs=logs, gone=GATE_GONE,
                                       make_arms=lambda slot: _arms(cfg, engine, baseline, candidate, slot, progress, logs))
        if found is None:
            return GateResult(2, failed=failed)
        return _published(engine, cfg, found, max_age, fail_on_inconclusive, markdown_path, junit_path, json_path)
    if reuse:
        failed = _run_missing(cfg, engine, suites, [baseline, candidate], progress, logs, made) if run_missing else []
        if failed:
            return GateResult(2, failed=failed)
        stored, first = stored_runs(engine, cfg, suites, baseline, candidate)
        ids = {name: (pinned[name].id if name in pinned else b.id, c.id) for name, (b, c) in stored.items()}
    else:
        notes: list[str] = []
        ids, failed = _measure_now(cfg, engine, suites, baseline, candidate, pinned, progress, logs, made, notes)
        if failed:
            return GateResult(2, failed=failed)
        first = [A_A_NOTE] * (cfg.fingerprint(baseline) == cfg.fingerprint(candidate)) + notes
    judged = judged_alike(cfg, engine, suites, ids, logs)  # a stored run judged by another judge: its answers re-judged
    report = _compare_ids(engine, cfg, baseline, candidate, judged.ids, first + judged.notes, judged.why)
    return _published(engine, cfg, report, max_age, fail_on_inconclusive, markdown_path, junit_path, json_path)


def _published(engine: Engine, cfg: Config, report: Report, max_age: timedelta | None, fail_on_inconclusive: bool | None,
               markdown_path: Path | None, junit_path: Path | None, json_path: Path | None) -> GateResult:
    """Store the verdict and write the outputs asked for."""
    report.provenance = _provenance(engine, report, max_age)
    record(engine, report)
    fail_inc = cfg.gate.fail_on_inconclusive if fail_on_inconclusive is None else fail_on_inconclusive
    md = write_outputs(report, markdown_path, junit_path, fail_inc, cfg.gate.top_flips, cfg.gate.alpha, json_path)
    return GateResult(exit_code(report, fail_inc), report, md)


def _run_missing(cfg: Config, engine: Engine, suites: list[Suite], names: list[str], progress: bool | None,
                 logs: Path | None, made: list[Outcome]) -> list[Outcome]:
    runner = Runner(cfg, engine, progress=progress, log_dir=logs)
    for name in dict.fromkeys(names):
        todo = without_runs(engine, suites, cfg.fingerprint(name))
        made += runner.run_variant(todo, cfg.variant(name)) if todo else []
        failed = [o for o in made if o.status != "succeeded"]
        if failed:
            return failed
    return []


def _measure_now(cfg: Config, engine: Engine, suites: list[Suite], baseline: str, candidate: str, pinned: dict[str, Any],
                 progress: bool | None, logs: Path | None, made: list[Outcome], notes: list[str]
                 ) -> tuple[dict[str, tuple[int, int]], list[Outcome]]:
    """Run both variants now under one new slot, their requests interleaved case by case in one time window
    (``Runner.run_pair``), so that the serving machine's load falls on both arms alike and cancels in each case's
    speed difference. Where a speed metric decides (``gate.margins``), or for an A/A gate, no stored answer stands
    in for a request: both arms are timed in full. An A/A gate's second arm draws other seeds (at temperature 0 the
    seed changes nothing; above it, the two runs are independent draws). Where ``divergence.mode`` asks for teacher
    forcing, the candidate's server is held over its runs and scores the baseline's answers before it stops
    (``engine.teacher_forced``). Returns each suite's (baseline run id, candidate run id)."""
    arms = _arms(cfg, engine, baseline, candidate, f"gate:{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}:{uuid.uuid4().hex[:8]}",
                 progress, logs)
    base_suites = [s for s in suites if s.name not in pinned]
    vb, vc = cfg.variant(baseline), cfg.variant(candidate)
    force = teacher_forced.wanted(cfg.divergence, vc)
    notes += arms.notes
    with ExitStack() as stack:
        if not arms.together:
            base = arms.first.run_variant(base_suites, vb, slot=arms.slots[0]) if base_suites else []
            made += base
            served = _hold(stack, arms, vb, vc, cfg, logs, notes) if force else None
            cand = arms.second.run_variant(suites, vc, slot=arms.slots[1])
            made += cand
        else:
            served = _hold(stack, arms, vb, vc, cfg, logs, notes) if force else None
            base, cand = arms.first.run_pair(arms.second, (base_suites, vb, arms.slots[0]), (suites, vc, arms.slots[1]),
                                             arms.coin)
            made += [*base, *cand]
        failed = [o for o in [*base, *cand] if o.status != "succeeded"]
        by_suite = {o.suite: o.run_id for o in base}
        ids = {o.suite: (pinned[o.suite].id if o.suite in pinned else by_suite[o.suite], o.run_id) for o in cand
               if o.suite in pinned or o.suite in by_suite}
        if served is not None and not failed:
            pairs = [(suite, *ids[suite.name]) for suite in suites if suite.name in ids]
            teacher_forced.force_runs(engine, served, vc, cfg.divergence.top_logprobs, pairs)
    return ids, failed


def _hold(stack: ExitStack, arms: Arms, vb: VariantConfig, vc: VariantConfig, cfg: Config, logs: Path | None,
          notes: list[str]) -> Served | None:
    """Start the candidate's server for the gate's whole measurement, so that it is still up to score the baseline's
    answers after its runs; both runners use it. A server that does not start leaves the runners to start it (their
    runs fail with the cause, as without teacher forcing): nothing is forced, and a note says why."""
    try:
        served = stack.enter_context(serve(vc, arms.second.log_dir))
    except EvalsvcError as exc:
        notes.append(f"teacher forcing not done: the candidate's server did not start ({exc}); the divergence rows "
                     "compare the shared prefix")
        return None
    held = {vc.name: served}
    if cfg.fingerprint(vb.name) == cfg.fingerprint(vc.name):
        held[vb.name] = served  # an A/A gate: one server for both arms, as the runners would start
    arms.first.held = {**arms.first.held, **held}
    arms.second.held = {**arms.second.held, **held}
    return served


def _arms(cfg: Config, engine: Engine, baseline: str, candidate: str, slot: str, progress: bool | None,
          logs: Path | None) -> Arms:
    """The two runners of a fresh gate under ``slot``: both timed in full where a speed metric decides or for an A/A
    gate (whose second arm draws other seeds), else stored answers stand in where the fingerprint pins the bytes."""
    same = cfg.fingerprint(baseline) == cfg.fingerprint(candidate)
    timed = same or any(m in cfg.gate.margins for m in speed.METRICS)
    first = Runner(cfg, engine, progress=progress, log_dir=logs, cache="off" if timed else "pinned")
    second = Runner(cfg, engine, progress=progress, log_dir=logs, cache="off" if timed else "pinned",
                    seed_offset=A_A_SEED_OFFSET if same else 0)
    slots = (f"{slot}:a", f"{slot}:b") if same else (slot, slot)
    coin = int.from_bytes(hashlib.sha256(slot.encode()).digest()[:4], "big")  # which arm of a case goes first
    together = same or not _one_gpu_server_at_a_time(cfg.variant(baseline), cfg.variant(candidate))
    return Arms(first, second, slots, coin, timed, together, [] if together else [ONE_AT_A_TIME_NOTE])


def _one_gpu_server_at_a_time(a: VariantConfig, b: VariantConfig) -> bool:
    """Two vLLM servers on the same GPUs cannot both start (each takes most of a GPU's memory): serve one at a time."""
    if a.local is None or b.local is None or a.local.engine != "vllm" or b.local.engine != "vllm":
        return False
    ga, gb = a.local.gpu_ids, b.local.gpu_ids
    return ga is None or gb is None or bool(set(ga) & set(gb))


def _pinned(engine: Engine, suites: list[Suite], run_ids: tuple[int, ...]) -> dict[str, Any]:
    """--baseline-run: each id a succeeded run of one of the gated suites' versions, by suite name."""
    if not run_ids:
        return {}
    with Session(engine) as s:
        rows = runs_by_id(s, run_ids)
    versions = {suite.version: suite.name for suite in suites}
    out: dict[str, Any] = {}
    for rid in run_ids:
        row = rows.get(rid)
        if row is None or row.status != "succeeded":
            raise ConfigError(f"--baseline-run {rid}", "no succeeded run with that id in the store",
                              "pick one from `evalsvc schedule history` or the dashboard's Runs page")
        if row.suite_version not in versions:
            raise ConfigError(f"--baseline-run {rid}", f"it is a run of suite '{row.suite_name}' version {row.suite_version}, "
                              "not of a gated suite version", "pin a run of the suite as it is now (an edited suite is "
                              "a new version), or gate with -s on that suite")
        out[versions[row.suite_version]] = row
    return out


def _compare_ids(engine: Engine, cfg: Config, baseline: str, candidate: str, ids: dict[str, tuple[int, int]],
                 notes: list[str], unjudged: dict[str, str] | None = None) -> Report:
    with Session(engine) as s:
        rows = runs_by_id(s, [i for pair in ids.values() for i in pair])
        return compare_runs(s, cfg.gate, baseline, candidate, {name: (rows[b], rows[c]) for name, (b, c) in ids.items()},
                            list(notes), unjudged=unjudged)


def _provenance(engine: Engine, report: Report, max_age: timedelta | None) -> list[str]:
    """One line per suite: the two runs compared, when, which checkpoints, how much came from the cache, which evalsvc."""
    now = datetime.now(UTC)
    lines = []
    with Session(engine) as s:
        rows = runs_by_id(s, [r.id for pair in report.runs.values() for r in pair])
        for name, (b, c) in report.runs.items():
            parts = []
            for who, run in (("baseline", rows[b.id]), ("candidate", rows[c.id])):
                # its age is from when it was made (finished), not its slot: a late or backfilled slot is fresh
                slot, made = _utc(run.created_at), _utc(run.finished_at or run.created_at)
                if max_age is not None and now - made > max_age:
                    raise NotComparable(f"the {who} run {run.id} of '{name}' finished {_age(now - made)} ago, more than "
                                        f"--max-age {_age(max_age)}: drop --reuse to measure both now, or raise --max-age")
                parts.append(f"{who} run {run.id} (slot {slot:%Y-%m-%d %H:%M}Z, finished {_age(now - made)} ago, fingerprint "
                             f"{run.variant_fingerprint}, {queries.cached_share(s, run.id):.0%} from the cache, "
                             f"{_scorer(run.evalsvc_version)})")
            lines.append(f"{name}: " + "; ".join(parts))
    return lines


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # SQLite hands back naive UTC


def _scorer(version: str | None) -> str:
    """What scored a run: an evalsvc version, or the tool an imported run came from ("lm-eval 0.4.13")."""
    if version and not version[0].isdigit() and version != "unknown":
        return f"scored by {version}"
    return f"evalsvc {version or 'unknown'}"


def _age(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 1440}d {minutes % 1440 // 60}h" if minutes >= 1440 else f"{minutes // 60}h {minutes % 60}m"


def parse_age(text: str) -> timedelta:
    """'90m', '36h', '7d' -> a timedelta (for --max-age)."""
    units = {"m": 60, "h": 3600, "d": 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ConfigError(f"--max-age {text}", "not a duration", "write minutes, hours or days: 90m, 36h, 7d")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])
