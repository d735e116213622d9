"""The wheel holds the library alone and works without torch.

Builds the wheel of this checkout, checks its file list (only ``optax_bertadam/`` and the
``.dist-info``: no ``torch_ref``, ``parity_tests`` or demo), installs it into a new virtual
environment with its runtime dependencies only (jax, optax, numpy), and runs a jitted BertAdam
step there; importing the package must not import torch, flax, matplotlib, torch_ref or
parity_tests. Then ``pip install <wheel>[torch]`` with CI's constraints into another clean venv
(the CPU build of torch, a range in the wheel's metadata) and a state hand-over to torch there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The venvs' pip and python must not see this checkout (a PYTHONPATH pointing at it, with the
# .egg-info a build leaves there, reads to pip as optax-bertadam already installed).
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "-w", str(dist), str(ROOT)],
        check=True, cwd=dist,
    )
    (built,) = dist.glob("optax_bertadam-*.whl")
    return built


def test_wheel_holds_the_library_alone_and_runs_without_torch(tmp_path, wheel):
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
                    "--no-compile", str(wheel)], check=True, env=CLEAN_ENV)
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], check=True,
                               capture_output=True, text=True, env=CLEAN_ENV).stdout.lower()
    assert "torch" not in installed and "flax" not in installed, installed
    result = subprocess.run([str(python), "-c", STEP], capture_output=True, text=True,
                            cwd=tmp_path, env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step ok" in result.stdout


TORCH_STEP = """
import sys
import torch, jax.numpy as jnp, optax_bertadam as ob
assert ob.__file__.startswith(sys.prefix), ob.__file__
model = torch.nn.Linear(3, 2)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
params = {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}
tx = ob.adamw(1e-3, weight_decay=0.01)
_, opt_state = tx.update(jax_grads := {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
                         tx.init(params), params)
optimizer.load_state_dict(ob.to_torch_state_dict(
    opt_state, optimizer, ["weight", "bias"], name_map={"kernel": "weight", "bias": "bias"},
    transform=ob.transpose_kernels))
print("torch ok", tuple(optimizer.state[model.weight]["exp_avg"].shape))
"""


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def test_the_torch_extra_is_a_range_and_ci_pins_the_cpu_build(tmp_path, wheel):
    requires = _requires(wheel)
    torch_requirements = [r for r in requires if r.startswith("torch")]
    specifiers = [r.split(";")[0] for r in torch_requirements]
    assert specifiers and all("==" not in r for r in specifiers), torch_requirements
    constraints = ROOT / "constraints-ci.txt"
    assert "torch==" in constraints.read_text()

    env_dir = tmp_path / "clean"
    venv.create(env_dir, with_pip=False)  # this interpreter's pip installs into it (--python)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    # A clean venv: the wheel with its extra and CI's constraints (the CPU build of torch) is all
    # it gets; nothing of this test environment is visible in it.
    result = subprocess.run([*pip, "install", "--no-compile", "-c", str(constraints), f"{wheel}[torch]"],
                            capture_output=True, text=True, cwd=tmp_path, env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    installed = result.stdout.rpartition("Successfully installed")[2]
    assert "optax-bertadam-" in installed and "torch-2.13.0+cpu" in installed, result.stdout[-2000:]
    result = subprocess.run([str(python), "-c", TORCH_STEP], capture_output=True, text=True,
                            cwd=tmp_path, env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch ok (2, 3)" in result.stdout
