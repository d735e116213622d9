"""AdamW: optax_bertadam.adamw against the real torch.optim.AdamW and torch_ref.AdamW."""

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
# 3.4e-6 and 2.5e-15; 7.4e-7 against torch.optim.AdamW itself); get_lr within 1e-6 of the peak
# rate in float32 (the rate is a float32 there; measured 6.1e-8) and 1e-12 in float64 (measured
# 1.7e-16).
DTYPES = ["float32", "float64"]
STEPS = 120  # the schedule warms up for 10 updates, decays to 0 at 100, then stays at 0
LR = 0.01
WARMUP, TOTAL = 10, 100


jax_schedule, torch_lambda = harness.linear_warmup_then_decay(LR, WARMUP, TOTAL)




def run(dtype, make_torch_optimizer, *, scheduled=True, masked=True, weight_decay=0.05, **kwargs):
    """adamw(**kwargs) against ``make_torch_optimizer(param_groups, lr=...)`` (+ LambdaLR)."""

    def make_optax(params):
        mask = ob.decay_mask(params) if masked else None
        rate = jax_schedule if scheduled else LR
        return optimizers.adamw(rate, weight_decay=weight_decay, mask=mask, **kwargs)

    def make_torch(named):
        groups = harness.torch_param_groups(named, weight_decay if masked else None)
        opt = make_torch_optimizer(groups, lr=LR, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, torch_lambda) if scheduled else None
        return harness.TorchSide(opt, scheduler, next_lr=lambda: opt.param_groups[0]["lr"])

    return harness.run_parity(make_optax, make_torch, dtype=dtype, steps=STEPS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [None, True], ids=["default", "foreach"])
def test_against_torch_adamw(foreach, dtype):
    """correct_bias=True is torch.optim.AdamW: masked decay, a LambdaLR past its end."""

    def make(groups, **kw):
        return torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-6, foreach=foreach, **kw)

    harness.check_result(run(dtype, make), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_without_bias_correction(dtype):
    """correct_bias=False (BERT TF flavour) against torch_ref.AdamW."""

    def make(groups, **kw):
        return ref.AdamW(groups, correct_bias=False, **kw)

    harness.check_result(run(dtype, make, correct_bias=False), dtype)


@pytest.mark.parametrize(
    "variant",
    [
        dict(dtype="float32", b1=0.8, b2=0.95, eps=1e-8, masked=False, scheduled=False),
        dict(dtype="float64", b1=0.0, b2=0.5, eps=0.0, weight_decay=0.0, correct_bias=False),
        dict(dtype="float64", b1=0.5, b2=0.9, eps=1e-3, weight_decay=0.3, scheduled=False),
    ],
    ids=["betas-constant-unmasked", "edge-betas-no-bias", "large-eps-decay"],
)
def test_hyperparameter_variants(variant):
    variant = dict(variant)
    dtype = variant.pop("dtype")
    b1, b2, eps = variant.pop("b1"), variant.pop("b2"), variant.pop("eps")
    correct_bias = variant.get("correct_bias", True)

    def make(groups, **kw):
        return ref.AdamW(groups, betas=(b1, b2), eps=eps, correct_bias=correct_bias, **kw)

    harness.check_result(run(dtype, make, b1=b1, b2=b2, eps=eps, **variant), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_equals_torch_adamw(dtype):
    """torch_ref.AdamW(correct_bias=True) repeats torch.optim.AdamW's arithmetic bit for bit."""
    init = harness.initial_params(3)
    grads = harness.gradient_stream(100, seed=4)
    sides = []
    for cls in (torch.optim.AdamW, ref.AdamW):
        named = {n: torch.nn.Parameter(torch.tensor(v, dtype=dtype)) for n, v in init.items()}
        opt = cls(harness.torch_param_groups(named, 0.05), lr=LR, eps=1e-6)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, torch_lambda)
        for step_grads in grads:
            for name, p in named.items():
                p.grad = torch.tensor(step_grads[name], dtype=dtype)
            opt.step()
            scheduler.step()
        sides.append({n: p.detach().numpy() for n, p in named.items()})
    for name in init:
        np.testing.assert_array_equal(sides[0][name], sides[1][name], err_msg=name)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(learning_rate=-1e-3), ValueError,
         r"learning_rate=-0\.001 is invalid: expected a value in \[0, inf\]"),
        (dict(learning_rate="1e-3"), TypeError, "learning_rate='1e-3' is invalid: expected a real number"),
        (dict(b1=1.0), ValueError, r"b1=1\.0 is invalid: expected a value in \[0, 1\)"),
        (dict(b1=-0.1), ValueError, r"b1=-0\.1 is invalid"),
        (dict(b2=1.5), ValueError, r"b2=1\.5 is invalid: expected a value in \[0, 1\)"),
        (dict(eps=-1e-6), ValueError, r"eps=-1e-06 is invalid: expected a value in \[0, inf\]"),
        (dict(eps=float("nan")), ValueError, "eps=nan is invalid"),
        (dict(weight_decay=-0.01), ValueError, r"weight_decay=-0\.01 is invalid"),
        (dict(correct_bias=1), TypeError, "correct_bias=1 is invalid: expected True or False"),
        (dict(correct_bias="no"), TypeError, "correct_bias='no' is invalid"),
    ],
)
def test_argument_errors(kwargs, error, match):
    kwargs = {"learning_rate": 1e-3, **kwargs}
    with pytest.raises(error, match=match):
        optimizers.adamw(**kwargs)


def test_mask_mismatch_is_reported_at_init():
    params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    tx = optimizers.adamw(1e-3, weight_decay=0.1, mask={"w": True})
    with pytest.raises(ValueError, match=r"^mask does not match the parameters"):
        tx.init(params)


def test_get_lr_reads_the_next_rate():
    params = {"w": jnp.ones(3)}
    tx = optimizers.adamw(jax_schedule)
    state = tx.init(params)
    update = jax.jit(tx.update)
    assert float(ob.get_lr(state)) == pytest.approx(LR * torch_lambda(0))
    for k in range(1, 13):
        _, state = update({"w": jnp.ones(3)}, state, params)
        assert float(ob.get_lr(state)) == pytest.approx(LR * torch_lambda(k), rel=1e-6)
