#!/usr/bin/env bash
# Mutation testing (cosmic-ray) of merge/methods, search/_driver.py, judge/_cache.py,
# judge/_parse.py and the run layer: do their tests fail when the code breaks?
# Not part of CI: one test run per mutant, hours of CPU for the large modules. Runs niced,
# one module at a time, in a temporary copy of the working tree.
#
#   bash scripts/mutation.sh                         # every module (see scripts/mutation.py)
#   bash scripts/mutation.sh judge_parse judge_cache # some of them
#   bash scripts/mutation.sh --sample 150 merge_methods   # a seeded random sample of mutants
#
# Needs .venv (scripts/setup.sh); creates .venv-mutation with cosmic-ray. Prints one JSON
# line per module (kill rate, survivors); benchmarks/RESULTS.md (QUALITY) records them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
PY="${PYTHON:-python3}"
[ -x .venv-mutation/bin/python ] || "$PY" -m venv .venv-mutation
.venv-mutation/bin/python -m pip install --quiet "cosmic-ray==8.7.0"
exec nice -n 10 .venv-mutation/bin/python scripts/mutation.py "$@"
