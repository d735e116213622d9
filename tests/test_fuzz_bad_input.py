"""Fuzzing ``ob.bertadam`` with random (often invalid) hyperparameters, trees and dtypes.

Every draw either raises ``ValueError``/``TypeError`` naming an offending argument when the
optimizer is built, or builds, initializes and runs jitted updates that match
``torch_ref.BertAdam`` with the same hyperparameters (float64 within 1e-12, float32 within 2e-5
of each tensor's largest magnitude; non-finite values must appear at the same places).
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optax_bertadam as ob
import torch_ref

NAN = float("nan")
TOL = {"float32": 2e-5, "float64": 1e-12}
STEPS = 3
GLOBAL_STEP_SCHEDULES = ("warmup_linear_decay_exp", "warmup_exp_decay_exp")  # need schedule_kwargs

VALID = {
    "learning_rate": st.one_of(
        st.floats(0.0, 1.0), st.sampled_from([0.0, 1e-3, np.float64(0.01), np.float32(0.1), math.inf])
    ),
    "warmup": st.one_of(st.sampled_from([-1, -1.0, 0.0, 0.5]), st.floats(0.0, 0.99)),
    "t_total": st.one_of(st.just(-1), st.integers(1, 8), st.sampled_from([4.0, np.int64(3)])),
    "schedule": st.sampled_from(ob.schedules.bert.SCHEDULE_NAMES),
    "b1": st.one_of(st.sampled_from([0.0, 0.9]), st.floats(0.0, 0.999)),
    "b2": st.one_of(st.sampled_from([0.0, 0.999]), st.floats(0.0, 0.9999)),
    "e": st.one_of(st.sampled_from([0.0, 1e-6]), st.floats(0.0, 1e-2)),
    "weight_decay": st.one_of(st.just(0.0), st.floats(0.0, 0.5)),
    "max_grad_norm": st.one_of(st.sampled_from([-1, 0.0, 1.0, math.inf]), st.floats(-2.0, 5.0)),
    "clip_mode": st.sampled_from(["per_tensor", "global"]),
}
INVALID = {
    "learning_rate": [-0.1, -math.inf, NAN, "0.1", None, True, [0.1], np.array([0.1]), 1j],
    "warmup": [1.0, 1.5, -0.5, -2, NAN, math.inf, "0.1", None],
    "t_total": [0, -2, 2.5, "10", None, NAN],
    "schedule": ["linear", "", None, 3, "WARMUP_LINEAR"],
    "b1": [1.0, -0.1, 1.5, NAN, "0.9", None],
    "b2": [1.0, -1e-9, NAN, math.inf, "0.999", None],
    "e": [-1e-6, NAN, -math.inf, "1e-6", None],
    "weight_decay": [-0.01, NAN, "0.01", None, [0.01]],
    "max_grad_norm": [NAN, "1.0", None],
    "clip_mode": ["foo", None, "Global", 1],
}
SHAPES = [(), (1,), (3,), (2, 3), (4, 1, 2), (0,), (2, 0)]


@st.composite
def hyperparameters(draw, invalid: bool):
    """(kwargs, names of the invalid arguments); at least one invalid when ``invalid``."""
    names = list(VALID)
    bad = set()
    if invalid:
        bad = set(draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)))
    kwargs = {}
    for name in names:
        if name in bad:
            kwargs[name] = draw(st.sampled_from(INVALID[name]))
        elif draw(st.booleans()) or name == "learning_rate":
            kwargs[name] = draw(VALID[name])
    schedule = kwargs.get("schedule", "warmup_linear")
    if invalid and draw(st.booleans()):
        bad.add("schedule_kwargs")
        wrong = [{"decay_rate": 0.9, "decay_steps": 0}, {"decay_rate": -1.0, "decay_steps": 2},
                 {"decay_rate": NAN, "decay_steps": 2}, {"decay_steps": 3}, {"unknown": 1.0}]
        if schedule not in GLOBAL_STEP_SCHEDULES:
            wrong = [{"decay_rate": 0.9}, {"unknown": 1.0}]
        kwargs["schedule_kwargs"] = draw(st.sampled_from(wrong))
    elif schedule in GLOBAL_STEP_SCHEDULES and isinstance(schedule, str):
        kwargs["schedule_kwargs"] = {
            "decay_rate": draw(st.floats(0.1, 1.0)), "decay_steps": draw(st.integers(1, 10))
        }
    return kwargs, bad


@st.composite
def trees(draw, min_leaves=0):
    """A nested dict of parameters with random shapes (0-d and empty included) and a mask."""
    count = draw(st.integers(min_leaves, 4))
    tree, mask = {}, {}
    for i in range(count):
        shape = draw(st.sampled_from(SHAPES))
        group = tree.setdefault(f"layer{i % 2}", {})
        group[f"w{i}"] = shape
        mask.setdefault(f"layer{i % 2}", {})[f"w{i}"] = draw(st.booleans())
    return tree, mask


def names_an_offending_argument(message: str, bad: set[str]) -> bool:
    return any(re.search(rf"\b{re.escape(name)}(=|\[)", message) for name in bad)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(hyperparameters(invalid=True))
def test_invalid_hyperparameters_are_refused_naming_the_argument(drawn):
    kwargs, bad = drawn
    with pytest.raises((ValueError, TypeError)) as err:
        ob.bertadam(**kwargs)
    assert names_an_offending_argument(str(err.value), bad), (kwargs, bad, str(err.value))


def _relative_errors_ok(ours: np.ndarray, theirs: np.ndarray, tol: float, scale: float) -> bool:
    """Same NaNs and infinities; finite values within ``tol * scale``, where ``scale`` is the
    tensor's largest magnitude over the run (a value passing near 0 is not compared to itself)."""
    if ours.shape != theirs.shape:
        return False
    if not np.array_equal(np.isnan(ours), np.isnan(theirs)):
        return False
    finite = np.isfinite(theirs)
    if not np.array_equal(ours[~finite & ~np.isnan(theirs)], theirs[~finite & ~np.isnan(theirs)]):
        return False  # the same infinities
    if not finite.any():
        return True
    return float(np.max(np.abs(ours[finite] - theirs[finite]))) <= tol * scale


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(hyperparameters(invalid=False), trees(), st.sampled_from(["float32", "float64"]),
       st.integers(0, 2**31 - 1))
