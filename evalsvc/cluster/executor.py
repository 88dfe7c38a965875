"""The driver of a firing on Ray: one task per variant and slot, placed by Ray, watched against two timeouts.

The tasks write their runs to the store themselves; what comes back is each run's outcome summary (its run id: the
comparisons pair exactly the runs the tasks made) and the variant fingerprint the task's node computed, which must be
the driver's (a node on another image, with another vLLM, refuses before it runs). A task not started within
``schedule_timeout_s`` of a node having room for it (capacity.py) is cancelled as a capacity problem (so is a rerun
after its node was lost, timed afresh from when it could be placed again); one still
running after ``run_timeout_s`` is cancelled and its unfinished runs fail with the reason (they stay resumable: the
next firing of the slot resumes them). A task whose worker or node dies is rerun by Ray (``task_retries``); a task
that raised (a node's suites or fingerprint differ) is not; any other Ray error ends that variant's runs, with its
cause, and the other variants go on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.cluster import capacity, task, validate
from evalsvc.cluster.resources import max_calls, task_options
from evalsvc.config import Config, VariantConfig
from evalsvc.config.executor import RayExecutor
from evalsvc.config.variants import serving_identity
from evalsvc.engine.runner import Outcome
from evalsvc.errors import ConfigError, EvalsvcError
from evalsvc.store.locks import RunLocks
from evalsvc.store.schema import Run, utcnow
from evalsvc.suites import Suite

log = logging.getLogger(__name__)
POLL_S = 0.5
LOOK_S = 2.0  # how often the free resources of the nodes are read while a task waits to start
JOIN_FIX = ("start it (`ray start --head` on its head node) or point executor.address at it "
            "(auto: the cluster of this machine; host:6379; ray://host:10001)")


class Board:
    """A Ray actor the tasks report their start to: (first start time, node, devices) per variant, every start kept."""

    def __init__(self) -> None:
        self.starts: dict[str, list[tuple[float, str, str]]] = {}

    def started(self, variant: str, node: str, devices: str) -> None:
        self.starts.setdefault(variant, []).append((time.time(), node, devices))

    def snapshot(self) -> dict[str, list[tuple[float, str, str]]]:
        return self.starts


def connect(executor: RayExecutor) -> Any:
    """Ray, connected to the executor's cluster (an existing connection of this process is kept)."""
    import ray

    if not ray.is_initialized():
        _reachable(executor.address)
        try:
            ray.init(address=executor.address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError("executor.address", f"cannot join the Ray cluster at {executor.address!r}: "
                              f"{str(exc).strip().splitlines()[-1][:300]}",
                              JOIN_FIX) from None
    return ray


def _reachable(address: str) -> None:
    """Refuse at once an address nothing listens on (ray.init would retry for minutes before it gave up)."""
    import socket

    hostport = address.removeprefix("ray://")
    if address in ("auto", "local") or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise ConfigError("executor.address", f"cannot join the Ray cluster at {address!r}: {exc}",
                          JOIN_FIX) from None


def run_on_ray(cfg: Config, engine: Engine, suites: list[Suite], variants: list[VariantConfig], slot: str,
               log_dir: Path) -> list[Outcome]:
    """Every suite on every variant under ``slot``, one Ray task per variant; their outcomes (variant order)."""
    executor = cfg.executor
    assert isinstance(executor, RayExecutor)
    ray = connect(executor)
    validate.check_engine_args(variants)
    nodes = validate.wait_for_fit(variants, executor, ray.nodes)
    validate.check_store(cfg.store_url(), nodes, ray.util.get_node_ip_address(), executor.address)
    versions = {s.name: s.version for s in suites}
    expected = {v.name: expected_fingerprint(cfg, v) for v in variants}
    board = _board(ray)
    remotes = {n: ray.remote(max_calls=n)(task.evaluate) for n in {max_calls(v, executor) for v in variants}}
    submitted = time.time()
    store = task.shown(cfg.store_url())
    pending = {remotes[max_calls(v, executor)].options(**task_options(v, executor)).remote(
        cfg, v.name, versions, slot, str(log_dir), executor.lock_wait_s, board, store, expected[v.name]): v for v in variants}
    done: dict[str, list[Outcome]] = {}
    starts: dict[str, list[tuple[float, str, str]]] = {}
    waiting, looked = capacity.Waiting(executor, submitted), 0.0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
        for ref in ready:
            v = pending.pop(ref)
            done[v.name] = _collect(ray, ref, v, engine, suites, slot, executor,
                                    (expected[v.name] or {}).get("fingerprint"))
        starts = _snapshot(ray, board, starts)
        if pending and time.time() - looked >= LOOK_S:  # the live nodes: a started task's node lost, Ray reruns it
            looked = time.time()
            alive, totals, free = capacity.look(ray)
            waiting.update(looked, waiting.unplaced(looked, list(pending.values()), starts, alive), totals, free)
        for ref, v in list(pending.items()):
            waits = waiting.waits(v.name, starts.get(v.name, []))
            why = ((waiting.overdue(v, time.time()) if waits else None)
                   or (_overrun(v, starts[v.name], executor) if v.name in starts else None))
            if why:
                ray.cancel(ref, force=not waits, recursive=True)
                pending.pop(ref)
                done[v.name] = fail_runs(engine, suites, v.name, slot, why,
                                         status="cancelled" if why.startswith(capacity.CAPACITY) else "failed")
    for v in variants:
        for when, node, devices in _snapshot(ray, board, starts).get(v.name, []):
            log.info("variant %s started on node %s (devices %s) at %.1f s", v.name, node[:12], devices or "-",
                     when - submitted)
    return [o for v in variants for o in done[v.name]]


def expected_fingerprint(cfg: Config, variant: VariantConfig) -> dict[str, Any] | None:
    """What every node must compute for ``variant``: {"fingerprint", "identity"}; None when the driver cannot compute
    it here (``local.python`` or the checkpoint only on the GPU nodes). Then the fingerprint its task computes on its
    node is taken (and logged), unchecked against this node's: the runs are still compared exactly as the task made them."""
    try:
        return {"fingerprint": cfg.fingerprint(variant.name), "identity": serving_identity(variant)}
    except ConfigError as exc:
        log.warning("variant %s: this node cannot compute its fingerprint (%s); its runs are stored and compared under "
                    "the fingerprint its task computes on the node it runs on, not checked against this node's. To have "
                    "every node checked, give this node what the variant needs (its checkpoint, local.python's "
                    "interpreter with the engine)", variant.name, exc)
        return None


def _board(ray: Any) -> Any:
    """The start board, on the driver's own node (a worker node may be lost; the driver's goes with the driver), restarted
    by Ray should it die anyway."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(Board).options(scheduling_strategy=here).remote()


def _snapshot(ray: Any, board: Any, last: dict[str, list[tuple[float, str, str]]]) -> dict[str, list[tuple[float, str, str]]]:
    """The board's starts; while it is being restarted, the last ones read (a start missed then only delays a timeout)."""
    from ray import exceptions as rx

    try:
        fresh = ray.get(board.snapshot.remote(), timeout=30)
    except (rx.RayActorError, rx.ActorUnavailableError, rx.GetTimeoutError) as exc:
        log.warning("the start board is unavailable (%s); using what it said last", type(exc).__name__)
        return last
    return {v: sorted(set(last.get(v, [])) | set(fresh.get(v, []))) for v in set(last) | set(fresh)}


def _overrun(variant: VariantConfig, starts: list[tuple[float, str, str]], executor: RayExecutor) -> str | None:
    if time.time() - starts[0][0] > executor.run_timeout_s:
        return (f"variant {variant.name}'s task ran longer than run_timeout_s ({executor.run_timeout_s:g} s); cancelled. "
                "Fire the slot again to resume it (only the missing cases are sent)")
    return None


def _collect(ray: Any, ref: Any, variant: VariantConfig, engine: Engine, suites: list[Suite], slot: str,
             executor: RayExecutor, fingerprint: str | None) -> list[Outcome]:
    from ray import exceptions as rx

    try:
        made = ray.get(ref)
        if fingerprint is None:  # the driver could not compute it: the task's node decided (expected_fingerprint)
            log.warning("variant %s: its runs were made under fingerprint %s, computed on node %s", variant.name,
                        made["fingerprint"][:12], made["node"])
        if fingerprint is None or made["fingerprint"] == fingerprint:
            return [Outcome(**o) for o in made["outcomes"]]
        why = (f"variant {variant.name}'s runs were made under fingerprint {made['fingerprint'][:12]} on node "
               f"{made['node']}, not the driver's {fingerprint[:12]}")
    except rx.RayTaskError as exc:  # the task raised: not retried (a node's suites differ, the store is gone...)
        cause = exc.cause if isinstance(getattr(exc, "cause", None), EvalsvcError) else None
        why = str(cause) if cause else f"variant {variant.name}'s task raised: {str(exc).strip().splitlines()[-1]}"
    except (rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError, rx.OwnerDiedError) as exc:
        why = (f"variant {variant.name}'s worker died {executor.task_retries + 1} times ({type(exc).__name__}); "
               "fire the slot again to resume")
    except rx.TaskCancelledError:
        why = f"variant {variant.name}'s task was cancelled; fire the slot again to resume"
    except rx.RayError as exc:  # out of memory or disk, the raylet lost, a runtime env that failed...: this variant only
        last = next((line for line in reversed(str(exc).strip().splitlines()) if line.strip()), "")
        why = f"variant {variant.name}'s task ended with Ray's {type(exc).__name__}: {last[-400:]}; fire the slot again to resume"
    return fail_runs(engine, suites, variant.name, slot, why)


def fail_runs(engine: Engine, suites: list[Suite], variant: str, slot: str, why: str, wait_s: float = 30.0,
              status: str = "failed") -> list[Outcome]:
    """End the variant's unfinished runs of ``slot`` as ``status`` with ``why`` (resumable), once no process executes them.

    A cancelled task's worker may take a moment to die and release its run locks: each is waited for up to ``wait_s``.
    A suite whose run was never claimed (no node took the task) gets an outcome without a run (run id 0)."""
    by_suite = {}
    with Session(engine) as s:
        for run in s.scalars(select(Run).where(Run.variant_name == variant, Run.slot == slot,
                                               Run.suite_version.in_([x.version for x in suites]))):
            by_suite[run.suite_name] = run.id
    out = []
    with RunLocks(engine) as locks:
        for suite in suites:
            run_id = by_suite.get(suite.name)
            if run_id is None:
                out.append(Outcome(0, suite.name, variant, status, len(suite.cases), error=why))
                continue
            deadline = time.monotonic() + wait_s
            while not locks.acquire(run_id) and time.monotonic() < deadline:
                time.sleep(0.2)
            with Session(engine) as s, s.begin():
                run = s.get(Run, run_id)
                assert run is not None
                if run.status != "succeeded":
                    run.status, run.error, run.finished_at = status, why, utcnow()
                out.append(Outcome(run.id, suite.name, variant, run.status, run.n_cases, run.n_ok, run.n_errored,
                                   error=run.error))
    return out
