"""Checkpoints (optax_bertadam.checkpoint): resume bit-identically, refuse another optimizer."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_bertadam as ob
from optax_bertadam import mixed_precision
from optax_bertadam.checkpoint import restore_train_state, save_train_state
from parity_tests import harness

BEFORE, AFTER = 6, 6


def make_params(dtype=jnp.float32):
    return harness.nest({n: jnp.asarray(v, dtype) for n, v in harness.initial_params(0).items()})


def grads_at(step, dtype=jnp.float32):
    flat = harness.gradient_stream(BEFORE + AFTER, 1)[step]
    if step == BEFORE + 1:  # one non-finite step, for the skipping wrappers
        flat = dict(flat, **{"pooler.dense.weight": np.full((8, 8), np.inf)})
    return harness.nest({n: jnp.asarray(v, dtype) for n, v in flat.items()})


def bertadam(params):
    return ob.bertadam(0.02, warmup=0.1, t_total=10, weight_decay_mask=ob.decay_mask(params))


OPTIMIZERS = {
    "bertadam": bertadam,
    "bertadam_global_clip_f32_moments": lambda p: ob.bertadam(
        1e-3, t_total=10, warmup=0.2, schedule="warmup_cosine", clip_mode="global",
        moment_dtype=jnp.float32),
    "optax.adamw": lambda p: optax.adamw(optax.linear_schedule(1e-3, 0.0, 10), weight_decay=0.1),
    "loss_scaled_bertadam": lambda p: mixed_precision.dynamic_loss_scale(bertadam(p), growth_interval=3),
    "multi_steps_bertadam": lambda p: optax.MultiSteps(bertadam(p), every_k_schedule=2),
}
for _name, _factory in [
    ("adamw", lambda p: ob.optimizers.adamw(1e-3, weight_decay=0.01, mask=ob.decay_mask(p))),
    ("adafactor", lambda p: ob.optimizers.adafactor()),
    ("adam_weight_decay", lambda p: ob.optimizers.adam_weight_decay(1e-3, weight_decay_rate=0.01)),
]:
    if hasattr(ob.optimizers, _name):
        OPTIMIZERS[f"optax_bertadam.{_name}"] = _factory


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
