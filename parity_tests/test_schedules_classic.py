"""Classic schedules (tutorial, Noam, LambdaLR, SequentialLR) against their PyTorch twins.

PyTorch's side runs a real ``torch.optim.SGD`` with the scheduler the source uses: torch_ref's
``CosineWarmupScheduler`` and ``NoamOpt``, or the real ``LambdaLR``/``SequentialLR`` (the tutorial's
formulas as torch_ref lambdas), and records the rate each update ran at. The optax side is the
schedule at counts ``0 .. n-1``, through ``jax.vmap`` and a jitted scalar call, in float32 (x64
off) and float64 (``jax.enable_x64(True)``).

Error measure: ``max_k |optax_k - torch_k| / peak rate``. Tolerances: 1e-6 in float32, 1e-12 in
float64. ``pytest -s`` prints the worst error measured per schedule and dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optax_bertadam.schedules import classic
from parity_tests import harness
from torch_ref import schedules as ref


def lambda_lr_rates(learning_rate, multiplier, num_updates):
    optimizer = ref.dummy_optimizer(learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    return ref.learning_rates_used(optimizer, num_updates, scheduler.step)


def cosine_warmup_rates(base_lr, warmup_steps, max_steps, min_lr_ratio, num_updates):
    # As the tutorial's example: optimizer at lr=base_lr, scheduler.step() after each update.
    optimizer = ref.dummy_optimizer(base_lr)
    scheduler = ref.CosineWarmupScheduler(optimizer, warmup_steps, max_steps, base_lr, min_lr_ratio)
    return ref.learning_rates_used(optimizer, num_updates, scheduler.step)


def noam_rates(model_size, warmup, factor, num_updates):
    optimizer = ref.dummy_optimizer(0.0)
    noam = ref.NoamOpt(model_size, factor, warmup, optimizer)
    rates = []
    for _ in range(num_updates):
        noam.step()  # sets the rate, then runs the update at it
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


DTYPES = ["float32", "float64"]


# ------------------------------------------------------------------------- the tutorial (002)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "base_lr, warmup_steps, max_steps, min_lr_ratio",
    [(1e-4, 20, 100, 0.1), (3e-4, 0, 50, 0.0), (1e-3, 1, 30, 0.5), (1e-4, 200, 10_000, 0.1)],
)
def test_cosine_warmup_matches_tutorial_scheduler(base_lr, warmup_steps, max_steps, min_lr_ratio, dtype):
    num_updates = max_steps + max_steps // 2
    expected = cosine_warmup_rates(base_lr, warmup_steps, max_steps, min_lr_ratio, num_updates)
    assert expected[0] == base_lr  # update 0 runs at the optimizer's own lr
    harness.check_schedule(
        "cosine_warmup",
        lambda: classic.cosine_warmup(base_lr, warmup_steps, max_steps, min_lr_ratio),
        expected,
        dtype,
    )


# (family, optax schedule, the torch_ref multiplier for LambdaLR); the optimizer's lr is 1e-3.
TABLE_CASES = [
    ("linear_decay", lambda: classic.linear_decay(1e-3, 100), ref.linear_decay_lambda(100)),
    ("linear_decay", lambda: classic.linear_decay(1e-3, 1), ref.linear_decay_lambda(1)),
    (
        "polynomial_decay",
        lambda: classic.polynomial_decay(1e-3, 100, 2.0),
        ref.polynomial_decay_lambda(100, 2.0),
    ),
    (
        "polynomial_decay",
        lambda: classic.polynomial_decay(1e-3, 77, 0.5),
        ref.polynomial_decay_lambda(77, 0.5),
    ),
    (
        "polynomial_decay",
        lambda: classic.polynomial_decay(1e-3, 50, 0.0),
        ref.polynomial_decay_lambda(50, 0.0),
    ),
    ("inverse_sqrt", lambda: classic.inverse_sqrt(1e-3, 20), ref.inverse_sqrt_lambda(20)),
    ("inverse_sqrt", lambda: classic.inverse_sqrt(1e-3, 1), ref.inverse_sqrt_lambda(1)),
    (
        "constant_with_linear_cooldown",
        lambda: classic.constant_with_linear_cooldown(1e-3, 100, 30),
        ref.constant_with_linear_cooldown_lambda(100, 30),
    ),
    (
        "constant_with_linear_cooldown",
        lambda: classic.constant_with_linear_cooldown(1e-3, 40, 0),
        ref.constant_with_linear_cooldown_lambda(40, 0),
    ),
    (
        "constant_with_linear_cooldown",
        lambda: classic.constant_with_linear_cooldown(1e-3, 40, 40),
        ref.constant_with_linear_cooldown_lambda(40, 40),
    ),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TABLE_CASES, ids=lambda case: case[0])
def test_tutorial_table_matches_lambda_lr(case, dtype):
    family, build, multiplier = case
    harness.check_schedule(family, build, lambda_lr_rates(1e-3, multiplier, 160), dtype)


# ------------------------------------------------------------------------------- Noam (003)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model_size, warmup, factor", [(512, 40, 1.0), (64, 7, 2.0), (1, 1, 0.5)])
def test_noam_matches_noamopt(model_size, warmup, factor, dtype):
    expected = noam_rates(model_size, warmup, factor, 4 * warmup + 30)
    harness.check_schedule("noam", lambda: classic.noam(model_size, warmup, factor), expected, dtype)


def test_noamopt_state_round_trip_resumes_where_the_optax_count_does():
    optimizer = ref.dummy_optimizer(0.0)
    noam = ref.NoamOpt(128, 2.0, 10, optimizer)
    for _ in range(7):
        noam.step()
    saved = noam.state_dict()
    assert "optimizer" not in saved and saved["_step"] == 7
    resumed_optimizer = ref.dummy_optimizer(0.0)
    resumed = ref.NoamOpt(1, 1.0, 1, resumed_optimizer)
    resumed.load_state_dict(saved)
    rates = []
    for _ in range(10):
        resumed.step()
        rates.append(resumed_optimizer.param_groups[0]["lr"])
    # The optax side resumes from the restored count: update k of the resumed run is count 7 + k.
    schedule = classic.noam(128, 10, 2.0)
    np.testing.assert_allclose(jax.vmap(schedule)(jnp.arange(7, 17)), rates, rtol=1e-6)


# ----------------------------------------------------------------- LambdaLR and SequentialLR


WARMUP = 12
LAMBDAS = [
    # (name, torch multiplier of the step, jax.numpy multiplier of the count)
    ("exponential", lambda k: 0.95**k, lambda k: 0.95**k),
    ("step", lambda k: 0.5 ** (k // 30), lambda k: 0.5 ** (k // 30)),
    # seed 003's warmup-then-linear lambda, with training_steps=100
    (
        "warmup_linear",
        lambda k: float(k / WARMUP) if k < WARMUP else max(0.0, float(100 - k) / float(max(1, 100 - WARMUP))),
        lambda k: jnp.where(k < WARMUP, k / WARMUP, jnp.maximum(0.0, (100 - k) / max(1, 100 - WARMUP))),
    ),
    # seed 003's logarithmic warmup
    ("log_warmup", lambda k: 1 / (10 ** float(WARMUP - k)), lambda k: 1 / 10.0 ** (WARMUP - k)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LAMBDAS, ids=lambda case: case[0])
def test_lambda_lr_matches_torch_lambda_lr(case, dtype):
    _, torch_multiplier, jax_multiplier = case
    num_updates = WARMUP + 1 if case[0] == "log_warmup" else 150  # 10**k overflows beyond
    expected = lambda_lr_rates(1e-3, torch_multiplier, num_updates)
    harness.check_schedule("lambda_lr", lambda: classic.lambda_lr(1e-3, jax_multiplier), expected, dtype)


def cosine_annealing(total, eta_min_ratio):
    """CosineAnnealingLR's closed form as a multiplier of the initial lr."""
    return lambda k: eta_min_ratio + (1 - eta_min_ratio) * (1 + jnp.cos(jnp.pi * k / total)) / 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_lr_matches_seed_example(dtype):
    # Seed 003: SequentialLR([LambdaLR(log warmup), CosineAnnealingLR], milestones=[warmup]).
    learning_rate, total = 1e-3, 60
    optimizer = ref.dummy_optimizer(learning_rate)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, LAMBDAS[3][1])
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total, eta_min=0.1 * learning_rate)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], [WARMUP])
    expected = ref.learning_rates_used(optimizer, WARMUP + total + 20, scheduler.step)
    harness.check_schedule(
        "sequential_lr",
        lambda: classic.sequential_lr(
            [
                classic.lambda_lr(learning_rate, LAMBDAS[3][2]),
                classic.lambda_lr(learning_rate, cosine_annealing(total, 0.1)),
            ],
            [WARMUP],
        ),
        expected,
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("milestones", [[0], [5], [3, 20], [1, 2, 40]], ids=str)
def test_sequential_lr_restarts_each_schedule_from_its_step_zero(milestones, dtype):
    pieces = [LAMBDAS[2], LAMBDAS[0], LAMBDAS[1], LAMBDAS[0]][: len(milestones) + 1]
    optimizer = ref.dummy_optimizer(1e-3)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(optimizer, piece[1]) for piece in pieces]
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, schedulers, milestones)
    expected = ref.learning_rates_used(optimizer, 80, scheduler.step)
    harness.check_schedule(
        "sequential_lr",
        lambda: classic.sequential_lr([classic.lambda_lr(1e-3, piece[2]) for piece in pieces], milestones),
        expected,
        dtype,
    )


