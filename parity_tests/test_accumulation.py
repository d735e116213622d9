"""Gradient accumulation: optax_bertadam.gradient_accumulation against PyTorch's ``loss / k`` pattern.

PyTorch side, per micro-batch: ``(loss / k).backward()`` adds ``grad / k`` into ``p.grad``; every
``k`` micro-batches ``optimizer.step(); scheduler.step(); optimizer.zero_grad()``. The TensorFlow
side sums with ``GradientAccumulator`` (torch_ref twin) and applies the unscaled sum.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
import pytest
import torch
from transformers.optimization import Adafactor

import optax_bertadam as ob
import torch_ref
import torch_ref.optimizers as ref
from optax_bertadam import optimizers
from parity_tests import harness

# Parameters within 2e-5 of each tensor's scale in float32 and 1e-12 in float64 (measured worst:
# 7.6e-7 and 1.4e-15: optax averages with a running mean acc + (g - acc) / (n + 1), PyTorch sums
# grad / k; they agree to rounding); get_lr within 1e-6 / 1e-12 of the peak rate (measured 1.1e-7
# and 2.5e-16).
DTYPES = ["float32", "float64"]
K = 4
UPDATES = 100
MICRO_STEPS = K * UPDATES
# A slice of the harness's tiny BERT (every rank, decayed and no_decay names, the zero gradient of
# micro-step 3): MultiSteps compiles the inner optimizer inside a cond; fewer tensors, faster tests.
SHAPES = dict(harness.SMALL_SHAPES)


@dataclasses.dataclass
class LossOverK(harness.TorchSide):
    """The harness put micro-batch gradient g in p.grad; replay it as ``(loss / k).backward()``."""

    every_k: int = K
    params: list = dataclasses.field(default_factory=list)
    accumulated: list | None = None
    micro_steps: int = 0

    def step(self) -> None:
        micro_grads = [p.grad for p in self.params]
        for p, acc in zip(self.params, self.accumulated or [None] * len(self.params), strict=True):
            p.grad = acc
        # d/dp of sum(p * g) is g: backward accumulates g / k into p.grad, as autograd does.
        loss = sum((p * g).sum() for p, g in zip(self.params, micro_grads, strict=True))
        (loss / self.every_k).backward()
        self.micro_steps += 1
        if self.micro_steps % self.every_k == 0:
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.optimizer.zero_grad()
        self.accumulated = [p.grad for p in self.params]


@dataclasses.dataclass
class TFAccumulator(harness.TorchSide):
    """transformers' TF loop: accumulator(grads) per micro-batch; apply the sum and reset."""

    every_k: int = K
    params: list = dataclasses.field(default_factory=list)
    accumulator: ref.GradientAccumulator = dataclasses.field(default_factory=ref.GradientAccumulator)

    def step(self) -> None:
        self.accumulator([p.grad for p in self.params])
        if self.accumulator.step == self.every_k:
            for p, g in zip(self.params, self.accumulator.gradients, strict=True):
                p.grad = g
            self.optimizer.step()
            self.accumulator.reset()




