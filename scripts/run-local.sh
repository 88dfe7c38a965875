#!/usr/bin/env bash
# The main job on the embedded default: set up, then every bundled suite on every local
# SmolLM2 variant into SQLite (evalsvc.db), then a per-variant summary table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[[ -f evalsvc.yaml ]] || evalsvc init --demo
status=0
evalsvc run "$@" || status=$?
echo
echo "Per-variant summary (share of cases passed, 95% Wilson interval, n):"
evalsvc results
echo
echo "Browse the verdicts, trends and cases: evalsvc dashboard  (http://127.0.0.1:8501/)"
exit $status
