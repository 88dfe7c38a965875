"""Planning a run: claim its run key, take its lock, and list what it still lacks (store and cache first).

A run key (suite version x variant fingerprint x slot) executes in one process at a time: a
second invocation while the first is at work reports the run as running elsewhere and sends
nothing. What a run still lacks is listed a batch of cases at a time, never all at once."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, Literal

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from evalsvc.checks import Case, score_output
from evalsvc.config import Config, VariantConfig, serving_identity
from evalsvc.errors import ConfigError
from evalsvc.identity import content_hash
from evalsvc.stats import aggregate
from evalsvc.store import repo
from evalsvc.store.locks import RunLocks
from evalsvc.store.schema import CaseResult, Run, utcnow
from evalsvc.suites import Suite

CacheUse = Literal["variant", "pinned", "off"]
ITEM_BATCH = 500  # cases looked up together in the store (finished answers) and the response cache


@dataclass(frozen=True)
class Item:
    case: Case
    sample: int
    messages: list[dict[str, str]]
    cache_key: str
    params: dict[str, Any]  # the request's sampling parameters: sample k of a case is sent with seed + k


CacheUse = Literal["variant", "pinned", "off"]
ITEM_BATCH = 500  # cases looked up together in the store (finished answers) and the response cache


@dataclass
class Job:
    """One run in progress: what is left to send and what happened so far."""

    suite: Suite
    run_id: int
    run_ts: datetime
    params: dict[str, Any]
    samples: int
    to_send: int = 0  # answers neither in the store nor in the cache, counted before the server starts
    finished: bool = False  # the run key had already succeeded, or another process is executing it: nothing to do
    busy: str | None = None  # why another process has it
    sent: int = 0
    from_cache: int = 0
    consecutive_errors: int = 0
    breaker_open: bool = False
    last_error: str | None = None
    fatal: str | None = None
    store_lost: SQLAlchemyError | None = None  # a write failed: stop sending, raise once the requests in flight end
    extra: list[aggregate.Aggregate] = field(default_factory=list)  # run-level metrics (judge canary rates)
    harness_metrics: list[str] = field(default_factory=list)  # metric names an lm-eval task reported
    top_logprobs: int = 0  # alternatives asked per generated token (config divergence.top_logprobs; 0: none asked)
    logprobs: bool | None = None  # does the endpoint give them? found out by the run's first answer
    only: frozenset[str] | None = None  # ask only these cases now (a sequential gate's looks); None: every case
    finding_out: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)

    @property
    def asked(self) -> int:
        """Answers this call asks of the run in all (every case, or the cases of ``only``), for progress."""
        return (len(self.suite.cases) if self.only is None else len(self.only)) * self.samples

    @property
    def needs_server(self) -> bool:
        return not self.finished and not self.fatal and (self.to_send > 0 or self.suite.harness is not None)


SAMPLES_AT_T0 = ("samples: {k} at temperature 0 asks {k} times for one answer (the same request, the same seed): "
                 "it adds no information and would shrink every interval as if it did")


def sample_params(params: dict[str, Any], sample: int, case_id: str | None = None) -> dict[str, Any]:
    """Sample k of a case is an epoch of its own: the same request with seed + k (a seedless request is left as is).

    When sampling (temperature > 0) each case also gets a seed of its own, seed + k + a hash of its id: one seed
    for every request would give every case the same random draws, so a whole run would be one draw (two runs of
    one checkpoint then differ by far more than their paired interval allows: measured in bench/gate_table.py).
    At temperature 0 the seed changes nothing and the request is left as configured (and its cache key with it).
    """
    seed = params.get("seed")
    if seed is None:
        return params
    own = case_offset(case_id) if case_id is not None and params.get("temperature", 0.0) > 0 else 0
    if sample == 0 and own == 0:
        return params
    return {**params, "seed": (seed + sample + own) % 2**31}


def case_offset(case_id: str) -> int:
    """A stable per-case seed offset (the first 4 bytes of the id's sha256)."""
    return int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:4], "big")


def needs_judge(case: Case) -> bool:
    return any(c.model_graded for c in case.checks)


