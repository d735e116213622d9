"""Every per-group value that ``from_torch`` and ``param_groups`` read, varied per group.

A reader that takes a hyperparameter from the optimizer's defaults, from the first group, or from
the first entry of a scheduler's per-group list instead of the group's own gives the same numbers
as long as every group has the same value: here three parameter groups differ from one another
AND from the constructor's defaults in every hyperparameter of every optimizer ``from_torch``
reads (SGD's momentum/dampening/nesterov/weight_decay, Adam's and AdamW's betas/eps/weight_decay/
amsgrad/decoupled_weight_decay, Adafactor's options, both BertAdams' options and schedules), and
in every per-group list of every scheduler (CyclicLR's base/max lrs and momenta, OneCycleLR's
max_lr and momenta, ReduceLROnPlateau's min_lrs, GreedyLR's min/max lrs). ``param_groups``: a
group's own ``lr_lambda``/``schedule`` must win over the shared one.

Each case runs the live PyTorch object and the reproduction on identical gradients
(``group_harness.run_group_parity``): parameters after every update (float32 within 2e-5 of each
tensor's largest magnitude, float64 1e-12) and each group's rate (float32 1e-6 of the peak rate,
float64 1e-12). Each case was checked to fail with the reading bug it names planted in the
library (see the report of the proptests branch): the bugs move parameters by 1e-3 to 1e0.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import pytest
import torch
import transformers
from pytorch_pretrained_bert import optimization as published
from torch.optim import lr_scheduler

import optax_bertadam as ob
from parity_tests.group_harness import run_group_parity
from parity_tests.harness import LR_TOL, PARAM_TOL, SMALL_SHAPES, TorchSide, assert_within
from parity_tests.test_from_torch import bert_next_lrs
from torch_ref import BertAdam as DeepSpeedBertAdam

STEPS = 16


def three_groups(named, *overrides):
    """SMALL_SHAPES in three groups (every rank in some group), each with its overrides."""
    names = list(named)
    members = ([names[0], names[3]], [names[1], names[2]], [names[4], names[5]])
    return [{"params": [named[n] for n in m], **o} for m, o in zip(members, overrides, strict=True)]


def run(make_optimizer, make_scheduler, dtype, *, next_lr="scheduler", values=None, steps=STEPS):
    """from_torch of the live optimizer (and scheduler) against it; asserts the bounds."""

    def make_torch(named):
        optimizer = make_optimizer(named)
        scheduler = make_scheduler(optimizer) if make_scheduler else None
        if next_lr == "scheduler":
            rates = scheduler.get_last_lr
        elif next_lr == "groups":
            def rates():
                return [g["lr"] for g in optimizer.param_groups]
        elif next_lr == "bert":
            rates = bert_next_lrs(optimizer)
        else:
            rates = None
        side = TorchSide(optimizer, scheduler, rates)
        side.named = list(named.items())
        return side

    def make_optax(params, side):
        return ob.from_torch(side.optimizer, side.scheduler, named_parameters=side.named,
                             params=params)

    param_error, lr_error = run_group_parity(make_torch, make_optax, dtype=dtype, steps=steps,
                                             shapes=SMALL_SHAPES, values=values)
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])


# ------------------------------------------------------------------------------ optimizers
# Three groups unlike one another and unlike the defaults, in every value from_torch reads.

OPTIMIZERS = {
    # Caught: momentum, dampening, nesterov or weight_decay read from optimizer.defaults or
    # from group 0 (issue 17's surviving planted bug: momentum from the defaults).
    "SGD": lambda named: torch.optim.SGD(three_groups(
        named,
        {"lr": 0.03, "momentum": 0.9, "dampening": 0.0, "nesterov": True, "weight_decay": 0.0},
        {"lr": 0.05, "momentum": 0.6, "dampening": 0.5, "nesterov": False, "weight_decay": 0.1},
        {"lr": 0.02, "momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.02},
    ), lr=0.1, momentum=0.3, dampening=0.2, weight_decay=0.3),
    # betas, eps, weight_decay, amsgrad, decoupled_weight_decay: each group its own.
    "Adam": lambda named: torch.optim.Adam(three_groups(
        named,
        {"lr": 0.02, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": True,
         "decoupled_weight_decay": False},
        {"lr": 0.01, "betas": (0.6, 0.9), "eps": 1e-3, "weight_decay": 0.1, "amsgrad": False,
         "decoupled_weight_decay": True},
        {"lr": 0.03, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.05, "amsgrad": False,
         "decoupled_weight_decay": False},
    ), lr=0.1, betas=(0.5, 0.5), eps=0.1, weight_decay=0.5),
    "AdamW": lambda named: torch.optim.AdamW(three_groups(
        named,
        {"lr": 0.02, "betas": (0.85, 0.99), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False},
        {"lr": 0.01, "betas": (0.6, 0.9), "eps": 1e-3, "weight_decay": 0.1, "amsgrad": True},
        {"lr": 0.03, "betas": (0.95, 0.999), "eps": 1e-6, "weight_decay": 0.3, "amsgrad": False},
    ), lr=0.1, betas=(0.5, 0.5), eps=0.1, weight_decay=0.5),
    # Every Adafactor option per group; relative_step per group too (its own rate, no lr).
    "Adafactor": lambda named: transformers.Adafactor(three_groups(
        named,
        {"lr": 0.02, "relative_step": False, "scale_parameter": True, "beta1": 0.9,
         "eps": (1e-30, 1e-3), "clip_threshold": 1.0, "decay_rate": -0.8, "weight_decay": 0.0},
        {"lr": 0.03, "relative_step": False, "scale_parameter": False, "beta1": None,
         "eps": (1e-20, 1e-2), "clip_threshold": 0.5, "decay_rate": -0.6, "weight_decay": 0.1},
        {"lr": None, "relative_step": True, "warmup_init": True, "scale_parameter": True,
         "beta1": 0.5, "eps": (1e-25, 2e-3), "clip_threshold": 2.0, "decay_rate": -0.7,
         "weight_decay": 0.01},
    ), lr=0.05, relative_step=False, scale_parameter=False, warmup_init=False, beta1=0.7,
        eps=(1e-10, 5e-2), clip_threshold=3.0, decay_rate=-0.5, weight_decay=0.2),
    # DeepSpeed's BertAdam: every group its own schedule, warmup, t_total, betas, e, decay, clip.
    "DeepSpeed BertAdam": lambda named: DeepSpeedBertAdam(three_groups(
        named,
        {"lr": 0.02, "schedule": "warmup_linear", "warmup": 0.2, "t_total": 20, "b1": 0.9,
         "b2": 0.999, "e": 1e-6, "weight_decay": 0.0, "max_grad_norm": 1.0},
        {"lr": 0.04, "schedule": "warmup_cosine", "warmup": 0.1, "t_total": 14, "b1": 0.7,
         "b2": 0.95, "e": 1e-3, "weight_decay": 0.1, "max_grad_norm": 0.3},
        {"lr": 0.01, "schedule": "warmup_constant", "warmup": 0.3, "t_total": 10, "b1": 0.8,
         "b2": 0.9, "e": 1e-4, "weight_decay": 0.05, "max_grad_norm": -1},
    ), lr=0.1, schedule="warmup_exp_decay_exp", warmup=0.5, t_total=100, b1=0.5, b2=0.5, e=0.1,
        weight_decay=0.5, max_grad_norm=5.0),
    # pytorch_pretrained_bert's BertAdam: every group its own schedule object.
    "pytorch_pretrained_bert BertAdam": lambda named: published.BertAdam(three_groups(
        named,
        {"lr": 0.02, "schedule": published.WarmupLinearSchedule(warmup=0.2, t_total=20),
         "b1": 0.9, "b2": 0.999, "e": 1e-6, "weight_decay": 0.0, "max_grad_norm": 1.0},
        {"lr": 0.04, "schedule": published.WarmupCosineSchedule(warmup=0.1, t_total=14, cycles=1.0),
         "b1": 0.7, "b2": 0.95, "e": 1e-3, "weight_decay": 0.1, "max_grad_norm": 0.3},
        {"lr": 0.01, "schedule": published.WarmupConstantSchedule(warmup=0.3, t_total=10),
         "b1": 0.8, "b2": 0.9, "e": 1e-4, "weight_decay": 0.05, "max_grad_norm": -1},
    ), lr=0.1, warmup=0.5, t_total=100, b1=0.5, b2=0.5, e=0.1, weight_decay=0.5, max_grad_norm=5.0),
}
NEXT_LR = {"Adafactor": None, "DeepSpeed BertAdam": "bert", "pytorch_pretrained_bert BertAdam": "bert"}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_hyperparameter_is_read_from_its_own_group(name, dtype):
    run(OPTIMIZERS[name], None, dtype, next_lr=NEXT_LR.get(name, "groups"))


# ------------------------------------------------------------------------------ schedulers


def sgd(named):
    return torch.optim.SGD(three_groups(named, {"lr": 0.03, "momentum": 0.9},
                                        {"lr": 0.05, "momentum": 0.5, "dampening": 0.3},
                                        {"lr": 0.02, "momentum": 0.7, "weight_decay": 0.05}),
                           lr=0.1, momentum=0.2)


def adam(named):
    return torch.optim.Adam(three_groups(named, {"lr": 0.03, "betas": (0.9, 0.99)},
                                         {"lr": 0.05, "betas": (0.7, 0.95), "weight_decay": 0.1},
                                         {"lr": 0.02, "betas": (0.8, 0.9), "amsgrad": True}),
                            lr=0.1, betas=(0.5, 0.5))


SCHEDULERS = {
    # Caught: every group given the first max_lr (issue 17's surviving bug), or the first base_lr,
    # or the first group's momenta.
    "SGD x CyclicLR(per-group base_lr, max_lr, momenta; step_size_down)": (
        sgd, lambda o: lr_scheduler.CyclicLR(
            o, base_lr=[0.01, 0.004, 0.02], max_lr=[0.1, 0.06, 0.2], step_size_up=3,
            step_size_down=5, mode="triangular2", base_momentum=[0.8, 0.6, 0.7],
            max_momentum=[0.95, 0.9, 0.85])),
    "Adam x CyclicLR(exp_range, per-group lists, betas cycled)": (
        adam, lambda o: lr_scheduler.CyclicLR(
            o, base_lr=[0.01, 0.004, 0.02], max_lr=[0.1, 0.06, 0.2], step_size_up=2,
            step_size_down=4, mode="exp_range", gamma=0.9, base_momentum=[0.8, 0.6, 0.7],
            max_momentum=[0.95, 0.9, 0.85])),
    "SGD x OneCycleLR(per-group max_lr and momenta, three_phase)": (
        sgd, lambda o: lr_scheduler.OneCycleLR(
            o, max_lr=[0.1, 0.3, 0.05], total_steps=STEPS, pct_start=0.3, three_phase=True,
            base_momentum=[0.8, 0.6, 0.7], max_momentum=[0.95, 0.9, 0.85], div_factor=10.0,
            final_div_factor=100.0)),
    "Adam x OneCycleLR(per-group max_lr and betas, linear)": (
        adam, lambda o: lr_scheduler.OneCycleLR(
            o, max_lr=[0.1, 0.3, 0.05], total_steps=STEPS, pct_start=0.4,
            anneal_strategy="linear", base_momentum=[0.8, 0.6, 0.7],
            max_momentum=[0.95, 0.9, 0.85])),
}


# float64 only (CI time): a value read from the wrong group moves rates and parameters by 1e-3 or
# more in either dtype, and these schedulers' float32 paths are covered by test_from_torch.py and
# test_from_torch_properties.py.
@pytest.mark.parametrize("dtype", ["float64"])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_per_group_list_of_a_scheduler_reaches_its_group(name, dtype):
    make_optimizer, make_scheduler = SCHEDULERS[name]
    run(make_optimizer, make_scheduler, dtype)


def plateau_then_improving(steps: int) -> list[float]:
    """Flat for most of the run (every group falls to its floor at its own update), then
    improving (GreedyLR raises every group to its ceiling)."""
    return [1.0] * (steps - 12) + [1.0 - 0.1 * k for k in range(1, 13)]


LOSS_DRIVEN = {
    # Caught: min_lrs[0] (or the first group's floor) for every group.
    "SGD x ReduceLROnPlateau(per-group min_lr)": (
        sgd, lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=0,
                                                      min_lr=[0.01, 0.004, 0.015])),
    # Caught: min_lrs[0] or max_lrs[0] for every group.
    "Adam x GreedyLR(per-group min_lr and max_lr)": (
        adam, lambda o: transformers.optimization.GreedyLR(
            o, factor=0.5, patience=0, min_lr=[0.01, 0.004, 0.015], max_lr=[0.06, 0.2, 0.03],
            reset_start=100)),
}


@pytest.mark.parametrize("dtype", ["float64"])  # float64 only: as above
@pytest.mark.parametrize("name", list(LOSS_DRIVEN))
def test_every_per_group_bound_of_a_loss_driven_scheduler_reaches_its_group(name, dtype):
    make_optimizer, make_scheduler = LOSS_DRIVEN[name]
    steps = 24
    run(make_optimizer, make_scheduler, dtype, values=plateau_then_improving(steps), steps=steps)


def test_the_loss_driven_cases_reach_every_groups_bound():
    """A test of the cases: every group sits at its own floor, then (GreedyLR) at its ceiling."""
    steps = 24
    for name, (make_optimizer, make_scheduler) in LOSS_DRIVEN.items():
        named = {n: torch.nn.Parameter(torch.zeros(s)) for n, s in SMALL_SHAPES.items()}
        optimizer = make_optimizer(named)
        scheduler = make_scheduler(optimizer)
        seen = []
        for value in plateau_then_improving(steps):
            optimizer.step()
            scheduler.step(value)
            seen.append(tuple(scheduler.get_last_lr()))
        assert (0.01, 0.004, 0.015) in seen, (name, seen)
        if "GreedyLR" in name:
            assert (0.06, 0.2, 0.03) in seen, (name, seen)


# --------------------------------------------------------------------------- param_groups
# A shared multiplier (lr_lambda= or schedule=) and groups with their own: the group's own wins,
# as LambdaLR(optimizer, [shared, own, shared]) does.


def shared_torch(k):
    return min(1.0, (k + 1) / 4) * 0.9 ** k


def own_torch(k):
    return 0.5 * (1 + math.cos(math.pi * min(k, 12) / 12))


def shared_jax(count):
    return jnp.minimum(1.0, (count + 1) / 4) * 0.9 ** count


def own_jax(count):
    return 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(count, 12) / 12))


@pytest.mark.parametrize("shared, own, dtype", [
    ("lr_lambda", "lr_lambda", "float64"), ("schedule", "schedule", "float64"),
    ("lr_lambda", "schedule", "float64"), ("schedule", "lr_lambda", "float64"),
    ("lr_lambda", "lr_lambda", "float32")])
def test_a_groups_own_multiplier_wins_over_the_shared_one(shared, own, dtype):
    def make_torch(named):
        names = list(named)
        optimizer = torch.optim.AdamW(
            [{"params": [named[names[0]], named[names[3]]]},
             {"params": [named[names[1]], named[names[2]]], "lr": 0.05},
             {"params": [named[names[4]], named[names[5]]], "lr": 0.03}], lr=0.02)
        scheduler = lr_scheduler.LambdaLR(optimizer, [shared_torch, own_torch, shared_torch])
        return TorchSide(optimizer, scheduler, scheduler.get_last_lr)

    def make_optax(params, side):
        flax = [n.replace(".", "/") for n in SMALL_SHAPES]  # the '/'-joined Flax paths
        first, second, third = ({flax[0], flax[3]}, {flax[1], flax[2]}, {flax[4], flax[5]})
        return ob.param_groups(
            ob.adamw,
            [{"params": lambda path, leaf, s=first: path in s},
             {"params": lambda path, leaf, s=second: path in s, "lr": 0.05, own: own_jax},
             {"params": lambda path, leaf, s=third: path in s, "lr": 0.03}],
            lr=0.02, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, **{shared: shared_jax})

    param_error, lr_error = run_group_parity(make_torch, make_optax, dtype=dtype, steps=STEPS,
                                             shapes=SMALL_SHAPES)
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])
