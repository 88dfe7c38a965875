#!/usr/bin/env bash
# Set up everything the tests need (local models, PostgreSQL, pg_partman, Ray), check the layers, then run every test:
# the Ray executor's in a loopback-only network namespace (a local Ray cluster that cannot reach, or be reached from,
# anything off this machine), the rest as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 OMP_NUM_THREADS=1
export EVALSVC_REQUIRE_POSTGRES=1 EVALSVC_REQUIRE_MODELS=1 EVALSVC_REQUIRE_VLLM=1 EVALSVC_REQUIRE_RAY=1
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
lint-imports --no-cache  # the layers and no import cycles (contracts in pyproject.toml; docs/architecture.md)
status=0
EVALSVC_RAY_PHASE=outside python3 -m pytest -q -p no:cacheprovider "$@" || status=$?
[[ $status == 5 ]] && status=0  # no test selected by the arguments
# the Ray tests (marker ray; EVALSVC_RAY_PHASE picks them, after any -m or -k given): in a new network namespace
# with only loopback (as root; else in a user namespace; else, said so, on this machine's network)
if unshare -n true 2>/dev/null; then isolate=(unshare -n); elif unshare -rn true 2>/dev/null; then isolate=(unshare -rn); else
  echo "test.sh: cannot make a network namespace here; the Ray tests run on this machine's network" >&2; isolate=(); fi
ray_status=0
EVALSVC_RAY_PHASE=inside "${isolate[@]}" bash -c 'if [[ -n "$1" ]]; then ip link set lo up; fi; shift
  exec python3 -m pytest -q -p no:cacheprovider "$@"' _ "${isolate[*]:-}" "$@" || ray_status=$?
[[ $ray_status == 5 ]] && ray_status=0
exit $(( status != 0 ? status : ray_status ))
