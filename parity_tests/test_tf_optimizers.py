"""transformers' TF optimizers: adam_weight_decay / warmup / create_optimizer against torch_ref twins.

No TensorFlow is installed: torch_ref implements the Keras formulas (``ApplyAdam``, PolynomialDecay,
WarmUp, AdamWeightDecay's name-based decay) in PyTorch on the host, in double for the scalars.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_bertadam as ob
import torch_ref.optimizers as ref
from optax_bertadam import optimizers
from parity_tests import harness

# Parameters within 2e-5 of each tensor's scale in float32 and 1e-12 in float64 (measured worst:
# 1.2e-6 and 2.3e-15); get_lr within 1e-6 of the peak rate in float32 (the rate is a float32 there;
# measured 1.0e-7) and 1e-12 in float64 (measured 3.5e-16).

DTYPES = ["float32", "float64"]
STEPS = 120  # num_train_steps=100 below: warmup, decay, then 20 updates past the end


def tf_names(named):
    """TensorFlow-style ``/``-joined names, as optax_bertadam names the JAX leaves."""
    return [(name.replace(".", "/"), p) for name, p in named.items()]




def run_create_optimizer(dtype, **kwargs):
    def make_optax(params):
        tx, _ = optimizers.create_optimizer(**kwargs)
        return tx

    def make_torch(named):
        opt, _ = ref.create_optimizer(tf_names(named), **kwargs)
        return harness.TorchSide(opt, next_lr=opt.decayed_lr)

    return harness.run_parity(make_optax, make_torch, dtype=dtype, steps=STEPS)


@pytest.mark.parametrize("dtype", DTYPES)
def test_create_optimizer_with_weight_decay(dtype):
    """AdamWeightDecay excluding LayerNorm/bias, linear warmup, linear decay to 0, past the end."""
    result = run_create_optimizer(
        dtype, init_lr=0.01, num_train_steps=100, num_warmup_steps=10, weight_decay_rate=0.05
    )
    harness.check_result(result, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_create_optimizer_plain_adam(dtype):
    """weight_decay_rate=0: Keras Adam; no warmup, power-2 decay to init_lr * min_lr_ratio."""
    result = run_create_optimizer(
        dtype, init_lr=0.02, num_train_steps=100, num_warmup_steps=0, min_lr_ratio=0.1,
        power=2.0, adam_beta1=0.8, adam_beta2=0.99, adam_epsilon=1e-6,
    )
    harness.check_result(result, dtype)


def test_create_optimizer_include_in_weight_decay():
    """include_in_weight_decay wins over the LayerNorm/bias exclusion (regexes on the names)."""
    result = run_create_optimizer(
        "float64", init_lr=0.01, num_train_steps=100, num_warmup_steps=25, weight_decay_rate=0.2,
        include_in_weight_decay=[r"LayerNorm/weight$", "query/bias"],
    )
    harness.check_result(result, "float64")


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_weight_decay_amsgrad(dtype):
    """amsgrad, a constant rate, a custom exclusion list."""
    kwargs = dict(learning_rate=0.005, beta_1=0.8, beta_2=0.95, epsilon=1e-7, amsgrad=True,
                  weight_decay_rate=0.1, exclude_from_weight_decay=["bias", "temperature"])

    def make_optax(params):
        return optimizers.adam_weight_decay(**kwargs)

    def make_torch(named):
        opt = ref.AdamWeightDecay(tf_names(named), **kwargs)
        return harness.TorchSide(opt, next_lr=opt.decayed_lr)

    harness.check_result(harness.run_parity(make_optax, make_torch, dtype=dtype, steps=STEPS), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_warmup_schedule_values(dtype):
    """warmup(...) equals the WarmUp twin at every count, power 1 and 2, around both boundaries."""
    counts = np.arange(0, 160)
    decay = ref.PolynomialDecay(0.01, 90, end_learning_rate=0.001, power=0.5)
    # (90 - min(c, 90)) / 90 rather than 1 - min(c, 90) / 90: see _keras_polynomial_decay.
    jax_decay = lambda c: 0.009 * jnp.power((90 - jnp.minimum(jnp.asarray(c, float), 90)) / 90, 0.5) + 0.001
    with jax.enable_x64(dtype == "float64"):
        for power in (1.0, 2.0):
            twin = ref.WarmUp(0.01, decay, warmup_steps=10, power=power)
            schedule = jax.jit(jax.vmap(optimizers.warmup(0.01, jax_decay, 10, power=power)))
            ours = np.asarray(schedule(jnp.asarray(counts)), dtype=np.float64)
            expected = np.array([twin(int(c)) for c in counts])
            np.testing.assert_allclose(ours, expected, rtol=harness.LR_TOL[dtype], atol=0)


def test_regex_mask_matches_do_use_weight_decay():
    """The decay decisions of the JAX side equal the twin's _do_use_weight_decay per name."""
    params = harness.nest({n: 0.0 for n in harness.PARAM_SHAPES})
    names = ob.parameter_names(params)
    for include, exclude in [(None, list(optimizers.KERAS_NO_DECAY)), (["LayerNorm/bias"], ["LayerNorm"]),
                             (None, None), (["^pooler"], [".*"])]:
        decider = ref.AdamWeightDecay([("x", torch.nn.Parameter(torch.zeros(1)))],
                                      weight_decay_rate=0.1, include_in_weight_decay=include,
                                      exclude_from_weight_decay=exclude)
        expected = [decider._do_use_weight_decay(n) for n in names]
        mask = jax.tree.leaves(ob.regex_decay_mask(params, include=include, exclude=exclude))
        assert mask == expected, (include, exclude)


