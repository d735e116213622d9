"""Checkpoints (optax_bertadam.checkpoint): resume bit-identically, refuse another optimizer,
refuse damage, survive a process killed mid-save."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_bertadam as ob
from optax_bertadam import mixed_precision
from optax_bertadam.checkpoint import DamagedCheckpointError, restore_train_state, save_train_state
from parity_tests import harness
from parity_tests.twins import ALGORITHMS

BEFORE, AFTER = 6, 6


def make_params(dtype=jnp.float32):
    return harness.nest({n: jnp.asarray(v, dtype) for n, v in harness.initial_params(0).items()})


def grads_at(step, dtype=jnp.float32):
    flat = harness.gradient_stream(BEFORE + AFTER, 1)[step]
    if step == BEFORE + 1:  # one non-finite step, for the skipping wrappers
        flat = dict(flat, **{"pooler.dense.weight": np.full((8, 8), np.inf)})
    return harness.nest({n: jnp.asarray(v, dtype) for n, v in flat.items()})


def bertadam(params):
    return ob.bertadam(0.02, warmup=0.1, t_total=10, mask=ob.decay_mask(params))


OPTIMIZERS = {
    "bertadam": bertadam,
    "bertadam_global_clip_f32_moments": lambda p: ob.bertadam(
        1e-3, t_total=10, warmup=0.2, schedule="warmup_cosine", clip_mode="global",
        moment_dtype=jnp.float32),
    "optax.adamw": lambda p: optax.adamw(optax.linear_schedule(1e-3, 0.0, 10), weight_decay=0.1),
    "loss_scaled_bertadam": lambda p: mixed_precision.dynamic_loss_scale(bertadam(p), growth_interval=3),
    "multi_steps_bertadam": lambda p: optax.MultiSteps(bertadam(p), every_k_schedule=2),
}
# Every optimizer of the registry, with its example hyperparameters.
OPTIMIZERS.update({f"optax_bertadam.{entry.name}": lambda p, entry=entry: entry.build()
                   for entry in ALGORITHMS})


def has_lr(state):
    try:
        ob.get_lr(state)
    except ValueError:
        return False
    return True


def bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resumed_run_is_bit_identical(name, tmp_path):
    dtype = jnp.bfloat16 if name == "bertadam_global_clip_f32_moments" else jnp.float32
    params = make_params(dtype)
    tx = OPTIMIZERS[name](params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def run(params, state, steps):
        for k in steps:
            params, state = step(params, state, grads_at(k, dtype))
        return params, state

    init = jax.jit(tx.init)
    straight = run(params, init(params), range(BEFORE + AFTER))

    params, state = run(params, init(params), range(BEFORE))
    save_train_state(tmp_path / "ckpt", params, state, BEFORE)
    template = jax.tree.map(jnp.zeros_like, make_params(dtype))
    r_params, r_state, r_step = restore_train_state(tmp_path / "ckpt", template, tx)
    assert r_step == BEFORE
    assert jax.tree.structure(r_state) == jax.tree.structure(state)
    assert bits((r_params, r_state)) == bits((params, state))
    if has_lr(state):
        assert ob.get_lr(r_state) == ob.get_lr(state)
    resumed = run(r_params, r_state, range(BEFORE, BEFORE + AFTER))
    assert bits(resumed) == bits(straight)
    assert np.isfinite(np.asarray(jax.tree.leaves(resumed[0])[0], np.float32)).all()


def saved_bertadam(tmp_path):
    params = make_params()
    tx = bertadam(params)
    state = tx.init(params)
    save_train_state(tmp_path / "ckpt", params, state, 3)
    return params, tmp_path / "ckpt"


@pytest.mark.parametrize(
    "other, expected",
    [
        (lambda p: optax.adamw(1e-3), ["ScaleByBiasFreeAdamState", "ScaleByAdamState"]),
        (lambda p: optax.chain(bertadam(p), optax.scale_by_schedule(lambda c: 1.0)),
         ["ScaleByScheduleState", "['opt_state'][0][1].next_m"]),
        (lambda p: ob.bertadam(0.02, moment_dtype=jnp.bfloat16), ["next_m", "bfloat16", "float32"]),
        (lambda p: mixed_precision.skip_nonfinite(bertadam(p)), ["SkipNonfiniteState"]),
    ],
    ids=["adamw", "longer_chain", "moment_dtype", "wrapped"],
)
def test_another_optimizer_is_refused_naming_what_differs(tmp_path, other, expected):
    params, path = saved_bertadam(tmp_path)
    with pytest.raises(ValueError, match="does not match") as err:
        restore_train_state(path, params, other(params))
    for text in expected:
        assert text in str(err.value), (text, str(err.value))


def test_other_parameters_are_refused(tmp_path):
    params, path = saved_bertadam(tmp_path)
    params["pooler"]["dense"]["weight"] = jnp.zeros((8, 4))
    expected = "['params']['pooler']['dense']['weight']: float32[8,8] in the checkpoint, float32[8,4]"
    with pytest.raises(ValueError, match=re.escape(expected)):
        restore_train_state(path, params, bertadam(params))


def test_paths_and_arguments(tmp_path):
    params, path = saved_bertadam(tmp_path)
    with pytest.raises(ValueError, match="already exists|exists"):
        save_train_state(path, params, bertadam(params).init(params), 4)
    save_train_state(path, params, bertadam(params).init(params), 4, overwrite=True)
    assert restore_train_state(path, params, bertadam(params))[2] == 4
    with pytest.raises(ValueError, match="no checkpoint directory"):
        restore_train_state(tmp_path / "missing", params, bertadam(params))
    with pytest.raises(TypeError, match="step=1.5 is invalid"):
        save_train_state(tmp_path / "other", params, bertadam(params).init(params), 1.5)


# ------------------------------------------------------------------------------------------
# Damage: every file of a checkpoint x {bytes flipped, truncated, deleted}
# ------------------------------------------------------------------------------------------

# What a file of a checkpoint is, from its path inside it. Arrays above orbax's 1 KiB inline
# limit get data files of their own (under ocdbt.process_0/d/); small ones live in b-tree nodes.
FILE_KINDS = [
    ("meta/metadata (step, structure, checksums)", r"meta/metadata"),
    ("arrays/_METADATA", r"arrays/_METADATA"),
    ("arrays/_sharding", r"arrays/_sharding"),
    ("arrays/array_metadatas/*", r"arrays/array_metadatas/.*"),
    ("arrays/manifest.ocdbt", r"arrays/manifest\.ocdbt"),
    ("arrays/d/* (root b-tree node)", r"arrays/d/.*"),
    ("arrays/ocdbt.process_0/manifest.ocdbt", r"arrays/ocdbt\.process_0/manifest\.ocdbt"),
    ("arrays/ocdbt.process_0/d/* (array data, > 1 KiB)", None),  # decided by size below
    ("arrays/ocdbt.process_0/d/* (b-tree node)", r"arrays/ocdbt\.process_0/d/.*"),
    ("_CHECKPOINT_METADATA", r"_CHECKPOINT_METADATA"),
    ("commit_success.txt (any)", r"(.*/)?commit_success\.txt"),
]


def file_kind(relative, size):
    if relative.startswith("arrays/ocdbt.process_0/d/") and size > 1024:
        return "arrays/ocdbt.process_0/d/* (array data, > 1 KiB)"
    for kind, pattern in FILE_KINDS:
        if pattern is not None and re.fullmatch(pattern, relative):
            return kind
    raise AssertionError(f"a file of an unknown kind in the checkpoint: {relative}")


def damage(path, how):
    data = open(path, "rb").read()
    if how == "deleted":
        os.remove(path)
    elif how == "truncated":
        open(path, "wb").write(data[: len(data) // 2])
    else:  # 32 bytes in the middle, each inverted (the repro)
        start = max(0, len(data) // 2 - 16)
        flipped = bytes(b ^ 0xFF for b in data[start:start + 32])
        open(path, "wb").write(data[:start] + flipped + data[start + 32:])


def damage_matrix_state():
    # Two arrays above the inline limit (data files of their own) and small ones; moments non-zero.
    params = {"dense": {"kernel": jnp.asarray(np.random.default_rng(0).normal(size=(32, 32)),
                                              jnp.float32),
                        "bias": jnp.linspace(-1.0, 1.0, 8)},
              "LayerNorm": {"scale": jnp.ones(8)}, "temperature": jnp.float32(0.5)}
    tx = ob.bertadam(0.02, warmup=0.1, t_total=10, mask=ob.decay_mask(params))
    state = tx.init(params)
    _, state = tx.update(jax.tree.map(lambda p: 0.1 * p + 0.01, params), state, params)
    return params, tx, state


def test_damage_matrix_every_file_and_kind_of_damage_is_refused_or_harmless(tmp_path):
    """No damage restores different numbers: each is refused with DamagedCheckpointError naming
    the part, or (for files restore does not read) restores the saved state bit for bit."""
    params, tx, state = damage_matrix_state()
    original = tmp_path / "original"
    save_train_state(original, params, state, 5)
    files = sorted(os.path.relpath(os.path.join(d, f), original)
                   for d, _, names in os.walk(original) for f in names)
    saved = bits((params, state))
    matrix, refusals = {}, {}
    for relative in files:
        kind = file_kind(relative, os.path.getsize(original / relative))
        for how in ("bytes flipped", "truncated", "deleted"):
            copy = tmp_path / "damaged"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(original, copy)
            damage(copy / relative, how)
            try:
                r_params, r_state, r_step = restore_train_state(copy, params, tx)
            except DamagedCheckpointError as err:
                outcome = "refused"
                assert re.match(r"the checkpoint at '.*damaged' is damaged: its (metadata|arrays)",
                                str(err)) or "differ from the checksums" in str(err), str(err)
                refusals[(relative, how)] = str(err)
            else:
                same = bits((r_params, r_state)) == saved and r_step == 5
                outcome = "harmless" if same else "restored wrong"
            matrix.setdefault(kind, {}).setdefault(how, set()).add(outcome)

    print("\ncheckpoint damage matrix (file kind: bytes flipped | truncated | deleted)")
    for kind, row in matrix.items():
        print(f"  {kind:50s} " + " | ".join("/".join(sorted(row[h])) for h in row))
    wrong = {kind: row for kind, row in matrix.items()
             if any("restored wrong" in outcomes for outcomes in row.values())}
    assert not wrong, wrong
    # Every kind of file is in the checkpoint (the matrix covers what it claims to cover).
    assert set(matrix) == {kind for kind, _ in FILE_KINDS}, set(matrix)
    # The files holding the values are never harmless to damage: the array data, the metadata.
    for kind in ("arrays/ocdbt.process_0/d/* (array data, > 1 KiB)",
                 "meta/metadata (step, structure, checksums)", "arrays/manifest.ocdbt"):
        assert all(outcomes == {"refused"} for outcomes in matrix[kind].values()), (kind, matrix[kind])
    # The case: flipped bytes in an array's data are caught by its checksum, naming it.
    data_kind = "arrays/ocdbt.process_0/d/* (array data, > 1 KiB)"
    flipped_data = [msg for (rel, how), msg in refusals.items() if how == "bytes flipped"
                    and file_kind(rel, os.path.getsize(original / rel)) == data_kind]
    assert flipped_data and all("differ from the checksums recorded at save" in m for m in flipped_data)
    # A data file packs several arrays: the flip in its middle lands in one of the large ones.
    named = {m.rpartition(": ")[2] for m in flipped_data}
    assert named <= {"['params']['dense']['kernel']", "['opt_state'][1].next_m['dense']['kernel']",
                     "['opt_state'][1].next_v['dense']['kernel']"}, named


def test_an_edit_that_keeps_the_metadata_valid_json_is_refused(tmp_path):
    params, tx, state = damage_matrix_state()
    save_train_state(tmp_path / "ckpt", params, state, 5)
    meta_file = tmp_path / "ckpt" / "meta" / "metadata"
    for edit in (lambda m: dict(m, step=6), lambda m: dict(m, description=m["description"][:-1]),
                 lambda m: {k: v for k, v in m.items() if k != "checksum"}):
        original = meta_file.read_text()
        meta_file.write_text(json.dumps(edit(json.loads(original))))
        with pytest.raises(DamagedCheckpointError, match=r"is damaged: its metadata \(meta/"):
            restore_train_state(tmp_path / "ckpt", params, tx)
        meta_file.write_text(original)
    assert restore_train_state(tmp_path / "ckpt", params, tx)[2] == 5


def test_an_orbax_checkpoint_not_written_here_is_refused_as_such(tmp_path):
    import orbax.checkpoint as ocp

    params, tx, _ = damage_matrix_state()
    ocp.Checkpointer(ocp.CompositeCheckpointHandler()).save(
        tmp_path / "other", ocp.args.Composite(meta=ocp.args.JsonSave({"format": "something else"})))
    with pytest.raises(ValueError, match="not a checkpoint written by save_train_state") as err:
        restore_train_state(tmp_path / "other", params, tx)
    assert not isinstance(err.value, DamagedCheckpointError)


# ------------------------------------------------------------------------------------------
# Atomic saves: a real process killed (SIGKILL) in the middle of writing a checkpoint
# ------------------------------------------------------------------------------------------

# The saver kills itself with SIGKILL at the moment orbax commits its temporary directory (the
# rename that makes a checkpoint of it): every array is written by then and nothing is committed,
# which is the worst place for a crash. Killing it from outside on a timer raced with the save.
KILLED_SAVER = r"""
import os, signal, sys
import numpy as np
import optax
import orbax.checkpoint as ocp
from optax_bertadam.checkpoint import save_train_state, train_state_args

