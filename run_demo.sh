#!/usr/bin/env bash
# Sets up .venv (CPU build of torch) and runs the main job (bert_demo/, from the repository root):
# transformers' BertForMaskedLM with torch_ref.BertAdam against its Flax NNX port with
# optax_bertadam.bertadam, compared step by step by optax_bertadam.compare.compare_training.
# Extra arguments go to the demo, e.g. `bash run_demo.sh --steps 100 --out out/`.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
. .venv/bin/activate
pip install --quiet --disable-pip-version-check --no-compile -c constraints-ci.txt -e ".[torch,demo]"
python -m bert_demo demo "$@"
