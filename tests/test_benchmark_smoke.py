"""Smoke test of benchmarks/update_speed.py: its quick mode runs and prints its tables.

Only the output's shape is checked, never a timing: CI machines are shared and noisy.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "update_speed.py")
CANDIDATES = (
    "ob.bertadam per-tensor",
    "ob.bertadam global",
    "ob.bertadam no clipping",
    "optax.adamw",
    "optax clip_by_global_norm+adamw",
    "jax probe",
    "torch_ref BertAdam",
    "torch AdamW foreach",
    "torch AdamW fused",
)  # plus "torch AdamW fused 1 thread" where torch has more than one thread


def test_quick_mode_prints_the_tables():
    result = subprocess.run(
        [sys.executable, SCRIPT, "--quick"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for variant in ("float32 params, float32 moments", "bfloat16 params and grads"):
        assert f"BERT-tiny (4.4M params, 39 tensors), {variant}" in out, out
    for name in CANDIDATES:
        rows = [line for line in out.splitlines() if line[:34].rstrip() == name]
        assert len(rows) == 2, (name, out)  # one row per variant
        median_ms = rows[0][34:].split()[0]
        assert float(median_ms) > 0, rows[0]
    assert out.count("targets (ratios of medians, this run):") == 2, out
    assert "temp buffers (MiB)" in out
