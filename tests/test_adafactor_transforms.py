"""Adafactor's public transforms: ``adafactor()`` is their chain, and users can recompose them.

Parity with ``transformers.Adafactor`` is parity_tests/test_adafactor.py's; here the chain built
by hand is ``adafactor()`` bit for bit, a stage can be swapped, and each transform refuses bad
hyperparameters when built.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_bertadam as ob

STEPS = 4


def make_params(dtype):
    rng = np.random.default_rng(0)
    return {"dense": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), dtype),
                      "bias": jnp.asarray(rng.normal(size=(4,)), dtype)},
            "LayerNorm": {"scale": jnp.asarray(rng.normal(size=(4,)), dtype)}}


def run(tx, dtype):
    """``STEPS`` jitted updates on fixed gradients: (every update, the final state)."""
    params = make_params(dtype)
    state = tx.init(params)
    step = jax.jit(tx.update)
    rng = np.random.default_rng(1)
    seen = []
    for _ in range(STEPS):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
        seen.append(updates)
    return seen, state


def assert_same_bits(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        assert x.dtype == y.dtype and bool(jnp.array_equal(x, y)), (x, y)


def by_hand(*, learning_rate=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8,
            beta1=None, weight_decay=0.0, scale_parameter=True, warmup_init=False, mask=None,
            momentum=None):
    """The chain of adafactor()'s docstring, written as a user would (relative_step is
    learning_rate=None); ``momentum`` replaces the first moment."""
    rate = dict(learning_rate=learning_rate, warmup_init=warmup_init,
                scale_parameter=scale_parameter, eps2=eps[1])
    if momentum is None:
        momentum = optax.identity() if beta1 is None else ob.ema_of_updates(beta1)
    return ob.compute_in_float32(optax.chain(
        ob.scale_by_factored_rms(decay_rate, eps[0], clip_threshold),
        ob.scale_by_adafactor_step_size(**rate),
        momentum,
        ob.add_decayed_weights_at_adafactor_step_size(weight_decay, **rate, mask=mask),
        optax.scale(-1.0),
    ))


CONFIGS = {
    "defaults": dict(),
    "warmup_init-beta1-masked-decay": dict(warmup_init=True, beta1=0.9, weight_decay=0.1,
                                           mask=ob.decay_mask),
    "manual-schedule-unscaled": dict(learning_rate=optax.linear_schedule(0.0, 0.01, 3),
                                     relative_step=False, scale_parameter=False, beta1=0.8,
                                     clip_threshold=0.5),
    "manual-constant-decay": dict(learning_rate=0.003, relative_step=False, eps=(1e-20, 1e-2),
                                  decay_rate=-0.5, weight_decay=0.02, beta1=0.0),
}


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("name", CONFIGS)
def test_adafactor_is_its_chain_bit_for_bit(name, dtype):
    kwargs = CONFIGS[name]
    hand_kwargs = {k: v for k, v in kwargs.items() if k != "relative_step"}
    with jax.enable_x64(dtype == "float64"):
        jdtype = getattr(jnp, dtype)
        got, got_state = run(ob.adafactor(**kwargs), jdtype)
        want, want_state = run(by_hand(**hand_kwargs), jdtype)
        assert_same_bits(got, want)
        assert_same_bits(got_state, want_state)
        assert jax.tree.structure(got_state) == jax.tree.structure(want_state)
        assert float(ob.get_lr(got_state)) == float(ob.get_lr(want_state))
        assert {u.dtype for u in jax.tree.leaves(got[-1])} == {jnp.dtype(jdtype)}


def test_the_first_moment_can_be_swapped():
    """optax.ema without debiasing is Adafactor's first moment (bit for bit); another momentum
    (Nesterov's trace) runs in its place, and the rate is still read from the state."""
    kwargs = dict(beta1=0.9, weight_decay=0.05, warmup_init=True)
    want, want_state = run(ob.adafactor(**kwargs), jnp.float32)
    swapped, swapped_state = run(by_hand(**kwargs, momentum=optax.ema(0.9, debias=False)),
                                 jnp.float32)
    assert_same_bits(swapped, want)
    nesterov, state = run(by_hand(**kwargs, momentum=optax.trace(0.9, nesterov=True)), jnp.float32)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(nesterov))
    assert not bool(jnp.array_equal(nesterov[-1]["dense"]["kernel"], want[-1]["dense"]["kernel"]))
    assert float(ob.get_lr(state)) == float(ob.get_lr(want_state)) == pytest.approx(5e-6)


