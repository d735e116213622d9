"""Parity over several parameter groups: identical gradients into optax and PyTorch, per-group rates.

The helper of ``test_param_groups.py`` and ``test_from_torch.py``, on the shared harness's
parameters, gradients and bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import optax_bertadam as ob
from parity_tests.harness import (
    DTYPES,
    PARAM_SHAPES,
    TorchSide,
    flatten_names,
    gradient_stream,
    initial_params,
    nest,
)


def run_group_parity(
    make_torch: Callable[[dict[str, torch.nn.Parameter]], TorchSide],
    make_optax: Callable[[Any, TorchSide], optax.GradientTransformation],
    *,
    dtype: str = "float32",
    steps: int = 25,
    seed: int = 0,
    shapes: dict[str, tuple[int, ...]] = PARAM_SHAPES,
) -> tuple[float, float]:
    """Like :func:`run_parity` for several parameter groups: ``(worst param error, worst lr error)``.

    ``make_torch`` comes first and ``make_optax(params, side)`` gets the PyTorch side before any
    step (``from_torch`` reads the live optimizer); ``side.next_lr()`` returns one rate per group,
    compared with :func:`optax_bertadam.get_last_lr` after every update, relative to the peak rate
    (``next_lr=None``: parameters only).
    """
    jax_dtype, torch_dtype = DTYPES[dtype]
    with jax.enable_x64(dtype == "float64"):
        init = initial_params(seed, shapes)
        grads = gradient_stream(steps, seed + 1, shapes)
        named = {n: torch.nn.Parameter(torch.tensor(v, dtype=torch_dtype)) for n, v in init.items()}
        side = make_torch(named)
        params = nest({n: jnp.asarray(v, dtype=jax_dtype) for n, v in init.items()})
        tx = make_optax(params, side)

        @jax.jit
        def step(params, state, step_grads):
            updates, state = tx.update(step_grads, state, params)
            params = optax.apply_updates(params, updates)
            return params, state, ob.get_last_lr(state)

        state = tx.init(params)
        param_error, lr_errors, torch_lrs = 0.0, [], []
        for step_grads in grads:
            for name, p in named.items():
                p.grad = torch.tensor(step_grads[name], dtype=torch_dtype)
            side.step()
            tree = nest({n: jnp.asarray(g, dtype=jax_dtype) for n, g in step_grads.items()})
            params, state, lrs = step(params, state, tree)
            flat = dict(zip(flatten_names(params), jax.tree.leaves(params), strict=True))
            for name, p in named.items():
                reference = p.detach().numpy()
                scale = max(float(np.max(np.abs(init[name]))), float(np.max(np.abs(reference))), 1e-30)
                diff = float(np.max(np.abs(np.asarray(flat[name]) - reference)))
                param_error = max(param_error, diff / scale)
            if side.next_lr is None:  # rates not comparable (Adafactor's relative step)
                continue
            want = np.asarray(side.next_lr(), dtype=np.float64)
            got = np.asarray(jax.device_get(lrs), dtype=np.float64)
            assert got.shape == want.shape, (got, want)
            torch_lrs.append(want)
            lr_errors.append(np.abs(got - want))
        if not torch_lrs:
            return param_error, 0.0
        peak = max(float(np.max(np.abs(np.stack(torch_lrs)))), 1e-30)
        return param_error, float(np.max(np.stack(lr_errors))) / peak
