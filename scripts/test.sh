#!/usr/bin/env bash
# Set up everything the tests need (local models, PostgreSQL, pg_partman), check the layers, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 OMP_NUM_THREADS=1
export EVALSVC_REQUIRE_POSTGRES=1 EVALSVC_REQUIRE_MODELS=1 EVALSVC_REQUIRE_VLLM=1
lint-imports --no-cache  # the layers and no import cycles (contracts in pyproject.toml; docs/architecture.md)
python3 -m pytest -q -p no:cacheprovider "$@"