class Planner:
    """Claims runs and lists what they lack."""

    def __init__(self, cfg: Config, engine: Engine, cache: CacheUse = "variant", seed_offset: int = 0,
                 lock_wait_s: float = 0.0) -> None:
        self.cfg, self.engine, self.cache, self.seed_offset = cfg, engine, cache, seed_offset
        self.lock_wait_s = lock_wait_s

    def reads_cache(self, variant: VariantConfig) -> bool:
        """Whether stored answers may stand in for requests to this variant (see ``Runner``'s ``cache``)."""
        if self.cache == "off" or not variant.use_cache:
            return False
        return self.cache == "variant" or variant.local is not None

    def plan(self, suite: Suite, variant: VariantConfig, fp: str, slot: str | None, locks: RunLocks) -> Job:
        gen = self.cfg.generation_for(variant)
        params = gen.model_copy(update=suite.header.generation)
        if params.samples > 1 and params.temperature == 0:
            raise ConfigError(f"suite {suite.name}, variant {variant.name}", SAMPLES_AT_T0.format(k=params.samples),
                              "raise generation.temperature above 0 (sample k is then sent with seed + k), or set samples: 1")
        request_params: dict[str, Any] = params.model_dump(exclude={"samples"}, exclude_none=True)
        if not request_params.get("stop"):
            request_params.pop("stop", None)
        if self.seed_offset and request_params.get("seed") is not None:
            request_params["seed"] += self.seed_offset  # the second arm of an A/A gate: fresh draws, not a replay
        for attempt in range(3):  # another process may insert the same variant, suite or run key between our read and write
            try:
                with Session(self.engine) as session, session.begin():
                    repo.record_variant(session, fp, variant.name, variant.family, variant.quantization,
                                        {"serving": serving_identity(variant), "generation": gen.model_dump(mode="json"),
                                         "quantization": variant.quantization, "system_prompt": variant.system_prompt})
                    repo.record_suite(session, suite.version, suite.name, suite.header.model_dump(mode="json"),
                                      ((c.id, c.spec) for c in suite.cases), len(suite.cases))
                    run = repo.claim_run(session, suite.version, suite.name, fp, variant.name,
                                         len(suite.cases) * params.samples, slot,
                                         timedelta(hours=self.cfg.resume_within_h))
                    job = Job(suite, run.id, run.created_at, request_params, params.samples,
                              top_logprobs=self.cfg.divergence.top_logprobs)
                    claimed = run.status
                break
            except IntegrityError:
                if attempt == 2:
                    raise
        if claimed != "succeeded" and not self._lock(locks, job.run_id):
            job.finished = True
            waited = f" (waited {self.lock_wait_s:g} s for it)" if self.lock_wait_s else ""
            job.busy = (f"being executed by another evalsvc process right now{waited}; not started twice. Wait for it, "
                        "or re-run later to resume it if that process died")
            return job
        with Session(self.engine) as session, session.begin():
            locked = session.get(Run, job.run_id)  # read again under the lock: the other process may have just finished it
            assert locked is not None
            if locked.status == "succeeded":
                job.finished = True
                return job
            locked.status, locked.started_at, locked.attempts, locked.error = "running", utcnow(), locked.attempts + 1, None
        return job

    def _lock(self, locks: RunLocks, run_id: int) -> bool:
        """Take the run's lock, waiting up to ``lock_wait_s`` for a process that holds it (0: do not wait)."""
        deadline = time.monotonic() + self.lock_wait_s
        while not locks.acquire(run_id):
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        return True

    def unfinished(self, job: Job, variant: VariantConfig, fp: str) -> Iterator[Item]:
        """What the run still lacks, in suite order: made as the cases are read, a batch at a time, never all at once."""
        cases = iter(job.suite.cases if job.only is None else [c for c in job.suite.cases if c.id in job.only])
        while batch := list(islice(cases, ITEM_BATCH)):
            with Session(self.engine) as session:
                done = repo.finished_among(session, job.run_id, [c.id for c in batch])
            for case in batch:
                messages = job.suite.messages(case, variant.system_prompt)
                for s in range(job.samples):
                    if (case.id, s) not in done:
                        params = sample_params(job.params, s, case.id)
                        request = {"messages": messages, **params}
                        if job.top_logprobs:  # 0 keeps the key of a run that never asked for log-probabilities
                            request["top_logprobs"] = job.top_logprobs
                        sample = s if params.get("temperature", 0.0) > 0 else 0
                        key = content_hash({"fp": fp, "request": request, "sample": sample}, 64)
                        yield Item(case, s, messages, key, params)

    def answer_from_cache(self, variant: VariantConfig, fp: str, job: Job) -> None:
        """Store the answers the response cache has (when the variant uses it) and count what is left to send."""
        items = self.unfinished(job, variant, fp)
        while batch := list(islice(items, ITEM_BATCH)):
            hits = repo.cached_many(self.engine, [i.cache_key for i in batch]) if self.reads_cache(variant) else {}
            answered = [self.ok_row(job, i, hits[i.cache_key], cached=True) for i in batch if i.cache_key in hits]
            if answered:  # (samples of a temperature-0 request share one key)
                repo.save_results(self.engine, answered, [])
            job.from_cache += len(answered)
            job.to_send += len(batch) - len(answered)

    @staticmethod
    def ok_row(job: Job, item: Item, resp: dict[str, Any], cached: bool) -> CaseResult:
        status = "generated" if needs_judge(item.case) else "ok"
        return CaseResult(run_id=job.run_id, case_id=item.case.id, sample_index=item.sample, run_ts=job.run_ts,
                          status=status, output=resp["text"], error=None, latency_ms=resp["latency_ms"],
                          prompt_tokens=resp["prompt_tokens"], completion_tokens=resp["completion_tokens"],
                          finish_reason=resp["finish_reason"], logprobs=resp.get("logprobs"),
                          scores=score_output(list(item.case.checks), resp["text"], item.case),
                          cached=cached, created_at=utcnow())
