"""Adagrad and RMSprop: optax_bertadam.adagrad / rmsprop against the real torch.optim classes.

Every option of each class, in float32 and float64, under a LambdaLR (warmup, decay, past its
end) with the no_decay group split, over the harness's tiny BERT; and ``from_torch`` reading a
live Adagrad / RMSprop whose two groups differ in every hyperparameter. Parameters after every
update: float32 within 2e-5 of each tensor's largest magnitude, float64 within 1e-12; rates
within 1e-6 (float32) and 1e-12 (float64) of the peak rate (harness bounds).
"""

from __future__ import annotations

import jax.numpy as jnp
import pytest
import torch

import optax_bertadam as ob
from parity_tests import harness
from parity_tests.group_harness import run_group_parity

STEPS = 40
LR = 0.02
WARMUP, TOTAL = 5, 30
jax_schedule, torch_lambda = harness.linear_warmup_then_decay(LR, WARMUP, TOTAL)


def run(dtype, factory, torch_class, *, weight_decay=0.05, scheduled=True, **kwargs):
    def make_optax(params):
        rate = jax_schedule if scheduled else LR
        return factory(rate, weight_decay=weight_decay, mask=ob.decay_mask(params), **kwargs)

    def make_torch(named):
        groups = harness.torch_param_groups(named, weight_decay)
        opt = torch_class(groups, lr=LR, **kwargs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, torch_lambda) if scheduled else None
        return harness.TorchSide(opt, scheduler, next_lr=lambda: opt.param_groups[0]["lr"])

    return harness.run_parity(make_optax, make_torch, dtype=dtype, steps=STEPS,
                              shapes=harness.SMALL_SHAPES)


ADAGRAD = {
    "defaults": dict(),
    "lr_decay": dict(lr_decay=0.05),
    "initial_accumulator_value-eps": dict(initial_accumulator_value=0.3, eps=1e-3),
    "constant-rate": dict(lr_decay=0.01, scheduled=False),
}
RMSPROP = {
    "defaults": dict(),
    "alpha-eps": dict(alpha=0.5, eps=1e-3),
    "momentum": dict(momentum=0.9),
    "centered": dict(centered=True, alpha=0.9),
    "centered-momentum-constant-rate": dict(centered=True, momentum=0.5, scheduled=False),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", list(ADAGRAD))
def test_adagrad_against_torch(variant, dtype):
    harness.check_result(run(dtype, ob.adagrad, torch.optim.Adagrad, **ADAGRAD[variant]), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", list(RMSPROP))
def test_rmsprop_against_torch(variant, dtype):
    harness.check_result(run(dtype, ob.rmsprop, torch.optim.RMSprop, **RMSPROP[variant]), dtype)


def _two_groups(named, **second):
    decay = [p for n, p in named.items() if not any(nd in n for nd in harness.TORCH_NO_DECAY)]
    no_decay = [p for n, p in named.items() if any(nd in n for nd in harness.TORCH_NO_DECAY)]
    return [{"params": decay}, {"params": no_decay, **second}]


FROM_TORCH = {
    "Adagrad": lambda named: torch.optim.Adagrad(
        _two_groups(named, lr=0.05, lr_decay=0.1, weight_decay=0.0, eps=1e-4,
                    initial_accumulator_value=0.5),
        lr=0.02, lr_decay=0.01, weight_decay=0.02, initial_accumulator_value=0.1),
    "RMSprop": lambda named: torch.optim.RMSprop(
        _two_groups(named, lr=0.005, alpha=0.8, eps=1e-4, weight_decay=0.0, momentum=0.0,
                    centered=False),
        lr=0.01, alpha=0.95, weight_decay=0.02, momentum=0.9, centered=True),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(FROM_TORCH))
def test_from_torch_reads_two_groups(name, dtype):
    """Two groups whose every hyperparameter differs, under get_scheduler('cosine')."""
    import transformers

    def make_torch(named):
        optimizer = FROM_TORCH[name](named)
        scheduler = transformers.get_scheduler("cosine", optimizer, num_warmup_steps=4,
                                               num_training_steps=20)
        side = harness.TorchSide(optimizer, scheduler, scheduler.get_last_lr)
        side.named = list(named.items())
        return side

    def make_optax(params, side):
        return ob.from_torch(side.optimizer, side.scheduler, named_parameters=side.named,
                             params=params)

    param_error, lr_error = run_group_parity(make_torch, make_optax, dtype=dtype, steps=24,
                                             shapes=harness.SMALL_SHAPES)
    harness.assert_within("param error", param_error, harness.PARAM_TOL[dtype])
    harness.assert_within("lr error", lr_error, harness.LR_TOL[dtype])


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.Adagrad(p, maximize=True),
    lambda p: torch.optim.RMSprop(p, maximize=True),
    lambda p: torch.optim.Adagrad(p, fused=True),
], ids=["Adagrad-maximize", "RMSprop-maximize", "Adagrad-fused"])
def test_from_torch_refuses(make):
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="maximize|fused"):
        ob.from_torch(make(model.parameters()), named_parameters=model.named_parameters(),
                      params={"weight": jnp.zeros((1, 2)), "bias": jnp.zeros(1)})


@pytest.mark.parametrize(("factory", "kwargs", "name"), [
    (ob.adagrad, dict(lr_decay=-0.1), "lr_decay"),
    (ob.adagrad, dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (ob.adagrad, dict(eps=-1.0), "eps"),
    (ob.rmsprop, dict(alpha=-0.5), "alpha"),
    (ob.rmsprop, dict(momentum=-0.5), "momentum"),
    (ob.rmsprop, dict(weight_decay=-0.5), "weight_decay"),
])
def test_bad_arguments_are_refused_when_built(factory, kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        factory(0.1, **kwargs)
