"""Checks made before a firing is handed to Ray: Ray itself would leave an unsatisfiable task pending forever.

- the store: every worker writes to it, so it is PostgreSQL (SQLite only on a one-node cluster, this machine);
- each variant's request (resources.demand, and its accelerator type) fits at least one live node of the cluster
  (read again for up to ``fit_wait_s`` while one does not: a node being replaced comes back).
The suites are checked again inside each task (task.py): a node with other suite files refuses to run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from evalsvc.cluster.resources import accelerator, demand
from evalsvc.config import VariantConfig
from evalsvc.config.executor import RayExecutor
from evalsvc.errors import ConfigError


def node_types(nodes: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The distinct resource sets of the cluster's alive nodes (``ray.nodes()`` rows)."""
    seen: list[dict[str, float]] = []
    for node in nodes:
        if node.get("Alive") and node.get("Resources") not in seen:
            seen.append(dict(node["Resources"]))
    return seen


def fits(need: dict[str, float], accel: str | None, node: dict[str, float]) -> bool:
    if any(node.get(kind, 0.0) + 1e-9 < amount for kind, amount in need.items()):
        return False
    return accel is None or f"accelerator_type:{accel}" in node


def _shown(resources: dict[str, float]) -> str:
    kinds = [f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU")]
    kinds += [k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")]
    return ", ".join(kinds)


def check_store(url: str, nodes: list[dict[str, Any]], here: str, address: str = "auto") -> None:
    """SQLite only when every node of the cluster is this machine (``here``: the driver's node address)."""
    alive = [n for n in nodes if n.get("Alive")]
    elsewhere = {n.get("NodeManagerAddress") for n in alive} - {here}
    if url.startswith("sqlite") and (elsewhere or address.startswith("ray://")):
        raise ConfigError("store", f"executor type ray with a SQLite store, on a cluster with nodes on other machines "
                          f"({', '.join(sorted(map(str, elsewhere))) or address}): the workers there cannot write to this file",
                          "use PostgreSQL (store: postgresql+psycopg://host/evalsvc, or EVALSVC_STORE) for a Ray cluster; "
                          "SQLite serves a one-machine cluster only")


def check_engine_args(variants: list[VariantConfig]) -> None:
    """A vLLM variant of a Ray task serves from the GPUs Ray gave the task, with vLLM's own processes: a Ray backend
    inside it would ask the cluster for GPUs Ray already counted as the task's (a hang until start_timeout_s)."""
    for v in variants:
        args = v.local.extra_args if v.local else {}
        backend = args.get("distributed_executor_backend") or args.get("distributed-executor-backend")
        if backend not in (None, "mp"):
            raise ConfigError(f"variants.{v.name}.local.extra_args", f"distributed_executor_backend {backend!r} with "
                              "executor type ray: the task already holds its GPUs on one node",
                              "leave distributed_executor_backend out (or 'mp'); the task asks Ray for tensor_parallel_size "
                              "x data_parallel_size x pipeline_parallel_size GPUs on one node")


def check_fit(variants: list[VariantConfig], executor: RayExecutor, nodes: list[dict[str, Any]]) -> None:
    """ConfigError naming every variant no node of the cluster can take, with what it needs and what there is."""
    types = node_types(nodes)
    misfits = []
    for v in variants:
        need, accel = demand(v, executor), accelerator(v)
        if not any(fits(need, accel, t) for t in types):
            wants = _shown(need) + (f", accelerator {accel}" if accel else "")
            misfits.append(f"variant '{v.name}' needs {wants} on one node")
    if misfits:
        have = "; ".join(_shown(t) for t in types) or "no alive nodes"
        raise ConfigError("executor", "no node of the Ray cluster can run: " + "; ".join(misfits) + f" (node types: {have}). "
                          "Ray would leave such a task pending forever",
                          "add a worker group with enough GPUs (or the accelerator type), lower tensor_parallel_size / "
                          "data_parallel_size / n_threads, or leave the variant out of the schedule")


def wait_for_fit(variants: list[VariantConfig], executor: RayExecutor, read_nodes: Callable[[], list[dict[str, Any]]],
                 sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """``check_fit`` against the live nodes, read again every 5 s for up to ``fit_wait_s`` while a variant fits none (a
    GPU pod being replaced, a worker group scaling up from its last node); the nodes it fitted, or its ConfigError."""
    waited = 0.0
    while True:
        nodes = read_nodes()
        try:
            check_fit(variants, executor, nodes)
            return nodes
        except ConfigError:
            if waited >= executor.fit_wait_s:
                raise
        sleep(5.0)
        waited += 5.0