def rename_or_die(rename):
    def wrapper(src, dst, *args, **kwargs):
        if "orbax-checkpoint-tmp" in os.fspath(src):
            print("killed while committing", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return rename(src, dst, *args, **kwargs)
    return wrapper

os.rename, os.replace = rename_or_die(os.rename), rename_or_die(os.replace)
mode, path = sys.argv[1:]
rng = np.random.default_rng(0)
params = {f"w{i}": rng.standard_normal((64, 64), np.float32) for i in range(4)}
tx = optax.sgd(0.1)
if mode == "path":
    save_train_state(path, params, tx.init(params), 2, overwrite=True)
else:
    manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(max_to_keep=3))
    manager.save(2, args=train_state_args(params, tx.init(params), 2))
    manager.wait_until_finished()
print("save finished", flush=True)
"""


def save_killed_midway(mode, path, watch):
    """Run KILLED_SAVER, which SIGKILLs itself when orbax commits its temporary directory.

    Returns the temporary entries the kill left under ``watch``.
    """
    child = subprocess.run([sys.executable, "-c", KILLED_SAVER, mode, str(path)],
                           capture_output=True, timeout=300)
    out = child.stdout.decode()
    assert child.returncode == -signal.SIGKILL, (child.returncode, out, child.stderr.decode()[-2000:])
    assert "killed while committing" in out and "save finished" not in out
    written = [f for f in glob.glob(f"{watch}/**/*orbax-checkpoint-tmp*/**/*", recursive=True)
               if os.path.isfile(f)]
    assert written, "the kill came before orbax had written anything"
    return sorted(os.path.relpath(p, watch) for p in glob.glob(f"{watch}/**/*tmp*", recursive=True)
                  + glob.glob(f"{watch}/*.saving"))


def test_a_save_killed_midway_leaves_the_previous_checkpoint_readable(tmp_path):
    params, tx, state = damage_matrix_state()
    path = tmp_path / "run" / "latest"
    save_train_state(path, params, state, 1)
    leftovers = save_killed_midway("path", path, tmp_path / "run")
    print(f"left by the killed save: {leftovers}")
    assert leftovers  # the kill did land in the middle of the save
    r_params, r_state, r_step = restore_train_state(path, params, tx)
    assert r_step == 1 and bits((r_params, r_state)) == bits((params, state))
    # The next save replaces it and clears what the killed one left.
    save_train_state(path, params, state, 3, overwrite=True)
    assert restore_train_state(path, params, tx)[2] == 3
    assert os.listdir(tmp_path / "run") == ["latest"]


def test_a_save_killed_between_its_two_renames_points_to_the_previous_checkpoint(tmp_path):
    # The state such a kill leaves (nothing at `path`, the previous checkpoint beside it), made
    # by the same rename the save does.
    params, tx, state = damage_matrix_state()
    path = tmp_path / "latest"
    save_train_state(path, params, state, 1)
    os.rename(path, f"{path}.replaced")
    with pytest.raises(ValueError, match=re.escape(f"the previous one is whole at '{path}.replaced'")):
        restore_train_state(path, params, tx)
    os.rename(f"{path}.replaced", path)
    assert restore_train_state(path, params, tx)[2] == 1
