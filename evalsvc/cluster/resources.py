"""What a variant's task asks Ray for: GPUs for vLLM, CPUs for llama.cpp, a small CPU share for an endpoint.

Ray hands a task asking for ``num_gpus`` that many device ids (CUDA_VISIBLE_DEVICES), which the model server it
starts inherits; an accelerator type in ``placement`` restricts it to nodes that have that kind.
"""

from __future__ import annotations

from typing import Any

from evalsvc.config import VariantConfig
from evalsvc.config.executor import RayExecutor


def demand(variant: VariantConfig, executor: RayExecutor) -> dict[str, float]:
    """The resources one task of ``variant`` holds while it runs: {"CPU": n, "GPU": n}."""
    loc = variant.local
    if loc is None:
        return {"CPU": executor.endpoint_cpus, "GPU": 0.0}
    if loc.engine == "llama.cpp":
        return {"CPU": float(loc.n_threads), "GPU": 0.0}
    return {"CPU": 1.0, "GPU": float(loc.tensor_parallel_size * loc.data_parallel_size * pipeline_stages(variant))}


def pipeline_stages(variant: VariantConfig) -> int:
    """vLLM's pipeline_parallel_size when extra_args sets it (each stage holds tensor_parallel_size GPUs), else 1."""
    args = variant.local.extra_args if variant.local else {}
    return int(args.get("pipeline_parallel_size") or args.get("pipeline-parallel-size") or 1)


def accelerator(variant: VariantConfig) -> str | None:
    return variant.placement.accelerator_type if variant.placement else None


def task_options(variant: VariantConfig, executor: RayExecutor) -> dict[str, Any]:
    """Options for ``remote_function.options(...)``: resources, retries on a lost worker or node, a readable name."""
    need = demand(variant, executor)
    options: dict[str, Any] = {"num_cpus": need["CPU"], "num_gpus": need["GPU"], "max_retries": executor.task_retries,
                               "retry_exceptions": False, "name": f"evalsvc:{variant.name}"}
    if accelerator(variant):
        options["accelerator_type"] = accelerator(variant)
    return options


def max_calls(variant: VariantConfig, executor: RayExecutor) -> int:
    """Tasks a Ray worker runs before it is replaced (``ray.remote(max_calls=...)``; Ray refuses it in ``.options``).

    A GPU task gets a fresh worker (Ray's default), so no CUDA context a scorer opened stays on GPUs Ray then counts as
    free; a CPU-only task may reuse one (0: no limit)."""
    return 1 if demand(variant, executor)["GPU"] else 0
