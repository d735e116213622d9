"""Every optimizer of the registry against its PyTorch twin: parity, state migration, checkpoints.

The list is :data:`optax_bertadam.algorithms.ALGORITHMS`; each entry names its twin
(``torch_class``), the argument translation and the torch state keys, so that a new optimizer is
checked here by its registry entry alone. The family files (``test_bertadam.py``, ...) cover
each optimizer's own option matrix; this file holds what every optimizer must pass.
"""

from __future__ import annotations

import copy
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import optax_bertadam as ob
from parity_tests import harness
from parity_tests.twins import ALGORITHMS, TRANSFORMS

ENTRIES = {entry.name: entry for entry in ALGORITHMS}
MASKED = [name for name, entry in ENTRIES.items() if entry.mask_argument]
MIGRATING = [name for name, entry in ENTRIES.items() if entry.torch_state_keys]
STEPS = 30
# State migration: TOL after AFTER more updates, float64 (both sides run the same arithmetic).
BEFORE, AFTER, MIGRATION_TOL = 6, 6, 1e-12


def torch_class(entry):
    module, _, name = entry.torch_class.rpartition(".")
    return getattr(importlib.import_module(module), name)


def make_torch_twin(entry, named, kwargs, *, masked=False):
    """The twin over ``named`` (torch name -> Parameter), with the no-decay group if ``masked``."""
    torch_kwargs = entry.torch_kwargs(kwargs)
    if entry.torch_named_parameters:
        return torch_class(entry)(list(named.items()), **torch_kwargs)
    if masked:
        no_decay = [p for n, p in named.items() if any(k in n for k in harness.TORCH_NO_DECAY)]
        decay = [p for n, p in named.items() if not any(k in n for k in harness.TORCH_NO_DECAY)]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch_class(entry)(groups, **torch_kwargs)
    return torch_class(entry)(list(named.values()), **torch_kwargs)


def make_optax(entry, kwargs, *, masked=False):
    def build(params):
        extra = {entry.mask_argument: ob.decay_mask(params)} if masked else {}
        return entry.factory(**kwargs, **extra)

    return build


# Every entry with every parameter at its decay; entries with a mask argument also with the
# no_decay group (the others decide decay by name, and their twin reads the same names).
CASES = [(name, False) for name in ENTRIES] + [(name, True) for name in MASKED]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "masked"), CASES,
                         ids=[f"{n}-{'no_decay_group' if m else 'all_decayed'}" for n, m in CASES])
def test_parity_with_the_torch_twin(name, masked, dtype):
    entry = ENTRIES[name]
    kwargs = dict(entry.example)
    result = harness.run_parity(
        make_optax(entry, kwargs, masked=masked),
        lambda named: harness.TorchSide(make_torch_twin(entry, named, kwargs, masked=masked)),
        dtype=dtype, steps=STEPS, shapes=harness.SMALL_SHAPES, compare_lr=False,
    )
    harness.check_result(result, dtype)


def _torch_run(entry, named, opt, grads):
    for step_grads in grads:
        for n, p in named.items():
            p.grad = torch.tensor(step_grads[n], dtype=torch.float64)
        opt.step()
    return {n: p.detach().numpy().copy() for n, p in named.items()}


@pytest.mark.parametrize("name", MIGRATING)
def test_torch_state_migrates_mid_run(name):
    """A PyTorch run handed to JAX after BEFORE updates continues as PyTorch continues it."""
    entry = ENTRIES[name]
    kwargs = dict(entry.example)
    shapes = harness.SMALL_SHAPES
    with jax.enable_x64(True):
        init = harness.initial_params(0, shapes)
        grads = harness.gradient_stream(BEFORE + AFTER, 1, shapes)
        named = {n: torch.nn.Parameter(torch.tensor(v)) for n, v in init.items()}
        opt = make_torch_twin(entry, named, kwargs)
        handed_over = _torch_run(entry, named, opt, grads[:BEFORE])
        torch_state = copy.deepcopy(opt.state_dict())  # step() updates its tensors in place
        torch_final = _torch_run(entry, named, opt, grads[BEFORE:])

        tx = entry.factory(**kwargs)
        params = harness.nest({n: jnp.asarray(v) for n, v in handed_over.items()})
        # torch.optim.SGD keeps no step: the caller says how many updates were applied.
        keeps_step = any("step" in s for s in torch_state["state"].values())
        state = ob.load_torch_state_dict(torch_state, tx, params, list(named),
                                         **({} if keeps_step else {"step": BEFORE}))
        counts = optax.tree_utils.tree_get_all_with_path(state, "count")
        assert counts and all(int(c) == BEFORE for _, c in counts), counts
        for step_grads in grads[BEFORE:]:
            g = harness.nest({n: jnp.asarray(v) for n, v in step_grads.items()})
            updates, state = tx.update(g, state, params)
            params = optax.apply_updates(params, updates)
        flat = dict(zip(harness.flatten_names(params), jax.tree.leaves(params), strict=True))
    worst = max(float(np.max(np.abs(np.asarray(flat[n]) - torch_final[n]))) for n in torch_final)
    harness.assert_within(f"{name} migration param error", worst, MIGRATION_TOL)


@pytest.mark.parametrize("name", [e.name for e in ALGORITHMS + TRANSFORMS])
def test_checkpoint_round_trip_continues_the_run(name, tmp_path):
    """save_train_state / restore_train_state of every registry entry: the restored run continues
    exactly (bitwise) as the uninterrupted one, and get_lr agrees."""
    entry = next(e for e in ALGORITHMS + TRANSFORMS if e.name == name)
    tx = entry.build()
    params = harness.nest({n: jnp.asarray(v, jnp.float32)
                           for n, v in harness.initial_params(0, harness.SMALL_SHAPES).items()})
    grads = [harness.nest({n: jnp.asarray(v, jnp.float32) for n, v in g.items()})
             for g in harness.gradient_stream(4, 1, harness.SMALL_SHAPES)]
    extra = (lambda k: {"value": jnp.asarray(1.0 / (k + 1))}) if entry.needs_value else (lambda k: {})

    def steps(params, state, start, stop):
        for k in range(start, stop):
            updates, state = tx.update(grads[k], state, params, **extra(k))
            params = optax.apply_updates(params, updates)
        return params, state

    params2, state2 = steps(params, tx.init(params), 0, 2)
    ob.save_train_state(tmp_path / "ckpt", params2, state2, step=2)
    restored_params, restored_state, step = ob.restore_train_state(
        tmp_path / "ckpt", params2, tx)
    assert step == 2
    want, _ = steps(params2, state2, 2, 4)
    got, _ = steps(restored_params, restored_state, 2, 4)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    try:
        want_lr = ob.get_lr(state2)
    except ValueError:
        return  # no learning-rate state of its own (a building block)
    assert float(ob.get_lr(restored_state)) == float(want_lr), name
