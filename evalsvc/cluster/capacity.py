"""When a variant's task could have started: the schedule timeout counts from there, not from the firing's submission.

A firing asking for more GPUs than the cluster has free queues in Ray; a variant waiting for GPUs that the same
firing's other variants (or any other work) hold is not failing. So the clock of a task not yet started runs only
while some live node has room for it now (free resources, read from Ray), or, when no live node could hold it even
empty (its node type is gone), from the firing's start. A task Ray reruns because the node it started on was lost
waits again, and its clock starts again: from when a live node has room for the rerun, or from when the loss was seen
when none could hold it. A task that runs out of that time is a capacity problem, never an endpoint one.
``run_timeout_s`` bounds each wait too, so a cluster busy with other work forever ends it.
"""

from __future__ import annotations

import logging
from typing import Any

from evalsvc.cluster.resources import accelerator, demand
from evalsvc.cluster.validate import fits
from evalsvc.config import VariantConfig
from evalsvc.config.executor import RayExecutor

log = logging.getLogger(__name__)
CAPACITY = "capacity"  # the first word of the reason a capacity timeout gives (the run is cancelled, not failed)


Start = tuple[float, str, str]  # (when, Ray node id, devices): a task's start, as the driver's start board records it


class Waiting:
    """Per variant waiting to be placed: since when it could have been (None: waiting for room held by others)."""

    def __init__(self, executor: RayExecutor, submitted: float) -> None:
        self.executor, self.submitted = executor, submitted
        self.since: dict[str, float] = {}
        self.homeless: set[str] = set()  # variants no live node can hold at all, at the last look
        self.queued: dict[str, float] = {}  # when a rerun's wait began (its node was seen lost); else the firing's start
        self.lost: dict[str, Start] = {}  # the last start whose node was seen lost (a later start: the rerun runs)
        self.gone: set[Start] = set()  # every start whose node was seen lost

    def waits(self, name: str, starts: list[Start]) -> bool:
        """Whether the variant's task waits to be placed: never started, or its node lost and its rerun not started."""
        return not starts or self.lost.get(name) == starts[-1]

    def unplaced(self, now: float, pending: list[VariantConfig], starts: dict[str, list[Start]],
                 alive: set[str]) -> list[VariantConfig]:
        """The pending variants waiting to be placed, ``alive`` being the live nodes' ids; a task whose node is gone
        (Ray reruns it) starts a new wait here, its clock reset."""
        out = []
        for v in pending:
            mine = starts.get(v.name, [])
            for start in mine:
                if start[1] in alive or start in self.gone:
                    continue
                self.gone.add(start)
                log.warning("variant %s: the node its task started on (%s) is lost; Ray reruns the task", v.name,
                            start[1][:12])
                if start == mine[-1]:  # the rerun has not started yet: it waits to be placed, its clock reset
                    self.lost[v.name], self.queued[v.name] = start, now
                    self.since.pop(v.name, None)
                    self.homeless.discard(v.name)
            if self.waits(v.name, mine):
                out.append(v)
        return out

    def update(self, now: float, waiting: list[VariantConfig], totals: list[dict[str, float]],
               free: list[dict[str, float]]) -> None:
        """``totals``: each live node's resources; ``free``: what each live node has free now."""
        for v in waiting:
            need, accel = demand(v, self.executor), accelerator(v)
            if any(fits(need, accel, f) for f in free):
                if v.name in self.homeless:  # its node type is back: count from now
                    self.since.pop(v.name, None)
                    self.homeless.discard(v.name)
                self.since.setdefault(v.name, now)
            elif not any(fits(need, accel, t) for t in totals):
                self.since.setdefault(v.name, self.queued.get(v.name, self.submitted))
                self.homeless.add(v.name)
            else:
                self.since.pop(v.name, None)
                self.homeless.discard(v.name)

    def overdue(self, v: VariantConfig, now: float) -> str | None:
        ex = self.executor
        need = demand(v, ex)
        wants = f"it needs {need['CPU']:g} CPU, {need['GPU']:g} GPU" + (f", accelerator {accelerator(v)}" if accelerator(v) else "")
        since = self.since.get(v.name)
        what = f"variant {v.name}'s task" + (" (rerun: the node it started on was lost)" if v.name in self.lost else "")
        if since is not None and now - since > ex.schedule_timeout_s:
            where = ("no live node of the Ray cluster can hold it (its node type is gone)" if v.name in self.homeless
                     else "a node had room for it and Ray did not start it")
            return (f"{CAPACITY}: {what} was not started within schedule_timeout_s "
                    f"({ex.schedule_timeout_s:g} s; {wants}): {where}; cancelled. Fire the slot again to resume")
        if now - self.queued.get(v.name, self.submitted) > ex.run_timeout_s:
            return (f"{CAPACITY}: {what} waited run_timeout_s ({ex.run_timeout_s:g} s; {wants}) for "
                    "room on the Ray cluster, taken by other work; cancelled. Fire the slot again to resume")
        return None


def look(ray: Any) -> tuple[set[str], list[dict[str, float]], list[dict[str, float]]]:
    """(the live nodes' ids, each live node's resources, each live node's free resources), from Ray's GCS."""
    from ray._private import state  # Ray 2.60: the per-node view `ray status` prints; public APIs give only totals

    alive = [n for n in ray.nodes() if n.get("Alive")]
    free = state.available_resources_per_node()
    return ({n["NodeID"] for n in alive}, [dict(n["Resources"]) for n in alive],
            [dict(free.get(n["NodeID"], {})) for n in alive])
