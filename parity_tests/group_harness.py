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
    values: list[float] | None = None,
) -> tuple[float, float]:
    """Like :func:`run_parity` for several parameter groups: ``(worst param error, worst lr error)``.

    ``make_torch`` comes first and ``make_optax(params, side)`` gets the PyTorch side before any
    step (``from_torch`` reads the live optimizer); ``side.next_lr()`` returns one rate per group,
    compared with :func:`optax_bertadam.get_last_lr` after every update, relative to the peak rate
    (``next_lr=None``: parameters only). With ``values`` (a loss-driven scheduler), update ``k``
    passes ``value=values[k]`` and PyTorch runs ``scheduler.step(values[k])``.
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
        def step(params, state, step_grads, value):
            extra = {} if values is None else {"value": value}
            updates, state = tx.update(step_grads, state, params, **extra)
            params = optax.apply_updates(params, updates)
            return params, state, ob.get_last_lr(state)

        state = tx.init(params)
        param_error, lr_errors, torch_lrs = 0.0, [], []
        for k, step_grads in enumerate(grads):
            for name, p in named.items():
                p.grad = torch.tensor(step_grads[name], dtype=torch_dtype)
            value = None if values is None else values[k]
            side.step(value)
            # numpy leaves: jit moves them to the device itself, much faster than jnp.asarray each.
            tree = nest({n: np.asarray(g, dtype=jax_dtype) for n, g in step_grads.items()})
            params, state, lrs = step(params, state, tree, 0.0 if value is None else value)
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


def run_hand_over(
    make_torch: Callable[[dict[str, torch.nn.Parameter]], tuple[Any, Any]],
    *,
    dtype: str,
    before: int,
    after: int,
    values: list[float] | None = None,
    shapes: dict[str, tuple[int, ...]] = PARAM_SHAPES,
) -> tuple[float, float]:
    """PyTorch runs ``before`` updates; JAX takes over and both run ``after`` more.

    The hand-over is what a script does: :func:`optax_bertadam.from_torch` on the live optimizer
    and scheduler, then :func:`optax_bertadam.load_torch_state_dict` of the optimizer's and the
    scheduler's ``state_dict()``. With ``values``, update ``k`` is stepped with ``values[k]``.

    At the end the JAX state goes back the other way, :func:`optax_bertadam.to_torch_state_dict`,
    and every moment is compared with the one PyTorch holds after the same updates. Parameters
    that ``make_torch`` leaves out of the optimizer are frozen on both sides.

    Returns:
      ``(worst param error, worst lr error, worst moment error)`` over the ``after`` updates, as
      :func:`run_group_parity` measures them (rates: ``scheduler.get_last_lr()``, or the third
      element ``make_torch`` returns, a function giving the rates; moments: each
      tensor's largest difference over its largest magnitude).
    """
    jax_dtype, torch_dtype = DTYPES[dtype]
    with jax.enable_x64(dtype == "float64"):
        init = initial_params(0, shapes)
        grads = gradient_stream(before + after, 1, shapes)
        named = {n: torch.nn.Parameter(torch.tensor(v, dtype=torch_dtype)) for n, v in init.items()}
        optimizer, scheduler, *next_lr = make_torch(named)
        side = TorchSide(optimizer, scheduler)
        next_lr = next_lr[0] if next_lr else scheduler.get_last_lr

        def torch_step(k):
            for n, p in named.items():
                p.grad = torch.tensor(grads[k][n], dtype=torch_dtype) if p.requires_grad else None
            side.step(None if values is None else values[k])

        for k in range(before):
            torch_step(k)
        params = nest({n: jnp.array(p.detach().numpy(), dtype=jax_dtype) for n, p in named.items()})
        tx = ob.from_torch(optimizer, scheduler, named_parameters=named.items(), params=params)
        names = ob.torch_parameter_names(named.items(), optimizer)
        state = ob.load_torch_state_dict(optimizer.state_dict(), tx, params, names,
                                         scheduler_state=scheduler.state_dict())

        @jax.jit
        def step(params, state, step_grads, value):
            extra = {} if values is None else {"value": value}
            updates, state = tx.update(step_grads, state, params, **extra)
            return optax.apply_updates(params, updates), state, ob.get_last_lr(state)

        param_error, lr_errors, torch_lrs = 0.0, [], []
        for k in range(before, before + after):
            torch_step(k)
            tree = nest({n: np.asarray(g, dtype=jax_dtype) for n, g in grads[k].items()})
            params, state, lrs = step(params, state, tree, 0.0 if values is None else values[k])
            flat = dict(zip(flatten_names(params), jax.tree.leaves(params), strict=True))
            for n, p in named.items():
                reference = p.detach().numpy()
                scale = max(float(np.max(np.abs(reference))), float(np.max(np.abs(init[n]))), 1e-30)
                param_error = max(param_error, float(np.max(np.abs(flat[n] - reference))) / scale)
            torch_lrs.append(np.asarray(next_lr(), np.float64))
            lr_errors.append(np.abs(np.asarray(jax.device_get(lrs), np.float64) - torch_lrs[-1]))
        peak = max(float(np.max(np.abs(np.stack(torch_lrs)))), 1e-30)
        exported = ob.to_torch_state_dict(state, optimizer, names)["state"]
    moment_error = 0.0
    for pid, reference in optimizer.state_dict()["state"].items():
        ours = exported[pid]
        assert set(ours) == set(reference) - {"RMS"}, (names[pid], sorted(ours), sorted(reference))
        for key, want in reference.items():
            if key == "RMS":  # Adafactor's derived value, recomputed before it is used
                continue
            want, got = np.asarray(want, np.float64), np.asarray(ours[key], np.float64)
            if key == "step":
                assert got == want, (names[pid], got, want)
                continue
            scale = max(float(np.max(np.abs(want))), 1e-30)
            moment_error = max(moment_error, float(np.max(np.abs(got - want))) / scale)
    return param_error, float(np.max(np.stack(lr_errors))) / peak, moment_error