# ---------------------------------------------------------------------------- random cases


@st.composite
def classic_cases(draw):
    """(family, builder of the optax schedule, torch rates)."""
    family = draw(
        st.sampled_from(
            [
                "cosine_warmup",
                "linear_decay",
                "polynomial_decay",
                "inverse_sqrt",
                "constant_with_linear_cooldown",
                "noam",
            ]
        )
    )
    base_lr = draw(st.floats(1e-6, 1.0))
    max_steps = draw(st.integers(1, 300))
    num_updates = max_steps + max_steps // 2 + 10
    if family == "cosine_warmup":
        warmup = draw(st.integers(0, max_steps - 1))
        ratio = draw(st.floats(0.0, 1.0))
        return (
            family,
            lambda: classic.cosine_warmup(base_lr, warmup, max_steps, ratio),
            cosine_warmup_rates(base_lr, warmup, max_steps, ratio, num_updates),
        )
    if family == "linear_decay":
        return (
            family,
            lambda: classic.linear_decay(base_lr, max_steps),
            lambda_lr_rates(base_lr, ref.linear_decay_lambda(max_steps), num_updates),
        )
    if family == "polynomial_decay":
        power = draw(st.floats(0.0, 5.0))
        return (
            family,
            lambda: classic.polynomial_decay(base_lr, max_steps, power),
            lambda_lr_rates(base_lr, ref.polynomial_decay_lambda(max_steps, power), num_updates),
        )
    if family == "inverse_sqrt":
        return (
            family,
            lambda: classic.inverse_sqrt(base_lr, max_steps),
            lambda_lr_rates(base_lr, ref.inverse_sqrt_lambda(max_steps), 3 * num_updates),
        )
    if family == "constant_with_linear_cooldown":
        cooldown = draw(st.integers(0, max_steps))
        return (
            family,
            lambda: classic.constant_with_linear_cooldown(base_lr, max_steps, cooldown),
            lambda_lr_rates(
                base_lr, ref.constant_with_linear_cooldown_lambda(max_steps, cooldown), num_updates
            ),
        )
    model_size = draw(st.integers(1, 4096))
    factor = draw(st.floats(0.01, 10.0))
    return (
        family,
        lambda: classic.noam(model_size, max_steps, factor),
        noam_rates(model_size, max_steps, factor, 3 * num_updates),
    )