def test_compute_in_float32_rounds_once():
    """bfloat16 gradients: the wrapped stage computes in float32 and rounds its output once."""
    params = make_params(jnp.float32)
    grads = jax.tree.map(lambda p: (p * 3.0).astype(jnp.bfloat16), params)
    inner = optax.chain(ob.scale_by_adafactor_step_size(scale_parameter=False), optax.scale(1 / 3))
    wrapped = ob.compute_in_float32(inner)
    got, _ = wrapped.update(grads, wrapped.init(params), params)
    in_float32, _ = inner.update(jax.tree.map(lambda g: g.astype(jnp.float32), grads),
                                 inner.init(params), params)
    assert_same_bits(got, jax.tree.map(lambda u: u.astype(jnp.bfloat16), in_float32))


def test_decay_and_step_size_share_the_rate():
    """The decay is weight_decay * alpha_t * p with the step size's per-tensor alpha_t."""
    params = {"w": jnp.full((2, 3), 2.0), "b": jnp.full((3,), 0.5)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    ones = jax.tree.map(jnp.ones_like, params)
    step = ob.scale_by_adafactor_step_size(warmup_init=True)
    decay = ob.add_decayed_weights_at_adafactor_step_size(0.1, warmup_init=True)
    scaled, step_state = step.update(ones, step.init(params), params)
    decayed, _ = decay.update(zeros, decay.init(params), params)
    for name in params:
        rate = step_state.applied_learning_rates[name]
        assert float(rate) == pytest.approx(1e-6 * max(1e-3, float(params[name].ravel()[0])))
        np.testing.assert_array_equal(scaled[name], jnp.full(params[name].shape, rate))
        np.testing.assert_allclose(decayed[name], 0.1 * rate * params[name], rtol=1e-6)


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: ob.scale_by_factored_rms(decay_rate=0.5), ValueError,
         r"decay_rate=0\.5 is invalid: expected a value in \[-inf, 0\]"),
        (lambda: ob.scale_by_factored_rms(eps1=-1.0), ValueError, r"eps1=-1\.0 is invalid"),
        (lambda: ob.scale_by_factored_rms(clip_threshold=0.0), ValueError,
         r"clip_threshold=0\.0 is invalid"),
        (lambda: ob.scale_by_adafactor_step_size(0.01, warmup_init=True), ValueError,
         r"warmup_init=True is invalid with learning_rate=0\.01"),
        (lambda: ob.scale_by_adafactor_step_size(-0.1), ValueError, r"learning_rate=-0\.1 is invalid"),
        (lambda: ob.scale_by_adafactor_step_size(eps2=-1e-3), ValueError, r"eps2=-0\.001 is invalid"),
        (lambda: ob.scale_by_adafactor_step_size(scale_parameter="yes"), TypeError,
         "scale_parameter='yes' is invalid: expected True or False"),
        (lambda: ob.ema_of_updates(1.0), ValueError, r"beta1=1\.0 is invalid: expected a value in \[0, 1\)"),
        (lambda: ob.add_decayed_weights_at_adafactor_step_size(-0.1), ValueError,
         r"weight_decay=-0\.1 is invalid"),
        (lambda: ob.add_decayed_weights_at_adafactor_step_size(0.1, warmup_init=1), TypeError,
         "warmup_init=1 is invalid"),
        (lambda: ob.scale_by_adafactor_step_size(lr=0.1), TypeError, "learning_rate=0.1"),
    ],
)
def test_bad_hyperparameters_are_refused_when_built(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_update_without_params_is_refused_only_where_they_are_needed():
    params = {"w": jnp.ones((2, 2))}
    step = ob.scale_by_adafactor_step_size()
    with pytest.raises(ValueError, match="scale_by_adafactor_step_size needs the parameters"):
        step.update(params, step.init(params))
    unscaled = ob.scale_by_adafactor_step_size(0.1, scale_parameter=False)
    updates, _ = unscaled.update(params, unscaled.init(params))
    np.testing.assert_allclose(updates["w"], jnp.full((2, 2), 0.1), rtol=1e-6)
    decay = ob.add_decayed_weights_at_adafactor_step_size(0.1)
    with pytest.raises(ValueError, match="needs the parameters"):
        decay.update(params, decay.init(params))
    with pytest.raises(ValueError, match="mask does not match the parameters"):
        ob.add_decayed_weights_at_adafactor_step_size(0.1, mask={"v": True}).init(params)
