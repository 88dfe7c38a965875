"""Serve a GGUF checkpoint with llama-cpp-python's OpenAI-compatible server.

One server process per variant, on a free loopback port, stopped when the run ends.
The server's own log goes to ``<log_dir>/<variant>.llamacpp.log`` and its tail is
quoted when start-up fails.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evalsvc.config.variants import VariantConfig
from evalsvc.errors import ServingError
from evalsvc.serving.base import Served, backend
from evalsvc.serving.environment import server_env
from evalsvc.serving.process import free_port, launched


class LlamaCppBackend:
    @contextmanager
    def serve(self, variant: VariantConfig, log_dir: Path) -> Iterator[Served]:
        loc = variant.local
        assert loc is not None
        if not Path(loc.model_path).is_file():
            raise ServingError(f"variant '{variant.name}': checkpoint {loc.model_path} does not exist; "
                               "run `evalsvc models build` to build the demo variants, or fix local.model_path")
        log_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        model = {"model": str(loc.model_path), "model_alias": variant.name, "n_ctx": loc.n_ctx,
                 "n_threads": loc.n_threads, "n_threads_batch": loc.n_threads, "verbose": False, **loc.extra_args}
        if loc.chat_format:
            model["chat_format"] = loc.chat_format
        cfg_path = log_dir / f"{variant.name}.llamacpp.json"
        cfg_path.write_text(json.dumps({"host": "127.0.0.1", "port": port, "models": [model]}))
        env = server_env(OMP_NUM_THREADS=str(loc.n_threads))  # without evalsvc's secrets
        cmd = [loc.python or sys.executable, "-m", loc.entrypoint or "llama_cpp.server", "--config_file", str(cfg_path)]
        with launched(cmd, env, log_dir / f"{variant.name}.llamacpp.log", port, variant.name, loc.start_timeout_s) as served:
            yield served


backend("llama.cpp")(LlamaCppBackend)
