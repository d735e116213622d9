"""Long runs with orbax's CheckpointManager: keep the last k, resume from the latest verified step,
refuse a damaged latest step unless asked to fall back, survive a process killed mid-save."""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest

import optax_bertadam as ob
from optax_bertadam.checkpoint import (
    DamagedCheckpointError,
    restore_latest_train_state,
    train_state_args,
)
from tests.test_checkpoint import bits, damage, damage_matrix_state, save_killed_midway


def manager_at(directory, max_to_keep=3):
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep))


def run_and_save(manager, steps):
    """Train a few steps with BertAdam, saving every step; returns {step: (params, state)}."""
    params, tx, state = damage_matrix_state()
    step_fn = jax.jit(lambda p, s, g: tx.update(g, s, p))
    saved = {}
    for step in steps:
        grads = jax.tree.map(lambda p, step=step: jnp.sin(p * (step + 1)), params)
        updates, state = step_fn(params, state, grads)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        manager.save(step, args=train_state_args(params, state, step))
        saved[step] = (params, state)
    manager.wait_until_finished()
    return saved, tx


def damage_step(manager, step, relative="meta/metadata"):
    damage(os.path.join(manager.directory, str(step), relative), "bytes flipped")


def test_keeps_the_last_k_and_resumes_from_the_latest_bit_for_bit(tmp_path):
    manager = manager_at(tmp_path, max_to_keep=2)
    saved, tx = run_and_save(manager, range(1, 5))
    assert manager.all_steps() == [3, 4]
    params, state, step = restore_latest_train_state(manager, saved[4][0], tx)
    assert step == 4 and bits((params, state)) == bits(saved[4])
    assert ob.get_lr(state) == ob.get_lr(saved[4][1])


def test_a_damaged_latest_step_is_refused_unless_fallback_is_asked(tmp_path):
    manager = manager_at(tmp_path)
    saved, tx = run_and_save(manager, [10, 20, 30])
    damage_step(manager, 30)
    expected = ("the latest checkpoint is damaged: the checkpoint at step 30 of "
                f"'{tmp_path}' is damaged: its metadata (meta/) cannot be read")
    with pytest.raises(DamagedCheckpointError, match=re.escape(expected)) as err:
        restore_latest_train_state(manager, saved[30][0], tx)
    assert "pass fallback=True to resume from step 20 instead" in str(err.value)

    with pytest.warns(UserWarning, match=r"resumed from step 20: later checkpoints are damaged "
                                         r"\(the checkpoint at step 30 .*manager\.delete"):
        params, state, step = restore_latest_train_state(manager, saved[30][0], tx, fallback=True)
    assert step == 20 and bits((params, state)) == bits(saved[20])


def test_fallback_passes_every_damaged_step_and_refuses_when_none_is_left(tmp_path):
    manager = manager_at(tmp_path)
    saved, tx = run_and_save(manager, [1, 2, 3])
    # An array's data file this time: caught by the array checksums.
    data = max((os.path.getsize(p), p) for p in
               (os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "3" / "arrays") for f in fs))[1]
    damage(data, "bytes flipped")
    damage_step(manager, 2, "meta/metadata")
    with pytest.warns(UserWarning, match="resumed from step 1"):
        assert restore_latest_train_state(manager, saved[3][0], tx, fallback=True)[2] == 1
    damage_step(manager, 1, "meta/metadata")
    with pytest.raises(DamagedCheckpointError, match=f"every checkpoint in '{tmp_path}' is damaged"):
        restore_latest_train_state(manager, saved[3][0], tx, fallback=True)
    # Flipped bytes of a compressed chunk either decode to other values (the checksums catch
    # them) or do not decode at all (orbax cannot read them), depending on the bytes: refused
    # as damaged either way.
    with pytest.raises(DamagedCheckpointError, match=r"differ from the checksums recorded at save|"
                                                     r"its arrays \(arrays/\) cannot be read"):
        restore_latest_train_state(manager, saved[3][0], tx)


def test_another_optimizer_is_not_a_reason_to_fall_back(tmp_path):
    manager = manager_at(tmp_path)
    saved, _ = run_and_save(manager, [1, 2])
    other = ob.bertadam(0.02, moment_dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match="does not match the parameters and optimizer") as err:
        restore_latest_train_state(manager, saved[2][0], other, fallback=True)
    assert not isinstance(err.value, DamagedCheckpointError)


def test_arguments_and_an_empty_manager(tmp_path):
    params, tx, _ = damage_matrix_state()
    with pytest.raises(ValueError, match="holds no checkpoint to restore"):
        restore_latest_train_state(manager_at(tmp_path), params, tx)
    with pytest.raises(TypeError, match="fallback='yes' is invalid: expected True or False"):
        restore_latest_train_state(manager_at(tmp_path), params, tx, fallback="yes")
    with pytest.raises(TypeError, match="step=2.0 is invalid: expected an integer"):
        train_state_args(params, tx.init(params), 2.0)


def test_a_manager_save_killed_midway_is_not_a_step(tmp_path):
    manager = manager_at(tmp_path)
    saved, tx = run_and_save(manager, [1])
    leftovers = save_killed_midway("manager", tmp_path, tmp_path)
    assert leftovers, "the kill landed after the save"
    print(f"left by the killed manager.save: {leftovers}")
    manager = manager_at(tmp_path)  # a new process resuming the run
    assert manager.all_steps() == [1]
    params, state, step = restore_latest_train_state(manager, saved[1][0], tx)
    assert step == 1 and bits((params, state)) == bits(saved[1])
    # The run goes on and saves step 2 again over what the killed save left.
    params_2, state_2 = jax.tree.map(lambda x: x * 2, (params, state))
    manager.save(2, args=train_state_args(params_2, state_2, 2))
    manager.wait_until_finished()
    assert manager.all_steps() == [1, 2]
    assert bits(restore_latest_train_state(manager, saved[1][0], tx)[:2]) == bits((params_2, state_2))