def test_get_lr_is_the_schedule_at_the_update_count():
    tx, schedule = optimizers.create_optimizer(1e-3, num_train_steps=20, num_warmup_steps=5)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for k in range(25):
        # Inside and outside jit XLA may round the float32 rate differently: 1e-6 relative.
        assert float(ob.get_lr(state)) == pytest.approx(float(schedule(k)), rel=1e-6, abs=1e-12)
        _, state = update(params, state, params)
    assert float(schedule(0)) == 0.0 and float(schedule(5)) == pytest.approx(1e-3)
    assert float(schedule(20)) == 0.0 and float(schedule(1000)) == 0.0


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_polynomial_decay_ends_exactly_at_the_end_rate(power):
    """Fractional powers reach init_lr * min_lr_ratio, not NaN, at and after num_train_steps."""
    _, schedule = optimizers.create_optimizer(
        1e-3, num_train_steps=90, num_warmup_steps=0, min_lr_ratio=0.1, power=power
    )
    rates = np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(200)))
    assert np.all(np.isfinite(rates))
    np.testing.assert_allclose(rates[90:], 1e-4, rtol=1e-6)
    twin = ref.PolynomialDecay(1e-3, 90, end_learning_rate=1e-4, power=power)
    np.testing.assert_allclose(rates, [twin(k) for k in range(200)], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(learning_rate=-1.0), ValueError,
         r"learning_rate=-1\.0 is invalid: expected a value in \[0, inf\]"),
        (dict(beta_1=1.0), ValueError, r"beta_1=1\.0 is invalid: expected a value in \[0, 1\)"),
        (dict(beta_2=-0.1), ValueError, r"beta_2=-0\.1 is invalid"),
        (dict(epsilon=-1e-7), ValueError, r"epsilon=-1e-07 is invalid"),
        (dict(amsgrad="yes"), TypeError, "amsgrad='yes' is invalid: expected True or False"),
        (dict(weight_decay_rate=-0.01), ValueError, r"weight_decay_rate=-0\.01 is invalid"),
        (dict(include_in_weight_decay="bias"), TypeError, "include_in_weight_decay='bias' is invalid"),
        (dict(exclude_from_weight_decay=["(bias"]), ValueError,
         r"exclude_from_weight_decay entry '\(bias' is not a valid regex"),
        (dict(include_in_weight_decay=[3]), ValueError,
         "include_in_weight_decay entry 3 is not a valid regex"),
    ],
)
def test_adam_weight_decay_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        optimizers.adam_weight_decay(**kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(initial_learning_rate=-0.1), ValueError, r"initial_learning_rate=-0\.1 is invalid"),
        (dict(decay_schedule_fn=0.1), TypeError, "decay_schedule_fn=0.1 is invalid: expected a schedule"),
        (dict(warmup_steps=-1), ValueError, "warmup_steps=-1 is invalid: expected an integer >= 0"),
        (dict(warmup_steps=2.5), TypeError, r"warmup_steps=2\.5 is invalid: expected an integer"),
        (dict(power=0.0), ValueError, r"power=0\.0 is invalid: expected a value in \(0, inf\]"),
        (dict(power=float("inf")), ValueError, "power=inf is invalid: expected a finite number"),
    ],
)
def test_warmup_argument_errors(kwargs, error, match):
    kwargs = {"initial_learning_rate": 0.1, "decay_schedule_fn": lambda c: 0.1, "warmup_steps": 10,
              **kwargs}
    with pytest.raises(error, match=match):
        optimizers.warmup(**kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(init_lr=-1e-3), ValueError, r"init_lr=-0\.001 is invalid"),
        (dict(num_train_steps=0), ValueError, "num_train_steps=0 is invalid: expected an integer >= 1"),
        (dict(num_train_steps="100"), TypeError, "num_train_steps='100' is invalid"),
        (dict(num_warmup_steps=-5), ValueError, "num_warmup_steps=-5 is invalid"),
        (dict(num_warmup_steps=100), ValueError,
         "num_warmup_steps=100 is invalid with num_train_steps=100: expected fewer warmup steps"),
        (dict(min_lr_ratio=-0.1), ValueError, r"min_lr_ratio=-0\.1 is invalid"),
        (dict(min_lr_ratio=float("inf")), ValueError, "min_lr_ratio=inf is invalid"),
        (dict(power=-1.0), ValueError, r"power=-1\.0 is invalid"),
        (dict(adam_beta1=1.0), ValueError, r"adam_beta1=1\.0 is invalid"),
        (dict(adam_epsilon=-1.0), ValueError, r"adam_epsilon=-1\.0 is invalid"),
        (dict(weight_decay_rate=-1.0), ValueError, r"weight_decay_rate=-1\.0 is invalid"),
        (dict(weight_decay_rate=0.1, include_in_weight_decay=["[bias"]), ValueError,
         "include_in_weight_decay entry"),
    ],
)
def test_create_optimizer_argument_errors(kwargs, error, match):
    kwargs = {"init_lr": 1e-3, "num_train_steps": 100, "num_warmup_steps": 10, **kwargs}
    with pytest.raises(error, match=match):
        optimizers.create_optimizer(**kwargs)
