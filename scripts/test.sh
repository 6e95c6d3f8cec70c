#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the default test suite: no slow, no gpu tests;
# the `vllm` tests (real vLLM, CPU build) included, and required (no silent skip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export EVOMERGE_REQUIRE_VLLM="${EVOMERGE_REQUIRE_VLLM:-1}"
exec .venv/bin/python -m pytest "$@"
