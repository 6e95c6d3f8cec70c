#!/usr/bin/env bash
# Creates the peers' own virtual environments for benchmarks/peer_search.py, under ignored
# folders at the repository root (peer code is installed, never committed):
#
#   .venv-peer-mergekit/     mergekit[evolve]==0.1.5 (mergekit-evolve), lm-eval 0.4.13
#   .venv-peer-mergenetic/   mergenetic==0.1.1 with its pins (mergekit 0.0.6, transformers
#                            4.45.2, lm-eval 0.4.8), minus the GPU-only ones (see below)
#
# torch is installed first, pinned to the CPU build evomerge uses, so pip pulls no CUDA build.
# Mergenetic's own requirement set cannot be installed on a CPU-only machine: it asks for
# lm-eval[vllm]==0.4.8 (vLLM and a CUDA torch) and bitsandbytes. The exact pip outcome of the
# plain install is kept in .venv-peer-mergenetic/plain_install.log and reported by the
# benchmark; the venv then gets mergenetic without dependencies plus every pin of its that
# runs here. Re-running is cheap: a finished venv is left alone.
# MERGENETIC_DRY_RUN_TIMEOUT (seconds, default 900) caps that dry run; 0 skips it (an
# existing plain_install.log is then kept). pip backtracks through vLLM releases for as long
# as it is allowed, so a shorter cap records the same failure, just fewer releases tried.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
TORCH="torch==${TORCH_VERSION:-2.13.0}"

make_venv() {  # make_venv DIR
  [ -x "$1/bin/python" ] || "$PY" -m venv "$1"
  "$1/bin/python" -m pip install --quiet --upgrade pip
  "$1/bin/python" -m pip install --quiet "$TORCH"
}

MK=.venv-peer-mergekit
if [ ! -f "$MK/.done" ]; then
  make_venv "$MK"
  "$MK/bin/python" -m pip install --quiet "mergekit[evolve]==0.1.5" "lm-eval==0.4.13" "$TORCH" \
    && touch "$MK/.done"
fi

MG=.venv-peer-mergenetic
if [ ! -f "$MG/.done" ]; then
  make_venv "$MG"
  # The plain install, recorded (dry run: resolve only).
  DRY="${MERGENETIC_DRY_RUN_TIMEOUT:-900}"
  if [ "$DRY" != 0 ]; then
    timeout "$DRY" "$MG/bin/python" -m pip install --dry-run "mergenetic==0.1.1" "$TORCH" \
      >"$MG/plain_install.log" 2>&1
    echo "exit $? (timeout ${DRY} s)" >>"$MG/plain_install.log"
  fi
  "$MG/bin/python" -m pip install --quiet --no-deps "mergenetic==0.1.1" \
    && "$MG/bin/python" -m pip install --quiet "$TORCH" \
      "mergekit==0.0.6" "transformers==4.45.2" "lm-eval==0.4.8" "accelerate==1.3.0" \
      "pymoo==0.6.1.3" "pandas==2.2.2" "pyyaml==6.0.1" "psutil==7.0.0" "einops==0.7.0" \
      "xxhash==3.4.1" "wrapt==1.16.0" "git-python" "scikit-learn" "plotly" "fasttext-numpy2" \
      "matplotlib" "scipy" "requests" \
    && touch "$MG/.done"
fi
for v in "$MK" "$MG"; do
  if [ -f "$v/.done" ]; then echo "ready: $v"; else echo "FAILED: $v (see pip output above)"; fi
done
