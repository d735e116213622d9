"""Every torch.optim.lr_scheduler class: optax_bertadam.schedules.pytorch against the real PyTorch.

PyTorch's side is the real scheduler over a ``torch.optim.SGD`` (momentum 0.9) or ``Adam`` with
one parameter, driven the usual way: read ``get_last_lr()[0]`` (and ``param_groups[0]['momentum']``
or ``['betas'][0]``), ``optimizer.step()``, ``scheduler.step()``; so entry ``k`` is what update
``k`` ran at. The optax side is the schedule at counts ``0 .. n-1`` through ``jax.jit(jax.vmap)``
and through a jitted scalar call, in float32 (x64 off) and float64 (``jax.enable_x64(True)``).
Every case runs through several periods or cycles and past the end of the schedule.

Error measure: ``max_k |optax_k - torch_k| / max_k |torch_k|`` (relative to the peak value).
Tolerances: 1e-6 in float32, 1e-12 in float64. ``pytest -s`` prints the worst error per case.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from torch.optim import lr_scheduler as S

from optax_bertadam.schedules import pytorch as pt
from optax_bertadam.schedules import transformers as ts
from parity_tests import harness

DTYPES = ["float32", "float64"]
LR = 0.1


def torch_values(build_scheduler, num_updates, optimizer="sgd", lr=LR):
    """Rates (and momenta) of updates ``0 .. num_updates-1`` under a real PyTorch scheduler."""
    parameter = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    if optimizer == "sgd":
        opt = torch.optim.SGD([parameter], lr=lr, momentum=0.9)
    else:
        opt = torch.optim.Adam([parameter], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = build_scheduler(opt)
        rates, momenta = [], []
        for update in range(num_updates):
            group = opt.param_groups[0]
            rates.append(float(scheduler.get_last_lr()[0]))
            assert rates[-1] == group["lr"]
            momenta.append(float(group["momentum"] if optimizer == "sgd" else group["betas"][0]))
            if update < num_updates - 1:  # OneCycleLR raises when stepped past total_steps
                opt.step()
                scheduler.step()
    return np.asarray(rates), np.asarray(momenta)


def _exp_lambda(k):
    return 0.97


def _piecewise_torch(k):
    return 0.9 if k < 10 else (1.02 if k < 40 else 0.99)


def _piecewise_jnp(k):
    return jnp.where(k < 10, 0.9, jnp.where(k < 40, 1.02, 0.99))


# (id, PyTorch scheduler of an optimizer, optax schedule, number of updates)
RATE_CASES = [
    ("StepLR", lambda o: S.StepLR(o, 7, 0.5), lambda: pt.step_lr(LR, 7, 0.5), 60),
    ("StepLR-default", lambda o: S.StepLR(o, 3), lambda: pt.step_lr(LR, 3), 20),
    ("StepLR-slow", lambda o: S.StepLR(o, 1, 0.999), lambda: pt.step_lr(LR, 1, 0.999), 3000),
    ("StepLR-zero", lambda o: S.StepLR(o, 4, 0.0), lambda: pt.step_lr(LR, 4, 0.0), 12),
    (
        "MultiStepLR",
        lambda o: S.MultiStepLR(o, [30, 5, 12, 12], 0.3),
        lambda: pt.multi_step_lr(LR, [30, 5, 12, 12], 0.3),
        50,
    ),
    ("MultiStepLR-0", lambda o: S.MultiStepLR(o, [0, 3]), lambda: pt.multi_step_lr(LR, [0, 3]), 8),
    ("ConstantLR", lambda o: S.ConstantLR(o, 0.25, 10), lambda: pt.constant_lr(LR, 0.25, 10), 30),
    ("ConstantLR-default", lambda o: S.ConstantLR(o), lambda: pt.constant_lr(LR), 12),
    ("LinearLR", lambda o: S.LinearLR(o, 0.1, 1.0, 20), lambda: pt.linear_lr(LR, 0.1, 1.0, 20), 40),
    ("LinearLR-to-0", lambda o: S.LinearLR(o, 1.0, 0.0, 15), lambda: pt.linear_lr(LR, 1.0, 0.0, 15), 30),
    ("LinearLR-default", lambda o: S.LinearLR(o), lambda: pt.linear_lr(LR), 10),
    ("ExponentialLR", lambda o: S.ExponentialLR(o, 0.97), lambda: pt.exponential_lr(LR, 0.97), 400),
    ("ExponentialLR-growth", lambda o: S.ExponentialLR(o, 1.01), lambda: pt.exponential_lr(LR, 1.01), 200),
    # An LR range test: x 1e8 over 1000 updates (a float32 exp(n log gamma) was 1.2e-6 off).
    ("ExponentialLR-range-test", lambda o: S.ExponentialLR(o, 1.0186),
     lambda: pt.exponential_lr(LR, 1.0186), 1001),
    ("StepLR-growth", lambda o: S.StepLR(o, 1, 1.01), lambda: pt.step_lr(LR, 1, 1.01), 2000),
    ("PolynomialLR", lambda o: S.PolynomialLR(o, 40, 2.0), lambda: pt.polynomial_lr(LR, 40, 2.0), 60),
    ("PolynomialLR-sqrt", lambda o: S.PolynomialLR(o, 25, 0.5), lambda: pt.polynomial_lr(LR, 25, 0.5), 40),
    ("PolynomialLR-power0", lambda o: S.PolynomialLR(o, 10, 0.0), lambda: pt.polynomial_lr(LR, 10, 0.0), 20),
    ("PolynomialLR-default", lambda o: S.PolynomialLR(o), lambda: pt.polynomial_lr(LR), 10),
    ("CosineAnnealingLR", lambda o: S.CosineAnnealingLR(o, 10), lambda: pt.cosine_annealing_lr(LR, 10), 100),
    (
        "CosineAnnealingLR-eta_min",
        lambda o: S.CosineAnnealingLR(o, 37, 0.1 * LR),
        lambda: pt.cosine_annealing_lr(LR, 37, 0.1 * LR),
        400,
    ),
    # A long half period with a floor: PyTorch's recursion drifts ~1e-11 from the formula.
    (
        "CosineAnnealingLR-1000",
        lambda o: S.CosineAnnealingLR(o, 1000, 0.1 * LR),
        lambda: pt.cosine_annealing_lr(LR, 1000, 0.1 * LR),
        6100,
    ),
    # Many periods: the argument pi*k/T rounds differently in each.
    (
        "CosineAnnealingLR-many-periods",
        lambda o: S.CosineAnnealingLR(o, 7, 0.3 * LR),
        lambda: pt.cosine_annealing_lr(LR, 7, 0.3 * LR),
        7000,
    ),
    (
        "CosineAnnealingWarmRestarts",
        lambda o: S.CosineAnnealingWarmRestarts(o, 10),
        lambda: pt.cosine_annealing_warm_restarts(LR, 10),
        55,
    ),
    (
        "CosineAnnealingWarmRestarts-T_mult2",
        lambda o: S.CosineAnnealingWarmRestarts(o, 5, 2, 0.01 * LR),
        lambda: pt.cosine_annealing_warm_restarts(LR, 5, 2, 0.01 * LR),
        200,
    ),
    (
        "CosineAnnealingWarmRestarts-T_mult3",
        lambda o: S.CosineAnnealingWarmRestarts(o, 1, 3, 0.2 * LR),
        lambda: pt.cosine_annealing_warm_restarts(LR, 1, 3, 0.2 * LR),
        400,
    ),
    (
        "MultiplicativeLR",
        lambda o: S.MultiplicativeLR(o, _exp_lambda),
        lambda: pt.multiplicative_lr(LR, lambda k: 0.97, num_steps=100),
        150,
    ),
    (
        "MultiplicativeLR-piecewise",
        lambda o: S.MultiplicativeLR(o, _piecewise_torch),
        lambda: pt.multiplicative_lr(LR, _piecewise_jnp, num_steps=25),  # past the table at 25
        80,
    ),
    (
        "MultiplicativeLR-no-table",
        lambda o: S.MultiplicativeLR(o, _piecewise_torch),
        lambda: pt.multiplicative_lr(LR, _piecewise_jnp),
        45,
    ),
    (
        "LambdaLR",
        lambda o: S.LambdaLR(o, lambda k: 1 / (1 + 0.1 * k)),
        lambda: pt.PYTORCH_SCHEDULERS["LambdaLR"](LR, lambda k: 1 / (1 + 0.1 * k)),
        50,
    ),
    (
        "ChainedScheduler",
        lambda o: S.ChainedScheduler([S.ConstantLR(o, 0.1, 3), S.ExponentialLR(o, 0.9)]),
        lambda: pt.chained_scheduler([pt.constant_lr(LR, 0.1, 3), pt.exponential_lr(LR, 0.9)]),
        40,
    ),
    (
        "ChainedScheduler-four",
        lambda o: S.ChainedScheduler(
            [
                S.LinearLR(o, 0.2, 1.0, 8),
                S.StepLR(o, 10, 0.5),
                S.MultiplicativeLR(o, _piecewise_torch),
                S.PolynomialLR(o, 70, 1.5),
            ]
        ),
        lambda: pt.chained_scheduler(
            [
                pt.linear_lr(LR, 0.2, 1.0, 8),
                pt.chained_scheduler(
                    [pt.step_lr(LR, 10, 0.5), pt.multiplicative_lr(LR, _piecewise_jnp, 100)]
                ),
                pt.polynomial_lr(LR, 70, 1.5),
            ]
        ),
        90,
    ),
    (
        "SequentialLR",
        lambda o: S.SequentialLR(
            o, [S.LinearLR(o, 0.1, 1.0, 10), S.CosineAnnealingLR(o, 50, 0.01 * LR)], [10]
        ),
        lambda: pt.PYTORCH_SCHEDULERS["SequentialLR"](
            [pt.linear_lr(LR, 0.1, 1.0, 10), pt.cosine_annealing_lr(LR, 50, 0.01 * LR)], [10]
        ),
        220,
    ),
    (
        "SequentialLR-three",
        lambda o: S.SequentialLR(
            o,
            [S.ConstantLR(o, 0.5, 4), S.ExponentialLR(o, 0.9), S.CosineAnnealingWarmRestarts(o, 6, 2)],
            [5, 20],
        ),
        lambda: pt.PYTORCH_SCHEDULERS["SequentialLR"](
            [
                pt.constant_lr(LR, 0.5, 4),
                pt.exponential_lr(LR, 0.9),
                pt.cosine_annealing_warm_restarts(LR, 6, 2),
            ],
            [5, 20],
        ),
        80,
    ),
]


@functools.cache
def expected_rates(case_id):
    _, build_torch, _, num_updates = next(case for case in RATE_CASES if case[0] == case_id)
    return torch_values(build_torch, num_updates)[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", RATE_CASES, ids=lambda case: case[0])
def test_rate_matches_torch_scheduler(case, dtype):
    case_id, _, build_optax, _ = case
    harness.check_schedule(case_id, build_optax, expected_rates(case_id), dtype,
                           jit_scalar="-" not in case_id)


# --------------------------------------------------------- CyclicLR and OneCycleLR, with momentum


def _torch_scale(x):
    return 1 / (1 + 0.5 * (x - 1))


def _jnp_scale(x):
    return 1 / (1 + 0.5 * (x - 1))


def _torch_wave(k):
    return 0.5 * (1 + math.cos(k / 7))


def _jnp_wave(k):
    return 0.5 * (1 + jnp.cos(k / 7))


# (id, optimizer, PyTorch scheduler, optax CycleSchedules, number of updates)
CYCLE_CASES = [
    (
        "CyclicLR-triangular",
        "sgd",
        lambda o: S.CyclicLR(o, 0.01, 0.1, step_size_up=5),
        lambda: pt.cyclic_lr(0.01, 0.1, step_size_up=5),
        47,
    ),
    (
        "CyclicLR-triangular2",
        "sgd",
        lambda o: S.CyclicLR(o, 0.01, 0.1, step_size_up=4, step_size_down=6, mode="triangular2"),
        lambda: pt.cyclic_lr(0.01, 0.1, step_size_up=4, step_size_down=6, mode="triangular2"),
        65,
    ),
    (
        "CyclicLR-exp_range",
        "adam",
        lambda o: S.CyclicLR(o, 0.001, 0.01, 3, 2, mode="exp_range", gamma=0.99, base_momentum=0.7),
        lambda: pt.cyclic_lr(0.001, 0.01, 3, 2, mode="exp_range", gamma=0.99, base_momentum=0.7),
        300,
    ),
    (
        "CyclicLR-scale_fn-cycle",
        "sgd",
        lambda o: S.CyclicLR(o, 0.02, 0.2, 6, scale_fn=_torch_scale),
        lambda: pt.cyclic_lr(0.02, 0.2, 6, scale_fn=_jnp_scale),
        75,
    ),
    (
        "CyclicLR-scale_fn-iterations",
        "adam",
        lambda o: S.CyclicLR(o, 0.02, 0.2, 3, 9, scale_fn=_torch_wave, scale_mode="iterations"),
        lambda: pt.cyclic_lr(0.02, 0.2, 3, 9, scale_fn=_jnp_wave, scale_mode="iterations"),
        100,
    ),
    (
        "CyclicLR-down0",
        "sgd",
        lambda o: S.CyclicLR(o, 0.01, 0.1, 4, 0),
        lambda: pt.cyclic_lr(0.01, 0.1, 4, 0),
        20,
    ),
    (
        "CyclicLR-long",
        "sgd",
        lambda o: S.CyclicLR(o, 0.01, 0.1, 3, 4),
        lambda: pt.cyclic_lr(0.01, 0.1, 3, 4),
        7000,
    ),
    (
        "OneCycleLR",
        "sgd",
        lambda o: S.OneCycleLR(o, 0.1, total_steps=100),
        lambda: pt.one_cycle_lr(0.1, total_steps=100),
        101,
    ),
    (
        "OneCycleLR-linear-three_phase",
        "adam",
        lambda o: S.OneCycleLR(o, 0.05, 97, pct_start=0.2, anneal_strategy="linear", three_phase=True),
        lambda: pt.one_cycle_lr(0.05, 97, pct_start=0.2, anneal_strategy="linear", three_phase=True),
        98,
    ),
    (
        "OneCycleLR-cos-three_phase",
        "sgd",
        lambda o: S.OneCycleLR(o, 0.05, epochs=4, steps_per_epoch=25, pct_start=0.35, three_phase=True),
        lambda: pt.one_cycle_lr(0.05, epochs=4, steps_per_epoch=25, pct_start=0.35, three_phase=True),
        101,
    ),
    (
        "OneCycleLR-options",
        "adam",
        lambda o: S.OneCycleLR(
            o,
            0.3,
            50,
            pct_start=0.01,
            div_factor=3.0,
            final_div_factor=100.0,
            base_momentum=0.8,
            max_momentum=0.99,
        ),
        lambda: pt.one_cycle_lr(
            0.3,
            50,
            pct_start=0.01,
            div_factor=3.0,
            final_div_factor=100.0,
            base_momentum=0.8,
            max_momentum=0.99,
        ),
        51,
    ),
]


@functools.cache
def expected_cycle(case_id):
    _, optimizer, build_torch, _, num_updates = next(case for case in CYCLE_CASES if case[0] == case_id)
    return torch_values(build_torch, num_updates, optimizer)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CYCLE_CASES, ids=lambda case: case[0])
def test_rate_and_momentum_match_torch_scheduler(case, dtype):
    case_id, _, _, build_optax, _ = case
    rates, momenta = expected_cycle(case_id)
    first_of_its_class = case_id in ("CyclicLR-triangular", "OneCycleLR")
    harness.check_schedule(case_id, lambda: build_optax().learning_rate, rates, dtype,
                           jit_scalar=first_of_its_class)
    harness.check_schedule(f"{case_id} momentum", lambda: build_optax().momentum, momenta, dtype,
                           jit_scalar=first_of_its_class)


def test_cycle_momentum_false_returns_no_momentum_schedule():
    assert pt.cyclic_lr(0.01, 0.1, cycle_momentum=False).momentum is None
    assert pt.one_cycle_lr(0.1, 10, cycle_momentum=False).momentum is None


def test_one_cycle_holds_its_last_value_past_total_steps():
    # PyTorch raises there; the schedule holds its value at total_steps.
    schedule = pt.one_cycle_lr(0.1, 20).learning_rate
    assert float(schedule(20)) == float(schedule(21)) == float(schedule(10_000))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_injected_rate_and_momentum_reproduce_a_torch_run(optimizer):
    """OneCycleLR's two schedules through optax.inject_hyperparams train like PyTorch."""
    num_updates = 40
    rng = np.random.default_rng(0)
    start = rng.normal(size=5)
    grads = rng.normal(size=(num_updates, 5))
    parameter = torch.tensor(start, requires_grad=True)
    if optimizer == "sgd":
        opt = torch.optim.SGD([parameter], lr=0.1, momentum=0.9)
    else:
        opt = torch.optim.AdamW([parameter], lr=0.1, weight_decay=0.01)
    scheduler = S.OneCycleLR(opt, 0.1, num_updates)
    for grad in grads:
        parameter.grad = torch.tensor(grad)
        opt.step()
        scheduler.step()
    with jax.enable_x64(True):
        cycle = pt.one_cycle_lr(0.1, num_updates)
        if optimizer == "sgd":
            tx = optax.inject_hyperparams(optax.sgd)(
                learning_rate=cycle.learning_rate, momentum=cycle.momentum
            )
        else:
            tx = optax.inject_hyperparams(optax.adamw)(
                learning_rate=cycle.learning_rate, b1=cycle.momentum, weight_decay=0.01
            )
        params = jnp.asarray(start)
        state = tx.init(params)

        @jax.jit
        def step(params, state, grad):
            updates, state = tx.update(grad, state, params)
            return optax.apply_updates(params, updates), state

        for grad in grads:
            params, state = step(params, state, jnp.asarray(grad))
        error = float(np.max(np.abs(np.asarray(params) - parameter.detach().numpy())))
    harness.assert_within(f"OneCycleLR+{optimizer} param error", error, 1e-12)


