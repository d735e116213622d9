"""Float32 helpers that claim to be within a few ulp of double precision, tested against it.

Each helper is compared over its whole useful range with the value computed in Python double
(what PyTorch, Keras and the published code compute on the host), and the error is stated in
float32 ulps of the exact value (of 1 for the rates in [0, 1]). The porter's version of each
helper (the formula typed in float32) is measured too: the bound must separate the two, or the
test could not catch the mistake it exists for.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_bertadam import transforms
from optax_bertadam.schedules import bert
from optax_bertadam.schedules import transformers as hf
from parity_tests import harness

COUNTS = np.unique(np.concatenate([np.arange(1, 2001), np.geomspace(2000, 2**24 - 1, 400).astype(int)]))
EPS32 = float(np.finfo(np.float32).eps)  # the ulp of 1.0


def ulps_of(exact):
    """The float32 spacing at each exact value (float64 numpy)."""
    return np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)


@pytest.mark.parametrize("base", [0.0, 0.5, 0.9, 0.95, 0.98, 0.99, 0.999, 0.9999, 0.99999])
def test_one_minus_power_is_within_a_few_ulp_of_double(base):
    counts = jnp.asarray(COUNTS, jnp.float32)
    got = np.asarray(jax.jit(lambda t: transforms.one_minus_power(base, t))(counts), np.float64)
    exact = np.array([1.0 - base ** int(t) for t in COUNTS])
    error = float(np.max(np.abs(got - exact) / ulps_of(exact)))
    # The porter's float32 1 - b**t (b rounded to float32 first).
    naive = np.asarray(jax.jit(lambda t: 1.0 - jnp.float32(base) ** t)(counts), np.float64)
    naive_error = float(np.max(np.abs(naive - exact) / ulps_of(exact)))
    print(f"one_minus_power({base}, t): {error:.2f} ulp; float32 1 - b**t: {naive_error:.3g} ulp")
    # Measured: at most 5.4 ulp (b = 0.999); the float32 formula: 16 to 24000 ulp for b >= 0.98
    # (Adam's b2), within the bound for b <= 0.95 (b^t underflows the error away).
    harness.assert_within("ulp error", error, 8.0)
    if base >= 0.98:
        assert naive_error > 2 * 8.0


@pytest.mark.parametrize("length, num_cycles", [(100, 0.5), (1000, 0.5), (4999, 1.0), (333, 3.7),
                                                (77, 0.25)])
def test_transformers_cosine_wave_stays_within_a_few_ulps_far_past_the_end(length, num_cycles):
    steps = np.arange(0, 10 * length + 1)
    got = np.asarray(jax.jit(lambda s: hf._cosine_wave(s, length, num_cycles))(jnp.asarray(steps)),
                     np.float64)
    exact = np.array([0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * s / length))
                      for s in steps])
    error = float(np.max(np.abs(got - exact))) / EPS32
    naive = np.asarray(jax.jit(lambda s: 0.5 * (1.0 + jnp.cos(
        2.0 * math.pi * num_cycles * s.astype(jnp.float32) / length)))(jnp.asarray(steps)), np.float64)
    naive_error = float(np.max(np.abs(naive - exact))) / EPS32
    print(f"_cosine_wave(L={length}, cycles={num_cycles}), 10 L steps: {error:.2f} ulp of 1; "
          f"float32 formula: {naive_error:.3g}")
    harness.assert_within("ulp error", error, 4.0)


@pytest.mark.parametrize("rate, offset", [(0.5 / 90, 0.5 * 0.1 / 0.9), (3.5 / 980, 3.5 * 0.02 / 0.98),
                                          (2.0 / 77, 0.0), (1 / 3, 0.0), (0.0123456789, 7.25)])
def test_fractional_turns_is_within_a_few_ulps_of_one_turn(rate, offset):
    got = np.asarray(jax.jit(lambda c: bert._fractional_turns(c, rate, offset))(jnp.asarray(COUNTS)),
                     np.float64)
    exact = np.array([math.fmod(int(c) * rate - offset, 1.0) for c in COUNTS]) % 1.0
    # Distance on the circle: 0.9999999 and 0.0 are one ulp apart as turns.
    distance = np.abs(got - exact)
    error = float(np.max(np.minimum(distance, 1.0 - distance))) / EPS32
    naive = np.asarray(jax.jit(lambda c: (c.astype(jnp.float32) * rate - offset) % 1.0)(
        jnp.asarray(COUNTS)), np.float64)
    naive_distance = np.abs(naive - exact)
    naive_error = float(np.max(np.minimum(naive_distance, 1.0 - naive_distance))) / EPS32
    print(f"_fractional_turns(rate={rate:.4g}, offset={offset:.4g}): {error:.2f} ulp of 1; "
          f"float32 formula: {naive_error:.3g}")
    harness.assert_within("ulp error", error, 4.0)
    assert naive_error > 10 * 4.0


@pytest.mark.parametrize("warmup, total", [(0, 100), (10, 100), (7, 77), (1000, 1_000_003)])
def test_transformers_linear_decay_is_within_an_ulp_of_torch(warmup, total):
    counts = np.unique(np.concatenate([np.arange(warmup, min(total, warmup + 3000)),
                                       np.linspace(warmup, total, 500).astype(int)]))
    fn = hf.get_linear_schedule_with_warmup(1.0, warmup, total)
    got = np.asarray(jax.jit(jax.vmap(fn))(jnp.asarray(counts)), np.float64)
    exact = np.array([max(0.0, float(total - c) / float(max(1, total - warmup))) for c in counts])
    nonzero = exact > 0
    error = float(np.max(np.abs(got - exact)[nonzero] / ulps_of(exact[nonzero])))
    print(f"linear decay (w={warmup}, T={total}): {error:.2f} ulp")
    # The source says "within an ulp"; XLA turns the division by the constant T - w into a
    # product with its rounded reciprocal: measured 1.41 ulp (w=1000, T=1000003), at most 1.5 in theory.
    harness.assert_within("ulp error", error, 1.5)
