"""transformers.get_scheduler schedules: optax_bertadam against the real transformers + PyTorch.

For every schedule, PyTorch's side is ``transformers.get_scheduler(name, SGD(lr=...), ...)``
driven the usual way (read ``param_groups[0]['lr']``, ``optimizer.step()``,
``scheduler.step()``), which records the rate each update ran at, in Python doubles. The optax
side is the schedule at counts ``0 .. n-1``, through ``jax.vmap`` and through a jitted scalar
call, in float32 (x64 off) and float64 (``jax.enable_x64(True)``).

Error measure: ``max_k |optax_k - torch_k| / max_k |torch_k|`` (relative to the peak rate).
Tolerances: 1e-6 in float32, 1e-12 in float64. ``pytest -s`` prints the worst error measured per
schedule and dtype.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

import optax_bertadam.lr as ob_lr
from optax_bertadam.schedules import loss_driven
from optax_bertadam.schedules import transformers as ts
from parity_tests import harness
from torch_ref.schedules import dummy_optimizer, learning_rates_used

TOLERANCE = {"float32": 1e-6, "float64": 1e-12}
def torch_rates(name, learning_rate, num_warmup_steps, num_training_steps, kwargs, num_updates):
    optimizer = dummy_optimizer(learning_rate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # wsd's "both num_training_steps and num_stable_steps"
        scheduler = transformers.get_scheduler(
            name, optimizer, num_warmup_steps, num_training_steps, dict(kwargs)
        )
    return np.asarray(learning_rates_used(optimizer, num_updates, scheduler.step))


def relative_error(got, expected, learning_rate):
    # Relative to the peak rate: the larger of the base rate and the largest rate seen.
    peak = max(float(np.max(np.abs(expected))), learning_rate)
    return float(np.max(np.abs(got - expected)) / peak)


def check_parity(
    name,
    learning_rate,
    num_warmup_steps,
    num_training_steps,
    kwargs,
    dtype,
    num_updates=None,
    jit_scalar=True,
):
    if num_updates is None:
        # Through warmup, the whole decay and well past the end of training.
        end = max(num_training_steps or 0, num_warmup_steps or 0, 1)
        num_updates = end + end // 2 + 20
    expected = torch_rates(name, learning_rate, num_warmup_steps, num_training_steps, kwargs, num_updates)

    def build():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # wsd's "both num_training_steps and num_stable_steps"
            return ts.get_scheduler(name, learning_rate, num_warmup_steps, num_training_steps, dict(kwargs))

    # Relative to the larger of the peak and the base rate (the peak may never reach it).
    return harness.check_schedule(name, build, expected, dtype, peak=learning_rate, jit_scalar=jit_scalar)


# (name, learning_rate, num_warmup_steps, num_training_steps, scheduler_specific_kwargs)
CASES = [
    ("linear", 1e-3, 10, 100, {}),
    ("linear", 5e-5, 0, 37, {}),
    ("linear", 1e-3, 30, 20, {}),  # warmup longer than training
    ("cosine", 1e-3, 10, 100, {}),
    ("cosine", 2e-5, 0, 77, {"num_cycles": 1.5}),
    ("cosine", 1e-3, 13, 1000, {"num_cycles": 3}),
    ("cosine_with_restarts", 1e-3, 10, 100, {}),
    ("cosine_with_restarts", 1e-3, 10, 100, {"num_cycles": 3}),
    ("cosine_with_restarts", 1e-3, 7, 300, {"num_cycles": 2.5}),
    ("cosine_with_restarts", 1e-3, 0, 97, {"num_cycles": 7}),
    ("cosine_with_restarts", 1e-3, 5, 60, {"num_cycles": 0.3}),
    ("polynomial", 1e-3, 10, 100, {}),
    ("polynomial", 1e-3, 10, 100, {"lr_end": 1e-5, "power": 2.0}),
    ("polynomial", 3e-4, 0, 50, {"lr_end": 1e-6, "power": 0.5}),
    ("polynomial", 1e-3, 20, 10, {"lr_end": 1e-4}),  # warmup longer than training
    ("constant", 1e-3, None, None, {}),
    ("constant", 1e-3, 10, 100, {"ignored": True}),  # transformers ignores all of them
    ("constant_with_warmup", 1e-3, 10, None, {}),
    ("constant_with_warmup", 1e-3, 0, None, {"ignored": True}),
    ("inverse_sqrt", 1e-3, 10, None, {}),
    ("inverse_sqrt", 1e-3, 0, None, {}),  # timescale falls back to 10_000
    ("inverse_sqrt", 1e-3, 10, None, {"timescale": 25}),
    ("cosine_with_min_lr", 1e-3, 10, 100, {"min_lr": 1e-4}),
    ("cosine_with_min_lr", 1e-3, 0, 100, {"min_lr_rate": 0.2, "num_cycles": 1.0}),
    ("cosine_warmup_with_min_lr", 1e-3, 10, 100, {"min_lr_rate": 0.1}),
    ("cosine_warmup_with_min_lr", 1e-3, 10, 100, {"min_lr": 2e-4, "warmup_lr_rate": 0.05}),
    ("cosine_warmup_with_min_lr", 1e-3, 1, 50, {"min_lr_rate": 0.0, "warmup_lr_rate": 0.5}),
    ("cosine_warmup_with_min_lr", 1e-3, 0, 50, {"min_lr_rate": 0.3}),
    ("warmup_stable_decay", 1e-3, 10, 100, {"num_decay_steps": 30}),
    ("warmup_stable_decay", 1e-3, 0, 100, {"num_decay_steps": 0}),
    (
        "warmup_stable_decay",
        1e-3,
        10,
        None,
        {"num_decay_steps": 20, "num_stable_steps": 15, "num_cycles": 1.0},
    ),
    (
        "warmup_stable_decay",
        1e-3,
        10,
        90,  # num_stable_steps wins over num_training_steps
        {"num_decay_steps": 20, "num_stable_steps": 40},
    ),
] + [
    (
        "warmup_stable_decay",
        1e-3,
        12,
        100,
        {"num_decay_steps": 31, "warmup_type": warmup_type, "decay_type": decay_type, "min_lr_ratio": 0.1},
    )
    for warmup_type in ts.WARMUP_TYPES
    for decay_type in ts.DECAY_TYPES
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case[0]}-{case[2]}-{case[3]}-{case[4]}")
def test_matches_transformers_through_warmup_decay_and_past_the_end(case, dtype):
    check_parity(*case, dtype)


def test_get_scheduler_dispatches_every_scheduler_type():
    # Every transformers.SchedulerType, greedy included, in transformers' order.
    assert ts.SCHEDULER_NAMES == tuple(member.value for member in transformers.SchedulerType)
    greedy = ts.get_scheduler("greedy", 1e-3, scheduler_specific_kwargs={"patience": 1})
    state = greedy.init(jnp.zeros(1))
    assert isinstance(state, loss_driven.GreedyLRState)
    assert float(state.learning_rate) == pytest.approx(1e-3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_cycles'"):
        ts.get_scheduler("greedy", 1e-3, scheduler_specific_kwargs={"num_cycles": 2})


def test_accepts_scheduler_type_enum():
    schedule = ts.get_scheduler(transformers.SchedulerType.COSINE, 1e-3, 10, 100)
    reference = ts.get_scheduler("cosine", 1e-3, 10, 100)
    for count in (0, 9, 10, 55, 100, 119):
        assert float(schedule(count)) == float(reference(count))


def test_restart_boundaries_agree_with_double_precision():
    # The cycle each step falls in, as transformers' double-precision `(c * p) % 1.0` decides it.
    for num_cycles in (1, 2, 3, 0.3, 1.5, 2.5, 7, 10.1):
        for decay_length in (1, 2, 3, 7, 10, 97, 100, 333, 1000):
            boundaries = ts._restart_boundaries(float(num_cycles), decay_length)
            steps = np.arange(decay_length)
            ours = np.searchsorted(boundaries, steps, side="right")
            theirs = [math.floor(float(num_cycles) * (j / decay_length)) for j in steps]
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{num_cycles} {decay_length}")


def _random_case(draw):
    loss_driven = ("reduce_lr_on_plateau", "greedy")
    name = draw(st.sampled_from([n for n in ts.SCHEDULER_NAMES if n not in loss_driven]))
    learning_rate = draw(st.floats(1e-6, 1.0))
    num_warmup_steps = draw(st.integers(0, 60))
    num_training_steps = draw(st.integers(0, 300))
    kwargs = {}
    cycles = st.one_of(st.integers(0, 6), st.floats(0.0, 4.0))
    if name in ("cosine", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "cosine_with_restarts"):
        kwargs["num_cycles"] = draw(cycles)
    if name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        if draw(st.booleans()):
            kwargs["min_lr_rate"] = draw(st.floats(0.0, 1.0))
        else:
            kwargs["min_lr"] = learning_rate * draw(st.floats(0.0, 1.0))
    if name == "cosine_warmup_with_min_lr" and draw(st.booleans()):
        kwargs["warmup_lr_rate"] = draw(st.floats(0.0, 1.0))
    if name == "polynomial":
        if num_training_steps == num_warmup_steps:
            num_training_steps += 1
        kwargs["lr_end"] = learning_rate * draw(st.floats(0.0, 0.99))
        kwargs["power"] = draw(st.floats(0.0, 4.0))
    if name == "inverse_sqrt" and draw(st.booleans()):
        kwargs["timescale"] = draw(st.integers(1, 500))
    if name == "warmup_stable_decay":
        kwargs["num_decay_steps"] = draw(st.integers(0, 100))
        num_training_steps = max(num_training_steps, num_warmup_steps + kwargs["num_decay_steps"])
        kwargs["warmup_type"] = draw(st.sampled_from(ts.WARMUP_TYPES))
        kwargs["decay_type"] = draw(st.sampled_from(ts.DECAY_TYPES))
        kwargs["min_lr_ratio"] = draw(st.floats(0.0, 1.0))
        kwargs["num_cycles"] = draw(cycles)
    return name, learning_rate, num_warmup_steps, num_training_steps, kwargs


@settings(max_examples=30, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(["float32", "float64"]))
def test_random_warmups_totals_and_kwargs(data, dtype):
    case = _random_case(data.draw)
    # vmap only: the jitted scalar path is covered above; one compile per example is enough.
    check_parity(*case, dtype, jit_scalar=False)


ERRORS = [
    # transformers' own messages for missing arguments and unknown names
    (
        dict(name="linear", learning_rate=1e-3, num_training_steps=10),
        ValueError,
        r"linear requires `num_warmup_steps`, please provide that argument\.",
    ),
    (
        dict(name="cosine", learning_rate=1e-3, num_warmup_steps=1),
        ValueError,
        r"cosine requires `num_training_steps`, please provide that argument\.",
    ),
    (dict(name="inverse_sqrt", learning_rate=1e-3), ValueError, "inverse_sqrt requires `num_warmup"),
    (
        dict(name="cosine_schedule", learning_rate=1e-3),
        ValueError,
        r"name='cosine_schedule' is invalid: expected one of 'linear', 'cosine', .*'warmup_stable",
    ),
    (dict(name=3, learning_rate=1e-3), TypeError, "name=3 is invalid"),
    (
        dict(
            name="linear",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs=[("power", 2)],
        ),
        TypeError,
        "scheduler_specific_kwargs=",
    ),
    # a keyword the named schedule does not take: TypeError, as in transformers
    (
        dict(
            name="linear",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs={"num_cycles": 2},
        ),
        TypeError,
        "num_cycles",
    ),
    (
        dict(name="warmup_stable_decay", learning_rate=1e-3, num_warmup_steps=1, num_training_steps=10),
        TypeError,
        "num_decay_steps",
    ),
    # learning rate and step counts
    (
        dict(name="linear", learning_rate=-1e-3, num_warmup_steps=1, num_training_steps=10),
        ValueError,
        r"learning_rate=-0\.001 is invalid: expected a value in \[0, inf\]",
    ),
    (dict(name="constant", learning_rate=float("nan")), ValueError, "learning_rate=nan is invalid"),
    (dict(name="constant", learning_rate=float("inf")), ValueError, "learning_rate=inf is invalid"),
    (dict(name="constant", learning_rate="1e-3"), TypeError, "learning_rate='1e-3' is invalid"),
    (
        dict(name="linear", learning_rate=1e-3, num_warmup_steps=-1, num_training_steps=10),
        ValueError,
        "num_warmup_steps=-1 is invalid: expected an integer >= 0",
    ),
    (
        dict(name="linear", learning_rate=1e-3, num_warmup_steps=2.5, num_training_steps=10),
        TypeError,
        "num_warmup_steps=2.5 is invalid: expected an integer",
    ),
    (
        dict(name="cosine", learning_rate=1e-3, num_warmup_steps=1, num_training_steps=-10),
        ValueError,
        "num_training_steps=-10 is invalid",
    ),
    (
        dict(
            name="cosine",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs={"num_cycles": -1},
        ),
        ValueError,
        "num_cycles=-1 is invalid",
    ),
    (
        dict(
            name="cosine_with_restarts",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs={"num_cycles": float("inf")},
        ),
        ValueError,
        "num_cycles=inf is invalid",
    ),
    # polynomial
    (
        dict(
            name="polynomial",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs={"lr_end": 1e-3},
        ),
        ValueError,
        r"lr_end=0\.001 is invalid: expected a value in \[0, learning_rate=0\.001\)",
    ),
    (
        dict(
            name="polynomial",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs={"lr_end": -1e-7},
        ),
        ValueError,
        "lr_end=-1e-07 is invalid",
    ),
    (
        dict(name="polynomial", learning_rate=1e-3, num_warmup_steps=10, num_training_steps=10),
        ValueError,
        "num_training_steps=10 is invalid: expected a value different from num_warmup",
    ),
    (
        dict(
            name="polynomial",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs={"power": -1.0},
        ),
        ValueError,
        "power=-1.0 is invalid",
    ),
    # inverse_sqrt
    (
        dict(
            name="inverse_sqrt",
            learning_rate=1e-3,
            num_warmup_steps=1,
            scheduler_specific_kwargs={"timescale": 0},
        ),
        ValueError,
        "timescale=0 is invalid",
    ),
    # the min_lr pair
    (
        dict(name="cosine_with_min_lr", learning_rate=1e-3, num_warmup_steps=1, num_training_steps=10),
        ValueError,
        "one of min_lr or min_lr_rate should be set",
    ),
    (
        dict(
            name="cosine_warmup_with_min_lr",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs={"min_lr": 1e-4, "min_lr_rate": 0.1},
        ),
        ValueError,
        "only one of min_lr or min_lr_rate should be set",
    ),
    (
        dict(
            name="cosine_with_min_lr",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs={"min_lr_rate": 1.5},
        ),
        ValueError,
        r"min_lr_rate=1\.5 is invalid: expected a value in \[0, 1\]",
    ),
    (
        dict(
            name="cosine_with_min_lr",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs={"min_lr": 1e-2},
        ),
        ValueError,
        r"min_lr=0\.01 is invalid: expected a value in \[0, 0\.001\]",
    ),
    (
        dict(
            name="cosine_with_min_lr",
            learning_rate=0.0,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs={"min_lr": 0.0},
        ),
        ValueError,
        "min_lr=0.0 is invalid with learning_rate=0.0",
    ),
    (
        dict(
            name="cosine_warmup_with_min_lr",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs={"min_lr_rate": 0.1, "warmup_lr_rate": 2},
        ),
        ValueError,
        "warmup_lr_rate=2 is invalid",
    ),
    # warmup_stable_decay
    (
        dict(
            name="warmup_stable_decay",
            learning_rate=1e-3,
            num_warmup_steps=1,
            scheduler_specific_kwargs={"num_decay_steps": 5},
        ),
        ValueError,
        "either num_training_steps or num_stable_steps must be specified",
    ),
    (
        dict(
            name="warmup_stable_decay",
            learning_rate=1e-3,
            num_warmup_steps=10,
            num_training_steps=20,
            scheduler_specific_kwargs={"num_decay_steps": 15},
        ),
        ValueError,
        "num_training_steps=20 is invalid: expected an integer >= num_warmup_steps \\+ num_decay_steps",
    ),
    (
        dict(
            name="warmup_stable_decay",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=20,
            scheduler_specific_kwargs={"num_decay_steps": -5},
        ),
        ValueError,
        "num_decay_steps=-5 is invalid",
    ),
    (
        dict(
            name="warmup_stable_decay",
            learning_rate=1e-3,
            num_warmup_steps=1,
            scheduler_specific_kwargs={"num_decay_steps": 5, "num_stable_steps": -1},
        ),
        ValueError,
        "num_stable_steps=-1 is invalid",
    ),
    (
        dict(
            name="warmup_stable_decay",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=20,
            scheduler_specific_kwargs={"num_decay_steps": 5, "warmup_type": "exp"},
        ),
        ValueError,
        "warmup_type='exp' is invalid: expected one of 'linear', 'cosine', '1-sqrt'",
    ),
    (
        dict(
            name="warmup_stable_decay",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=20,
            scheduler_specific_kwargs={"num_decay_steps": 5, "decay_type": "step"},
        ),
        ValueError,
        "decay_type='step' is invalid",
    ),
    (
        dict(
            name="warmup_stable_decay",
            learning_rate=1e-3,
            num_warmup_steps=1,
            num_training_steps=20,
            scheduler_specific_kwargs={"num_decay_steps": 5, "min_lr_ratio": -0.1},
        ),
        ValueError,
        r"min_lr_ratio=-0\.1 is invalid",
    ),
    # reduce_lr_on_plateau
    (
        dict(name="reduce_lr_on_plateau", learning_rate=1e-3, scheduler_specific_kwargs={"factor": 1.0}),
        ValueError,
        r"factor=1\.0 is invalid: expected a value in \[0, 1\)",
    ),
    (
        dict(name="reduce_lr_on_plateau", learning_rate=1e-3, scheduler_specific_kwargs={"mode": "avg"}),
        ValueError,
        "mode='avg' is invalid",
    ),
    (
        dict(
            name="reduce_lr_on_plateau",
            learning_rate=1e-3,
            scheduler_specific_kwargs={"threshold_mode": "pct"},
        ),
        ValueError,
        "threshold_mode='pct' is invalid",
    ),
    (
        dict(name="reduce_lr_on_plateau", learning_rate=1e-3, scheduler_specific_kwargs={"patience": -1}),
        ValueError,
        "patience=-1 is invalid",
    ),
    (
        dict(name="reduce_lr_on_plateau", learning_rate=1e-3, scheduler_specific_kwargs={"cooldown": 1.5}),
        TypeError,
        "cooldown=1.5 is invalid",
    ),
    (
        dict(name="reduce_lr_on_plateau", learning_rate=1e-3, scheduler_specific_kwargs={"min_lr": -1.0}),
        ValueError,
        "min_lr=-1.0 is invalid",
    ),
    (
        dict(
            name="reduce_lr_on_plateau",
            learning_rate=1e-3,
            scheduler_specific_kwargs={"threshold": float("nan")},
        ),
        ValueError,
        "threshold=nan is invalid",
    ),
    (
        dict(name="reduce_lr_on_plateau", learning_rate=1e-3, scheduler_specific_kwargs={"eps": -1e-8}),
        ValueError,
        "eps=-1e-08 is invalid",
    ),
    (
        dict(name="reduce_lr_on_plateau", learning_rate=1e-3, scheduler_specific_kwargs={"verbose": True}),
        TypeError,
        "verbose",
    ),
]


@pytest.mark.parametrize("kwargs, error, message", ERRORS, ids=lambda x: str(x)[:60])
def test_bad_arguments_are_refused_when_built(kwargs, error, message):
    with pytest.raises(error, match=message):
        ts.get_scheduler(**kwargs)


def test_wsd_warns_like_transformers_when_both_lengths_are_given():
    with pytest.warns(UserWarning, match="num_stable_steps will be used"):
        ts.get_wsd_schedule(1e-3, 1, 5, num_training_steps=20, num_stable_steps=3)


# ------------------------------------------------------------------------ reduce_lr_on_plateau

# Improvements, long plateaus, improvements smaller than the 1e-4 relative threshold, a NaN and a
# tie: enough for several reductions with the default patience of 10.
PLATEAU_VALUES = (
    [1.0, 0.9, 0.8, 0.7, 0.6]
    + [0.6] * 12
    + [0.59999, 0.59995, 0.5, 0.45]
    + [0.45 + 0.01 * math.sin(i) for i in range(14)]
    + [float("nan"), 0.3, 0.3]
    + [0.31] * 25
    + [0.2 - 0.00001 * i for i in range(15)]
)
PLATEAU_KWARGS = [
    {},
    {"patience": 2, "cooldown": 3, "factor": 0.5},
    {"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "patience": 1},
    {"patience": 0, "factor": 0.5, "min_lr": 2e-4},
    {"patience": 1, "factor": 0.5, "eps": 1.5e-4},  # stops reducing once a step is <= eps
    {"patience": 3, "threshold_mode": "abs", "threshold": 0.05, "cooldown": 2, "factor": 0.3},
]


def torch_plateau_rates(learning_rate, kwargs, values):
    """Rate of each update with ``optimizer.step(); scheduler.step(value)``, and after the last."""
    optimizer = dummy_optimizer(learning_rate)
    scheduler = transformers.get_scheduler(
        "reduce_lr_on_plateau", optimizer, scheduler_specific_kwargs=dict(kwargs)
    )
    rates = []
    for value in values:
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step(value)
    return np.asarray(rates), optimizer.param_groups[0]["lr"]


def optax_plateau_rates(learning_rate, kwargs, values, dtype):
    """Rate of each update of ``chain(sgd(lr), reduce_lr_on_plateau(lr))`` with unit gradients."""
    with jax.enable_x64(dtype == "float64"):
        plateau = ts.get_scheduler("reduce_lr_on_plateau", learning_rate, scheduler_specific_kwargs=kwargs)
        tx = optax.chain(optax.sgd(learning_rate), plateau)
        params = jnp.zeros((), dtype=dtype)
        grads = jnp.ones((), dtype=dtype)

        def step(state, value):
            updates, state = tx.update(grads, state, params, value=value)
            return state, (-updates, ob_lr.get_lr(state), state[1].scale)

        state, (rates, next_rates, scales) = jax.lax.scan(
            jax.jit(step), tx.init(params), jnp.asarray(values, dtype=dtype)
        )
        assert rates.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(scales * learning_rate, next_rates, rtol=1e-6)
    return np.asarray(rates, np.float64), np.asarray(next_rates, np.float64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kwargs", PLATEAU_KWARGS, ids=str)
def test_reduce_lr_on_plateau_matches_torch_over_scripted_values(kwargs, dtype):
    learning_rate = 1e-3
    values = [-v for v in PLATEAU_VALUES] if kwargs.get("mode") == "max" else PLATEAU_VALUES
    expected, final = torch_plateau_rates(learning_rate, kwargs, values)
    assert len(set(expected.tolist())) >= 3, "the script should trigger at least two reductions"
    rates, next_rates = optax_plateau_rates(learning_rate, kwargs, values, dtype)
    error = relative_error(rates, expected, learning_rate)
    # The state after update k holds the rate of update k + 1 (param_groups' lr after step).
    error = max(error, relative_error(next_rates, np.append(expected[1:], final), learning_rate))
    harness.assert_within("reduce_lr_on_plateau", error, TOLERANCE[dtype])


def test_reduce_lr_on_plateau_value_decides_the_next_update_not_its_own():
    tx = ts.reduce_lr_on_plateau(1.0, patience=0)
    state = tx.init(None)
    update = jnp.ones(3)
    out, state = tx.update(update, state, value=1.0)  # sets best
    np.testing.assert_array_equal(out, update)
    out, state = tx.update(update, state, value=2.0)  # bad value: reduce...
    np.testing.assert_array_equal(out, update)  # ...but not this update,
    assert float(state.scale) == pytest.approx(0.1)  # the next one
    assert float(state.learning_rate) == pytest.approx(0.1)
    out, state = tx.update(update, state, value=0.5)
    np.testing.assert_allclose(out, 0.1 * update)
    assert out.dtype == update.dtype


def test_reduce_lr_on_plateau_keeps_update_dtype_and_refuses_non_scalar_values():
    tx = ts.reduce_lr_on_plateau(1e-3)
    state = tx.init(None)
    updates = {"w": jnp.ones(2, jnp.bfloat16)}
    out, _ = jax.jit(tx.update)(updates, state, value=jnp.float32(1.0))
    assert out["w"].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match=r"value with shape \(2,\) is invalid: expected a scalar"):
        tx.update(updates, state, value=jnp.ones(2))
