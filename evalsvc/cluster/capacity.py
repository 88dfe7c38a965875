"""When a variant's task could have started: the schedule timeout counts from there, not from the firing's submission.

A firing asking for more GPUs than the cluster has free queues in Ray; a variant waiting for GPUs that the same
firing's other variants (or any other work) hold is not failing. So the clock of a task not yet started runs only
while some live node has room for it now (free resources, read from Ray), or, when no live node could hold it even
empty (its node type is gone), from the firing's start. A task that runs out of that time is a capacity problem, never
an endpoint one. ``run_timeout_s`` bounds the whole wait, so a cluster busy with other work forever ends it too.
"""

from __future__ import annotations

from typing import Any

from evalsvc.cluster.resources import accelerator, demand
from evalsvc.cluster.validate import fits
from evalsvc.config import VariantConfig
from evalsvc.config.executor import RayExecutor

CAPACITY = "capacity"  # the first word of the reason a capacity timeout gives (the run is cancelled, not failed)


class Waiting:
    """Per variant not started yet: since when it could have been placed (None: waiting for room held by others)."""

    def __init__(self, executor: RayExecutor, submitted: float) -> None:
        self.executor, self.submitted = executor, submitted
        self.since: dict[str, float] = {}
        self.homeless: set[str] = set()  # variants no live node can hold at all, at the last look

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
                self.since.setdefault(v.name, self.submitted)
                self.homeless.add(v.name)
            else:
                self.since.pop(v.name, None)
                self.homeless.discard(v.name)

    def overdue(self, v: VariantConfig, now: float) -> str | None:
        ex = self.executor
        need = demand(v, ex)
        wants = f"it needs {need['CPU']:g} CPU, {need['GPU']:g} GPU" + (f", accelerator {accelerator(v)}" if accelerator(v) else "")
        since = self.since.get(v.name)
        if since is not None and now - since > ex.schedule_timeout_s:
            where = ("no live node of the Ray cluster can hold it (its node type is gone)" if v.name in self.homeless
                     else "a node had room for it and Ray did not start it")
            return (f"{CAPACITY}: variant {v.name}'s task was not started within schedule_timeout_s "
                    f"({ex.schedule_timeout_s:g} s; {wants}): {where}; cancelled. Fire the slot again to resume")
        if now - self.submitted > ex.run_timeout_s:
            return (f"{CAPACITY}: variant {v.name}'s task waited run_timeout_s ({ex.run_timeout_s:g} s; {wants}) for "
                    "room on the Ray cluster, taken by other work; cancelled. Fire the slot again to resume")
        return None


def look(ray: Any) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(each live node's resources, each live node's free resources), from Ray's GCS."""
    from ray._private import state  # Ray 2.60: the per-node view `ray status` prints; public APIs give only totals

    alive = [n for n in ray.nodes() if n.get("Alive")]
    free = state.available_resources_per_node()
    return [dict(n["Resources"]) for n in alive], [dict(free.get(n["NodeID"], {})) for n in alive]