# ----------------------------------------------------------------------- ReduceLROnPlateau


def plateau_values():
    # Improving, flat, noisy, improving again, then rising: every branch of the scheduler.
    values = [1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.85, 0.79999, 0.7, 0.7, 0.7, 0.7]
    values += [0.7 + 0.01 * math.sin(k) for k in range(20)] + [0.5 - 0.01 * k for k in range(10)]
    return values + [0.4 + 0.02 * k for k in range(25)]


PLATEAU_OPTIONS = [
    {},
    {"patience": 2},
    {"mode": "max", "patience": 1, "factor": 0.5, "cooldown": 2},
    {"patience": 0, "threshold": 0.05, "threshold_mode": "abs", "min_lr": 0.02, "factor": 0.7},
    {"patience": 1, "cooldown": 3, "eps": 0.02},
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", PLATEAU_OPTIONS, ids=str)
def test_reduce_lr_on_plateau_matches_torch(options, dtype):
    values = plateau_values()
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    scheduler = S.ReduceLROnPlateau(opt, **options)
    expected = []
    for value in values:
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step(value)
    expected.append(opt.param_groups[0]["lr"])  # the rate after the last value
    harness.check_schedule("ReduceLROnPlateau",
                           lambda: pt.PYTORCH_SCHEDULERS["ReduceLROnPlateau"](LR, **options),
                           expected, dtype, values=values)


# ---------------------------------------------------------------------------- the registry


def test_registry_names_every_torch_scheduler_class():
    classes = {
        name
        for name, value in vars(S).items()
        if isinstance(value, type)
        and issubclass(value, S.LRScheduler)
        and not name.startswith("_")
        and name != "LRScheduler"
    }
    assert classes == set(pt.PYTORCH_SCHEDULERS), classes ^ set(pt.PYTORCH_SCHEDULERS)


# ---------------------------------------------------------------------------------- errors


def _python_branching(k):
    return 0.5 if k < 3 else 1.0


ERRORS = [
    (lambda: pt.step_lr(-0.1, 3), ValueError, r"learning_rate=-0\.1 is invalid"),
    (lambda: pt.step_lr(0.1, 0), ValueError, "step_size=0 is invalid: expected an integer >= 1"),
    (lambda: pt.step_lr(0.1, 2.5), TypeError, r"step_size=2\.5 is invalid"),
    (lambda: pt.step_lr(0.1, 3, -0.5), ValueError, r"gamma=-0\.5 is invalid"),
    (lambda: pt.multi_step_lr(0.1, [3, -1]), ValueError, r"milestones\[1\]=-1 is invalid"),
    (lambda: pt.multi_step_lr(0.1, 5), TypeError, "milestones=5 is invalid"),
    (lambda: pt.constant_lr(0.1, 0.0), ValueError, r"factor=0\.0 is invalid: expected a value in \(0, 1\]"),
    (lambda: pt.constant_lr(0.1, 1.5), ValueError, r"factor=1\.5 is invalid"),
    (lambda: pt.constant_lr(0.1, 0.5, 0), ValueError, "total_iters=0 is invalid"),
    (lambda: pt.linear_lr(0.1, 0.0), ValueError, r"start_factor=0\.0 is invalid"),
    (lambda: pt.linear_lr(0.1, 0.5, 1.5), ValueError, r"end_factor=1\.5 is invalid"),
    (lambda: pt.linear_lr(0.1, 0.5, 1.0, 0), ValueError, "total_iters=0 is invalid"),
    (lambda: pt.exponential_lr(0.1, float("nan")), ValueError, "gamma=nan is invalid"),
    (lambda: pt.polynomial_lr(0.1, 10, -1.0), ValueError, r"power=-1\.0 is invalid"),
    (lambda: pt.polynomial_lr(0.1, 0), ValueError, "total_iters=0 is invalid"),
    (lambda: pt.cosine_annealing_lr(0.1, 0), ValueError, "T_max=0 is invalid"),
    (lambda: pt.cosine_annealing_lr(0.1, 10, -1.0), ValueError, r"eta_min=-1\.0 is invalid"),
    (lambda: pt.cosine_annealing_warm_restarts(0.1, 0), ValueError, "T_0=0 is invalid"),
    (lambda: pt.cosine_annealing_warm_restarts(0.1, 5, 1.5), TypeError, r"T_mult=1\.5 is invalid"),
    (lambda: pt.cosine_annealing_warm_restarts(0.1, 5, 0), ValueError, "T_mult=0 is invalid"),
    (lambda: pt.multiplicative_lr(0.1, 0.95), TypeError, "lr_lambda=0.95 is invalid"),
    (
        lambda: pt.multiplicative_lr(0.1, _python_branching),
        TypeError,
        "lr_lambda=.* is invalid: expected a function written with jax.numpy",
    ),
    (
        lambda: pt.multiplicative_lr(0.1, lambda k: jnp.ones(2)),
        ValueError,
        r"returning a scalar, got shape \(2,\)",
    ),
    (lambda: pt.chained_scheduler([]), ValueError, r"schedulers=\[\] is invalid"),
    (
        lambda: pt.chained_scheduler([pt.step_lr(0.1, 3), pt.cosine_annealing_lr(0.1, 10)]),
        TypeError,
        r"schedulers\[1\]=.* is invalid: ChainedScheduler reproduces multiplicative schedulers only",
    ),
    (
        lambda: pt.chained_scheduler([pt.step_lr(0.1, 3), pt.step_lr(0.2, 3)]),
        ValueError,
        r"schedulers\[1\] has learning_rate=0\.2, but schedulers\[0\] has 0\.1",
    ),
    (
        lambda: pt.PYTORCH_SCHEDULERS["SequentialLR"](
            [pt.step_lr(0.1, 3), pt.multiplicative_lr(0.1, lambda k: 0.9)], [5]
        ),
        ValueError,
        r"schedules\[1\] is a MultiplicativeLR, which SequentialLR cannot restart",
    ),
    (lambda: pt.cyclic_lr(0.1, 1.0, 0), ValueError, "step_size_up=0 is invalid"),
    (lambda: pt.cyclic_lr(0.1, 1.0, 5, -1), ValueError, "step_size_down=-1 is invalid"),
    (lambda: pt.cyclic_lr(0.1, 1.0, mode="sine"), ValueError, "mode='sine' is invalid: expected one of"),
    (
        lambda: pt.cyclic_lr(0.1, 1.0, scale_fn=lambda c: c, scale_mode="epoch"),
        ValueError,
        "scale_mode='epoch' is invalid",
    ),
    (lambda: pt.cyclic_lr(0.1, 1.0, scale_fn=_python_branching), TypeError, "scale_fn=.* is invalid"),
    (lambda: pt.cyclic_lr(0.1, 1.0, cycle_momentum=1), TypeError, "cycle_momentum=1 is invalid"),
    (lambda: pt.one_cycle_lr(0.1), ValueError, "total_steps=None is invalid: give total_steps, or epochs"),
    (lambda: pt.one_cycle_lr(0.1, 0), ValueError, "total_steps=0 is invalid"),
    (lambda: pt.one_cycle_lr(0.1, epochs=2, steps_per_epoch=0), ValueError, "steps_per_epoch=0 is invalid"),
    (lambda: pt.one_cycle_lr(0.1, 10, pct_start=1.5), ValueError, r"pct_start=1\.5 is invalid"),
    (
        lambda: pt.one_cycle_lr(0.1, 10, pct_start=0.1),
        ValueError,
        r"pct_start=0\.1 is invalid with total_steps=10",
    ),
    (lambda: pt.one_cycle_lr(0.1, 10, anneal_strategy="exp"), ValueError, "anneal_strategy='exp' is invalid"),
    (lambda: pt.one_cycle_lr(0.1, 10, div_factor=0.0), ValueError, r"div_factor=0\.0 is invalid"),
]


@pytest.mark.parametrize("build, error, message", ERRORS, ids=[message for _, _, message in ERRORS])
def test_bad_arguments_are_refused_when_built(build, error, message):
    with pytest.raises(error, match=message):
        build()


@pytest.mark.parametrize("pct_start", [0.1, 1.0])
def test_one_cycle_zero_length_phase_is_what_torch_refuses(pct_start):
    # pct_start * total_steps == 1 fails at once, pct_start == 1 at the last scheduler.step().
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    with pytest.raises(ZeroDivisionError):
        scheduler = S.OneCycleLR(opt, 0.1, 10, pct_start=pct_start)
        for _ in range(10):
            opt.step()
            scheduler.step()
    with pytest.raises(ValueError, match="would have no length"):
        pt.one_cycle_lr(0.1, 10, pct_start=pct_start)


def test_plateau_transform_is_reused():
    assert pt.PYTORCH_SCHEDULERS["ReduceLROnPlateau"] is ts.reduce_lr_on_plateau


# ------------------------------------------------------------------------- transformers' GreedyLR


def greedy_values():
    # Steady improvement (increases up to max_lr), a long plateau (decreases to min_lr and
    # resets), noise, then improvement again.
    values = [1.0 - 0.05 * k for k in range(15)] + [0.3] * 40
    values += [0.3 + 0.02 * math.sin(3 * k) for k in range(30)]
    return values + [0.25 - 0.01 * k for k in range(20)] + [0.1 + 0.001 * k for k in range(30)]


GREEDY_OPTIONS = [
    {},
    {"patience": 1, "factor": 0.5, "min_lr": 0.02, "max_lr": 0.5, "reset_start": 3},
    {"patience": 2, "cooldown": 2, "warmup": 3, "min_lr": 0.01, "reset_start": 2, "factor": 0.7},
    {"mode": "max", "patience": 0, "threshold": 0.01, "threshold_mode": "rel", "min_lr": 0.05},
    {"patience": 1, "smooth": True, "window_size": 4, "factor": 0.8, "min_lr": 0.03, "reset_start": 4},
    {"patience": 0, "eps": 0.05, "factor": 0.6, "threshold": 0.0},
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", GREEDY_OPTIONS, ids=str)
def test_greedy_lr_matches_transformers(options, dtype):
    from transformers.optimization import GreedyLR

    values = greedy_values()
    if options.get("mode") == "max":
        values = [-v for v in values]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    scheduler = transformers.get_scheduler("greedy", opt, scheduler_specific_kwargs=dict(options))
    assert isinstance(scheduler, GreedyLR)
    expected = []
    for value in values:
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step(value)
    expected.append(opt.param_groups[0]["lr"])  # the rate after the last value
    assert len(set(expected)) > 3  # the rate moved
    harness.check_schedule("GreedyLR", lambda: ts.greedy_lr(LR, **options), expected, dtype,
                           values=values)


GREEDY_ERRORS = [
    ({"factor": 1.0}, ValueError, r"factor=1\.0 is invalid: expected a value in \(0, 1\)"),
    ({"factor": 0.0}, ValueError, r"factor=0\.0 is invalid"),
    ({"mode": "avg"}, ValueError, "mode='avg' is invalid"),
    ({"threshold_mode": "pct"}, ValueError, "threshold_mode='pct' is invalid"),
    ({"patience": -1}, ValueError, "patience=-1 is invalid"),
    ({"warmup": 1.5}, TypeError, r"warmup=1\.5 is invalid"),
    ({"min_lr": [0.1, 0.2]}, TypeError, r"min_lr=\[0\.1, 0\.2\] is invalid: expected one number"),
    ({"max_lr": -1.0}, ValueError, r"max_lr=-1\.0 is invalid"),
    ({"verbose": True}, ValueError, "verbose=True is invalid"),
    ({"window_size": 0}, ValueError, "window_size=0 is invalid"),
    ({"reset_start": -1}, ValueError, "reset_start=-1 is invalid"),
]


@pytest.mark.parametrize("options, error, message", GREEDY_ERRORS, ids=[m for _, _, m in GREEDY_ERRORS])
def test_greedy_lr_bad_arguments_are_refused_when_built(options, error, message):
    with pytest.raises(error, match=message):
        ts.greedy_lr(LR, **options)


def test_get_lr_finds_the_greedy_rate_inside_a_chain():
    from optax_bertadam.lr import get_lr

    tx = optax.chain(optax.sgd(LR), ts.greedy_lr(LR, patience=0, factor=0.5))
    params = jnp.zeros(2)
    state = tx.init(params)
    for value in (1.0, 0.5):
        _, state = tx.update(jnp.ones(2), state, params, value=value)
    assert float(get_lr(state)) == pytest.approx(4 * LR)