@settings(max_examples=30, deadline=None)
@given(case=classic_cases(), dtype=st.sampled_from(DTYPES))
def test_random_classic_schedules(case, dtype):
    family, build, expected = case
    harness.check_schedule(family, build, expected, dtype, jit_scalar=False)


# ---------------------------------------------------------------------------------- errors


def _python_branching_lambda(k):
    return 1.0 if k < 10 else 0.5


ERRORS = [
    (lambda: classic.cosine_warmup(-1e-4, 10, 100), ValueError, r"base_lr=-0\.0001 is invalid"),
    (lambda: classic.cosine_warmup(float("nan"), 10, 100), ValueError, "base_lr=nan is invalid"),
    (lambda: classic.cosine_warmup(1e-4, -1, 100), ValueError, "warmup_steps=-1 is invalid"),
    (
        lambda: classic.cosine_warmup(1e-4, 100, 100),
        ValueError,
        "max_steps=100 is invalid: expected an integer > warmup_steps=100",
    ),
    (
        lambda: classic.cosine_warmup(1e-4, 10, 100, min_lr_ratio=1.5),
        ValueError,
        r"min_lr_ratio=1\.5 is invalid: expected a value in \[0, 1\]",
    ),
    (lambda: classic.cosine_warmup(1e-4, 10.5, 100), TypeError, r"warmup_steps=10\.5 is invalid"),
    (lambda: classic.linear_decay(1e-3, 0), ValueError, "max_steps=0 is invalid"),
    (lambda: classic.linear_decay("1e-3", 10), TypeError, "base_lr='1e-3' is invalid"),
    (lambda: classic.polynomial_decay(1e-3, 10, -1.0), ValueError, r"power=-1\.0 is invalid"),
    (lambda: classic.polynomial_decay(1e-3, 10, float("inf")), ValueError, "power=inf is invalid"),
    (lambda: classic.inverse_sqrt(1e-3, 0), ValueError, "warmup_steps=0 is invalid"),
    (
        lambda: classic.constant_with_linear_cooldown(1e-3, 10, 11),
        ValueError,
        r"cooldown_steps=11 is invalid: expected an integer in \[0, max_steps=10\]",
    ),
    (lambda: classic.constant_with_linear_cooldown(1e-3, 10, -1), ValueError, "cooldown_steps=-1 is invalid"),
    (lambda: classic.noam(0, 4000), ValueError, "model_size=0 is invalid"),
    (lambda: classic.noam(512, 0), ValueError, "warmup=0 is invalid"),
    (lambda: classic.noam(512, 4000, factor=-2.0), ValueError, r"factor=-2\.0 is invalid"),
    (lambda: classic.lambda_lr(1e-3, 0.5), TypeError, "lr_lambda=0.5 is invalid"),
    (
        lambda: classic.lambda_lr(1e-3, _python_branching_lambda),
        TypeError,
        "lr_lambda=.* is invalid: expected a function of the update count written with jax.numpy",
    ),
    (
        lambda: classic.lambda_lr(1e-3, lambda k: jnp.ones(3) * k),
        ValueError,
        r"expected a scalar multiplier, got \(3,\)",
    ),
    (lambda: classic.lambda_lr(-1.0, lambda k: k), ValueError, r"learning_rate=-1\.0 is invalid"),
    (lambda: classic.sequential_lr([], []), ValueError, r"schedules=\[\] is invalid"),
    (
        lambda: classic.sequential_lr([classic.linear_decay(1e-3, 10), 0.1], [5]),
        TypeError,
        r"schedules\[1\]=0\.1 is invalid",
    ),
    (
        lambda: classic.sequential_lr([classic.linear_decay(1e-3, 10)] * 2, [5, 6]),
        ValueError,
        r"milestones=\[5, 6\] is invalid: expected 1 milestone\(s\)",
    ),
    (
        lambda: classic.sequential_lr([classic.linear_decay(1e-3, 10)] * 3, [6, 5]),
        ValueError,
        r"milestones=\[6, 5\] is invalid: expected strictly increasing",
    ),
    (
        lambda: classic.sequential_lr([classic.linear_decay(1e-3, 10)] * 2, [-1]),
        ValueError,
        r"milestones\[0\]=-1 is invalid",
    ),
]


@pytest.mark.parametrize(
    "build, error, message", ERRORS, ids=[message for _, _, message in ERRORS]
)
def test_bad_arguments_are_refused_when_built(build, error, message):
    with pytest.raises(error, match=message):
        build()
