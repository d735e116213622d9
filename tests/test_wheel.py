"""The wheel holds the library alone and works without torch.

Builds the wheel of this checkout, checks its file list (only ``optax_bertadam/`` and the
``.dist-info``: no ``torch_ref``, ``parity_tests`` or demo), installs it into a new virtual
environment with its runtime dependencies only (jax, optax, numpy), and runs a jitted BertAdam
step there; importing the package must not import torch, flax, matplotlib, torch_ref or
parity_tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEP = """
import sys
import jax, jax.numpy as jnp, optax
import optax_bertadam as ob
assert ob.__file__.startswith(sys.prefix), ob.__file__  # the installed wheel, not the checkout
tx = ob.bertadam(1e-3, warmup=0.1, t_total=100, mask=ob.decay_mask)
params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
state = tx.init(params)
updates, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
params = optax.apply_updates(params, updates)
forbidden = sorted({"torch", "flax", "matplotlib", "torch_ref", "parity_tests", "bert_demo"}
                   & set(sys.modules))
assert not forbidden, forbidden
print("step ok", float(ob.get_lr(state)))
"""


def test_wheel_holds_the_library_alone_and_runs_without_torch(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "-w", str(dist), str(ROOT)],
        check=True, cwd=tmp_path,
    )
    (wheel,) = dist.glob("optax_bertadam-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    dist_info = {t for t in top_level if t.endswith(".dist-info")}
    assert top_level - dist_info == {"optax_bertadam"}, sorted(top_level)
    print(f"{wheel.name}: {len(names)} files")

    env_dir = tmp_path / "clean"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Runtime dependencies come from the wheel's metadata: jax, optax, numpy, and nothing else.
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-compile", str(wheel)], check=True)
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], check=True,
                               capture_output=True, text=True).stdout.lower()
    assert "torch" not in installed and "flax" not in installed, installed
    result = subprocess.run([str(python), "-c", STEP], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step ok" in result.stdout
