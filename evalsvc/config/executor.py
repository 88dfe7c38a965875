"""`executor:` in evalsvc.yaml: where a firing's runs execute.

``{type: local}`` (the default) serves the variants one after another in this process.
``{type: ray, ...}`` runs one Ray task per variant and slot on a Ray cluster, each with the resources its
variant asks for (docs/cluster.md); the workers write to the store themselves.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from evalsvc.config.base import Strict


class LocalExecutor(Strict):
    """Run every variant here, one after another (managed servers never overlap)."""

    type: Literal["local"] = "local"


class RayExecutor(Strict):
    """Run each variant as a Ray task on a cluster; a firing from `evalsvc serve` is a Ray Job."""

    type: Literal["ray"]
    address: str = Field("auto", description="ray.init address of the cluster the tasks run on ('auto': the cluster "
                         "this machine belongs to; 'ray://head:10001' through Ray Client)")
    jobs_url: str = Field("http://127.0.0.1:8265", description="Ray's dashboard address, where `evalsvc serve` submits "
                          "each firing as a Ray Job (Jobs REST API); RAY_AUTH_TOKEN, when set, is sent as a bearer token")
    task_retries: int = Field(2, ge=0, le=20, description="Ray reruns a variant's task this many times when its worker or "
                              "node dies, and `evalsvc serve` submits a firing's job again this many times when it is "
                              "lost, stopped or fails before its driver closed the firing; each rerun resumes the run "
                              "keys, sending only the cases not yet stored")
    jobs_retry_s: float = Field(300.0, ge=0, description="how long a Jobs API call is tried again (with backoff) while the "
                                "Ray head does not answer or answers 5xx (its pod restarting)")
    lock_wait_s: float = Field(300.0, ge=0, description="a task whose run key another process is executing waits this "
                               "long for it, then stands back (the run is reported busy, not started twice)")
    schedule_timeout_s: float = Field(1800.0, gt=0, description="a variant's task not started this long after a node had "
                                      "room for it (or, when no live node can hold it at all, after the firing began) is "
                                      "cancelled and its runs are reported as a capacity problem; waiting while the "
                                      "cluster's room is taken by other tasks does not count")
    run_timeout_s: float = Field(86400.0, gt=0, description="a variant's task still running after this long is "
                                 "cancelled and its unfinished runs fail (resumable: the next firing of the slot resumes)")
    fit_wait_s: float = Field(120.0, ge=0, description="a variant no live node of the cluster can take is waited for this "
                              "long (a GPU pod being replaced) before the firing is refused as a configuration error")
    endpoint_cpus: float = Field(0.25, gt=0, description="CPU share of a task that only sends requests to an endpoint")


Executor = Annotated[LocalExecutor | RayExecutor, Field(discriminator="type")]


class Placement(Strict):
    """Where a variant's task may run on a Ray cluster (speed and fit only: not part of the fingerprint)."""

    accelerator_type: str | None = Field(None, description="Ray accelerator type, e.g. H100, A100, L4 "
                                         "(ray.util.accelerators); the task runs only on nodes that have it")