def test_valid_hyperparameters_build_init_update_and_match_torch(drawn, tree, dtype, seed):
    kwargs, _ = drawn
    shapes, mask = tree
    rng = np.random.default_rng(seed)
    init = jax.tree.map(lambda s: rng.normal(0.0, 0.5, s), shapes, is_leaf=lambda s: isinstance(s, tuple))
    grads = [jax.tree.map(lambda s: rng.normal(0.0, 10.0 ** rng.uniform(-3, 1), s), shapes,
                          is_leaf=lambda s: isinstance(s, tuple)) for _ in range(STEPS)]
    with jax.enable_x64(dtype == "float64"):
        jax_dtype = jnp.dtype(dtype)
        params = jax.tree.map(lambda v: jnp.asarray(v, jax_dtype), init)
        tx = ob.bertadam(mask=mask, **kwargs)
        state = tx.init(params)

        @jax.jit
        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        trajectory = []
        for g in grads:
            params, state = step(params, state, jax.tree.map(lambda v: jnp.asarray(v, jax_dtype), g))
            trajectory.append([np.asarray(x) for x in jax.tree.leaves(params)])
            assert all(x.dtype == jax_dtype for x in jax.tree.leaves(params))
        next_lr = float(ob.get_lr(state))

    if not jax.tree.leaves(init):
        assert trajectory == [[]] * STEPS  # an empty tree: nothing to do (torch refuses it)
        return

    torch_dtype = getattr(torch, dtype)
    leaves = [torch.nn.Parameter(torch.tensor(v, dtype=torch_dtype)) for v in jax.tree.leaves(init)]
    decayed = jax.tree.leaves(mask)
    groups = [{"params": [p for p, d in zip(leaves, decayed, strict=True) if d]},
              {"params": [p for p, d in zip(leaves, decayed, strict=True) if not d], "weight_decay": 0.0}]
    # NumPy scalars go to torch as Python numbers: with lr=np.float32(0.1), torch_ref would compute
    # lr * SCHEDULE(...) in float32 (NumPy scalar promotion), the port in double.
    torch_kwargs = {("lr" if k == "learning_rate" else k): (v.item() if isinstance(v, np.generic) else v)
                    for k, v in kwargs.items()}
    opt = torch_ref.BertAdam([g for g in groups if g["params"]], **torch_kwargs)
    torch_trajectory = []
    for g in grads:
        for p, value in zip(leaves, jax.tree.leaves(g), strict=True):
            p.grad = torch.tensor(value, dtype=torch_dtype)
        opt.step()
        torch_trajectory.append([p.detach().numpy().copy() for p in leaves])
    for i, start in enumerate(jax.tree.leaves(init)):
        values = [np.abs(start)] + [np.abs(step[i]) for step in torch_trajectory]
        finite = [v[np.isfinite(v)] for v in values]
        scale = max([1e-30] + [float(np.max(v)) for v in finite if v.size])
        for k in range(STEPS):
            ours, theirs = trajectory[k][i], torch_trajectory[k][i]
            assert _relative_errors_ok(ours, theirs, TOL[dtype], scale), (k, kwargs, ours, theirs)
    torch_lr = opt.get_lr()[0]
    assert (math.isnan(next_lr) and math.isnan(torch_lr)) or math.isclose(
        next_lr, torch_lr, rel_tol=1e-6 if dtype == "float32" else 1e-12, abs_tol=1e-12
    ), (next_lr, torch_lr)