def run(dtype, make_inner, make_torch_optimizer, *, side=LossOverK, average=True):
    """``gradient_accumulation(make_inner(params), K)`` against ``side`` over K * 100 micro-batches.

    ``make_torch_optimizer(named)`` returns ``(optimizer, scheduler, next_lr)``.
    """

    def make_optax(params):
        return optimizers.gradient_accumulation(make_inner(params), K, average=average)

    def make_torch(named):
        opt, scheduler, next_lr = make_torch_optimizer(named)
        return side(opt, scheduler, next_lr, params=list(named.values()))

    return harness.run_parity(make_optax, make_torch, dtype=dtype, steps=MICRO_STEPS, shapes=SHAPES)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bertadam(dtype):
    """BertAdam, per-tensor clipping of the averaged gradient, warmup_linear past t_total."""

    def make_torch(named):
        opt = torch_ref.BertAdam(harness.torch_param_groups(named, 0.01), lr=0.02, warmup=0.1,
                                 t_total=80)
        return opt, None, lambda: opt.get_lr()[0]

    def make_inner(params):
        return ob.bertadam(0.02, warmup=0.1, t_total=80, mask=ob.decay_mask(params))

    harness.check_result(run(dtype, make_inner, make_torch), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw(dtype):
    """torch.optim.AdamW with a LambdaLR stepped once per real update."""
    lam = lambda k: min(1.0, (k + 1) / 10) * max(0.0, 1.0 - k / 90)

    def schedule(count):
        k = jnp.asarray(count, dtype=float)
        return 0.01 * jnp.minimum(1.0, (k + 1) / 10) * jnp.maximum(0.0, 1.0 - k / 90)

    def make_torch(named):
        opt = torch.optim.AdamW(harness.torch_param_groups(named, 0.05), lr=0.01, eps=1e-6)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lam)
        return opt, scheduler, lambda: opt.param_groups[0]["lr"]

    def make_inner(params):
        return optimizers.adamw(schedule, weight_decay=0.05, mask=ob.decay_mask(params))

    harness.check_result(run(dtype, make_inner, make_torch), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adafactor(dtype):
    """transformers.Adafactor (relative step, parameter scaling, first moment)."""

    def make_torch(named):
        opt = Adafactor(list(named.values()), beta1=0.9)
        group = opt.param_groups[0]

        def next_lr():
            state = opt.state[group["params"][0]]
            step = state.get("step", 0) + 1
            return Adafactor._get_lr({**group, "scale_parameter": False}, {"step": step})

        return opt, None, next_lr

    harness.check_result(run(dtype, lambda params: optimizers.adafactor(beta1=0.9), make_torch),
          dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tf_gradient_accumulator_sums(dtype):
    """average=False: create_optimizer's AdamWeightDecay on the GradientAccumulator's sum."""
    kwargs = dict(init_lr=0.01, num_train_steps=80, num_warmup_steps=10, weight_decay_rate=0.05)

    def make_torch(named):
        opt, _ = ref.create_optimizer([(n.replace(".", "/"), p) for n, p in named.items()], **kwargs)
        return opt, None, opt.decayed_lr

    harness.check_result(run(dtype, lambda params: optimizers.create_optimizer(**kwargs)[0], make_torch,
              side=TFAccumulator, average=False), dtype)


def test_gradient_accumulator_twin():
    acc = ref.GradientAccumulator()
    acc([torch.ones(2), None])
    acc([2 * torch.ones(2), None])
    assert acc.step == 2 and acc.gradients[0].tolist() == [3.0, 3.0] and acc.gradients[1] is None
    with pytest.raises(ValueError, match="Expected 2 gradients, but got 1"):
        acc([torch.ones(2)])
    acc.reset()
    assert acc.step == 0 and acc.gradients[0].tolist() == [0.0, 0.0]


def test_state_get_lr_and_accumulator_dtype():
    """get_lr sees the inner rate through the wrapper; float64 params accumulate in float64."""
    tx = optimizers.gradient_accumulation(optimizers.adamw(lambda c: 0.1 * (c + 1)), 3)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    rates = []
    for _ in range(7):
        rates.append(float(ob.get_lr(state)))
        updates, state = update(params, state, params)
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.3])
    assert isinstance(state, optax.MultiStepsState)
    assert bool(optax.MultiSteps(optimizers.adamw(0.1), 3).has_updated(state)) is False
    assert state.acc_grads["w"].dtype == jnp.float32
    with jax.enable_x64(True):
        state64 = tx.init({"w": jnp.ones(2, jnp.float64)})
        assert state64.acc_grads["w"].dtype == jnp.float64
    bf16 = tx.init({"w": jnp.ones(2, jnp.bfloat16)})
    assert bf16.acc_grads["w"].dtype == jnp.float32
    explicit = optimizers.gradient_accumulation(optimizers.adamw(0.1), 2, accumulator_dtype=jnp.bfloat16)
    assert explicit.init(params).acc_grads["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((optax.sgd(0.1), 0), {}, ValueError, "every_k_steps=0 is invalid: expected an integer >= 1"),
        ((optax.sgd(0.1), 2.5), {}, TypeError, r"every_k_steps=2\.5 is invalid: expected an integer"),
        ((optax.sgd(0.1), "4"), {}, TypeError, "every_k_steps='4' is invalid"),
        ((optax.sgd(0.1), 4), {"average": "yes"}, TypeError,
         "average='yes' is invalid: expected True or False"),
        ((lambda g: g, 4), {}, TypeError, "tx=.* is invalid: expected an optax.GradientTransformation"),
        ((optax.sgd(0.1), 4), {"accumulator_dtype": jnp.int32}, TypeError,
         "accumulator_dtype=.*int32.* is invalid: expected None or a floating dtype"),
        ((optax.sgd(0.1), 4), {"accumulator_dtype": "no-dtype"}, TypeError, "accumulator_dtype='no-dtype'"),
    ],
)
def test_argument_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        optimizers.gradient_accumulation(*args, **kwargs)
