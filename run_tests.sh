#!/usr/bin/env bash
# Sets up .venv with the CPU build of torch and everything the tests need, then runs ruff and the
# whole test suite (parity_tests/ and tests/) on both cores.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
. .venv/bin/activate
# constraints-ci.txt pins the CPU build of torch (the extras give a range): an unpinned torch
# would pull several GB of CUDA wheels.
# --no-compile: no bytecode for every module of torch, jax and transformers at install time;
# Python compiles the modules the tests import when they are first imported.
pip install --quiet --disable-pip-version-check --no-compile -c constraints-ci.txt -e ".[test]"
# timm for the model zoo tests, without its own dependencies (they would pull torchvision).
pip install --quiet --disable-pip-version-check --no-compile --no-deps timm==1.0.31
ruff check .
# Hypothesis draws the same examples on every run here (profile "ci"): a red run is reproducible.
# A developer explores further with `bash run_tests.sh --hypothesis-profile thorough` (new random
# examples on every run, many more of them; see conftest.py).
profile=ci
if [[ "${1:-}" == "--hypothesis-profile" ]]; then
  profile="${2:?--hypothesis-profile needs a profile name: ci or thorough}"
  shift 2
fi
# One worker per core; torch keeps to one thread per worker (conftest.py).
HYPOTHESIS_PROFILE="$profile" python -m pytest -n 2 "$@"
