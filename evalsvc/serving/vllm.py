"""Serve a checkpoint with vLLM's OpenAI-compatible server (FP8, INT8 W8A8, INT4 W4A16... on GPUs).

One server per variant, started on a free loopback port with the variant's GPUs
(``gpu_ids`` -> CUDA_VISIBLE_DEVICES), tensor-parallel size, dtype and quantization method,
health-checked, and stopped when its runs end; the runner serves variants one after another,
so variants that share GPUs never overlap. Every argument is part of the variant fingerprint.
``python`` may name another interpreter (a venv that has vLLM), ``entrypoint`` another module.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evalsvc.config.variants import LocalSpec, VariantConfig
from evalsvc.errors import ServingError
from evalsvc.serving.base import Served, backend
from evalsvc.serving.environment import server_env
from evalsvc.serving.process import free_port, launched

DEFAULT_ENTRYPOINT = "vllm.entrypoints.openai.api_server"  # the `vllm` console script is missing in some builds


def command(loc: LocalSpec, name: str, port: int) -> list[str]:
    cmd = [loc.python or sys.executable, "-m", loc.entrypoint or DEFAULT_ENTRYPOINT, "--model", str(loc.model_path),
           "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
           "--tensor-parallel-size", str(loc.tensor_parallel_size)]
    if loc.data_parallel_size > 1:
        cmd += ["--data-parallel-size", str(loc.data_parallel_size)]
    if loc.dtype:
        cmd += ["--dtype", loc.dtype]
    if loc.quantization_method:
        cmd += ["--quantization", loc.quantization_method]
    for key, value in sorted(loc.extra_args.items()):
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value not in (False, None):
            cmd += [flag, str(value)]
    return cmd


class VllmBackend:
    @contextmanager
    def serve(self, variant: VariantConfig, log_dir: Path) -> Iterator[Served]:
        loc = variant.local
        assert loc is not None
        if not Path(loc.model_path).exists():
            raise ServingError(f"variant '{variant.name}': checkpoint {loc.model_path} does not exist (vLLM serves a "
                               "local Hugging Face folder here; nothing is downloaded)")
        port = free_port()
        env = server_env()  # without evalsvc's secrets (serving/environment.py)
        if loc.gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in loc.gpu_ids)
        gpus = "gpus-" + ",".join(str(g) for g in sorted(loc.gpu_ids)) if loc.gpu_ids is not None else (
            "gpus-" + env["CUDA_VISIBLE_DEVICES"] if env.get("CUDA_VISIBLE_DEVICES") else "devices-default")
        with launched(command(loc, variant.name, port), env, log_dir / f"{variant.name}.vllm.log", port, variant.name,
                      loc.start_timeout_s, grace_s=30.0, device_key=gpus) as served:
            yield served


backend("vllm")(VllmBackend)
