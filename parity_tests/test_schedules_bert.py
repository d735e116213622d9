"""The six BertAdam schedules against torch_ref's (upstream's arithmetic in Python doubles)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import torch_ref
from optax_bertadam.schedules import bert
from parity_tests import harness

KWARGS = {
    "warmup_linear_decay_exp": {"decay_rate": 0.95, "decay_steps": 7.0},
    "warmup_exp_decay_exp": {"decay_rate": 0.9, "decay_steps": 13.0, "degree": 3.0},
    "warmup_exp_decay_poly": {"warm_degree": 1.5, "degree": 2.5},
}
# Tolerances (harness.LR_TOL): float32 1e-6 of the larger of lr and the peak rate; float64 1e-12.


def reference(name, lr, t_total, warmup, counts, kwargs):
    return np.array([lr * torch_ref.schedule_multiplier(name, int(c), t_total, warmup, kwargs)
                     for c in counts])


def compare(name, lr, t_total, warmup, counts, dtype):
    kwargs = KWARGS.get(name)
    expected = reference(name, lr, t_total, warmup, counts, kwargs)
    return harness.check_schedule(
        "lr error",
        lambda: bert.bert_schedule(name, lr, t_total, warmup, schedule_kwargs=kwargs),
        expected, dtype, counts=counts, peak=lr,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("warmup", [-1, 0.0, 0.1, 0.5])
@pytest.mark.parametrize("name", bert.SCHEDULE_NAMES)
def test_schedule_matches_reference_through_warmup_decay_and_past_the_end(name, warmup, dtype):
    t_total = 200
    counts = np.arange(0, int(1.5 * t_total))
    compare(name, 3e-4, t_total, warmup, counts, dtype)


# Stratified: every schedule x warmup kind (-1, 0, fractional) x dtype is a test of its own, and
# every example draws a count in each range of the schedule (warmup when there is one, decay, past
# t_total), so each stratum is drawn in every run. Under the "ci" profile (run_tests.sh) the
# examples are the same on every run; `bash run_tests.sh --hypothesis-profile thorough` draws new,
# many more of them.
EXAMPLES_PER_STRATUM = {"thorough": 50}.get(settings.get_current_profile_name(), 2)
WARMUP_KINDS = ("-1", "0", "fractional")
# warmup_*_decay_exp: decay_rate ** (steps / decay_steps) underflows float32 for long schedules:
# keep 2 * t_total within 1000 steps, where float32 still represents the rate.
MAX_T_TOTAL = {"warmup_linear_decay_exp": 500, "warmup_exp_decay_exp": 500}


@st.composite
def schedule_cases(draw, name, warmup_kind):
    """(t_total, warmup, counts): counts hold one count of each range of the schedule."""
    t_total = draw(st.integers(2, MAX_T_TOTAL.get(name, 100_000)))
    if warmup_kind == "fractional":
        # Up to (t_total - 1) / t_total so that decay has at least one step; below 1 / t_total
        # only count 0 is in warmup.
        warmup = draw(st.floats(0.0, (t_total - 1) / t_total, exclude_min=True))
    else:
        warmup = float(warmup_kind)
    boundary = bert.warmup_end_count(t_total, warmup)
    ranges = [(0, boundary - 1)] if boundary > 0 else []
    ranges += [(boundary, t_total - 1), (t_total, 2 * t_total)]
    counts = sorted({draw(st.integers(low, high)) for low, high in ranges})
    return t_total, warmup, np.array(counts)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("warmup_kind", WARMUP_KINDS)
@pytest.mark.parametrize("name", bert.SCHEDULE_NAMES)
@settings(max_examples=EXAMPLES_PER_STRATUM, deadline=None)
@given(data=st.data())
def test_random_counts_warmups_and_totals(name, warmup_kind, dtype, data):
    t_total, warmup, counts = data.draw(schedule_cases(name, warmup_kind))
    boundary = bert.warmup_end_count(t_total, warmup)
    in_range = [counts < boundary, (counts >= boundary) & (counts < t_total), counts >= t_total]
    assert all(mask.any() for mask in in_range[0 if boundary > 0 else 1:]), (counts, boundary)
    compare(name, 1e-3, t_total, warmup, counts, dtype)


WARMUPS = [0.01, 0.06, 0.07, 0.1, 0.11, 0.13, 0.2, 0.29, 0.3, 0.33, 0.35, 0.57, 0.7, 0.9, 0.99]
T_TOTALS = [3, 7, 10, 29, 49, 100, 333, 1000, 4999, 12345, 100_000, 1_000_003]


def naive_float32_boundary_disagrees(t_total, warmup):
    """Whether a jitted float32 ``count / t_total < warmup`` misplaces the end of warmup.

    XLA rewrites a division by a constant as a multiplication by its reciprocal, which is not
    correctly rounded: e.g. t_total=100, warmup=0.1 puts count 10 inside warmup.
    """
    naive = jax.jit(lambda c: jnp.asarray(c, jnp.float32) / t_total < warmup)
    boundary = bert.warmup_end_count(t_total, warmup)
    return any(bool(naive(c)) != (c / t_total < warmup) for c in (boundary - 1, boundary) if c >= 0)


def test_the_boundary_grid_contains_cases_a_float32_comparison_gets_wrong():
    # Without such cases the test below could not fail.
    wrong = [(t, w) for t in T_TOTALS for w in WARMUPS if naive_float32_boundary_disagrees(t, w)]
    assert len(wrong) >= 3, wrong


@pytest.mark.parametrize("name", ["warmup_linear", "warmup_constant", "warmup_exp_decay_poly"])
def test_float32_warmup_boundary_is_decided_as_in_double_precision(name):
    kwargs = KWARGS.get(name)
    worst = 0.0
    for t_total in T_TOTALS:
        for warmup in WARMUPS:
            boundary = bert.warmup_end_count(t_total, warmup)
            counts = np.array([c for c in range(boundary - 2, boundary + 3) if c >= 0])
            fn = bert.bert_schedule(name, 1.0, t_total, warmup, schedule_kwargs=kwargs)
            got = np.asarray(jax.vmap(fn)(jnp.asarray(counts)), dtype=np.float64)
            expected = reference(name, 1.0, t_total, warmup, counts, kwargs)
            worst = max(worst, float(np.max(np.abs(got - expected))))
    # A wrong branch at the boundary costs ~warmup (warmup_linear drops from 1 to 1 - warmup).
    harness.assert_within("boundary error", worst, 1e-6)


def test_warmup_end_count_is_the_double_precision_decision():
    for t_total in T_TOTALS:
        for warmup in WARMUPS + [-1, 0.0]:
            boundary = bert.warmup_end_count(t_total, warmup)
            assert not boundary / t_total < warmup
            assert boundary == 0 or (boundary - 1) / t_total < warmup


def test_faithful_quirks():
    lin = bert.bert_schedule("warmup_linear", 1.0, 100, 0.1)
    # Drops from 1 to 1 - warmup at the end of warmup, and goes negative past t_total.
    assert float(lin(9)) == pytest.approx(0.9)
    assert float(lin(10)) == pytest.approx(0.9)
    assert float(lin(150)) == pytest.approx(-0.5)
    clamped = bert.bert_schedule("warmup_linear", 1.0, 100, 0.1, clamp_at_zero=True)
    assert float(clamped(150)) == 0.0 and float(clamped(50)) == pytest.approx(0.5)
    # warmup == 0: constant 1; t_total == -1: constant lr.
    assert float(bert.bert_schedule("warmup_linear", 2.0, 100, 0.0)(150)) == 2.0
    assert float(bert.bert_schedule("warmup_cosine", 2.0, -1, 0.1)(5)) == 2.0
    # Fixed defect: warmup_cosine after warmup is the cosine, not a TypeError.
    assert float(bert.warmup_cosine(0.5, 0.1)) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_multiplier_functions_jit_and_vmap():
    xs = jnp.linspace(0.0, 1.2, 13)
    for name in ("warmup_cosine", "warmup_constant", "warmup_linear"):
        fn = bert.SCHEDULES[name]
        vals = jax.jit(jax.vmap(lambda x, fn=fn: fn(x, 0.1)))(xs)
        expected = [getattr(torch_ref.bertadam, name)(float(x), 0.1) for x in np.asarray(xs)]
        np.testing.assert_allclose(vals, expected, rtol=1e-6, atol=1e-6)
