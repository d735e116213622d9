#!/usr/bin/env bash
# Sets up .venv (CPU build of torch) and runs the main job (bert_demo/, from the repository root):
# the same small BERT trained with optax_bertadam.bertadam in Flax and torch_ref.BertAdam in PyTorch.
# Extra arguments go to the demo, e.g. `bash run_demo.sh --steps 100 --out out/`.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
. .venv/bin/activate
pip install --quiet --disable-pip-version-check -e ".[torch,demo]"
python -m bert_demo demo "$@"
