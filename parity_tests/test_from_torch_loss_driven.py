"""``from_torch`` with a loss-driven scheduler: ``ReduceLROnPlateau`` and transformers' ``GreedyLR``.

Real optimizers with their parameter groups under a real scheduler stepped with a metric
(``optimizer.step(); scheduler.step(metric)``), against :func:`optax_bertadam.from_torch` updated
with ``value=metric``: parameters after every update (float32 within 2e-5 of each tensor's
largest magnitude, float64 1e-12) and each group's rate (``scheduler.get_last_lr()``, BertAdam's
scheduled rate for BertAdam) within 1e-6 (float32) / 1e-12 (float64) of the peak rate. The
mid-run hand-over continues from the optimizer's and the scheduler's ``state_dict``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import pytest
import torch
import transformers
from torch.optim import lr_scheduler

import optax_bertadam as ob
from parity_tests.group_harness import run_group_parity, run_hand_over
from parity_tests.harness import (
    LR_TOL,
    PARAM_TOL,
    SMALL_SHAPES,
    TorchSide,
    assert_within,
    nest,
)
from parity_tests.test_from_torch import bert_next_lrs, one_group, two_groups
from torch_ref import BertAdam as DeepSpeedBertAdam

LOSS_STEPS = 40


def metric_stream():
    """The metric passed to ``scheduler.step``: improving, flat, noisy, improving, flat."""
    values = [1.0 - 0.04 * k for k in range(8)] + [0.7] * 16
    values += [0.7 + 0.01 * math.sin(3 * k) for k in range(8)]
    return values + [0.6 - 0.02 * k for k in range(LOSS_STEPS - len(values))]


# name: (make optimizer from groups, make scheduler from optimizer, groups, dtypes)
LOSS_DRIVEN = {
    "AdamW x ReduceLROnPlateau(min_lr per group, cooldown) x no_decay split": (
        lambda g: torch.optim.AdamW(g, lr=0.02, weight_decay=0.05),
        lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=1, cooldown=2,
                                                 min_lr=[0.004, 0.01]),
        lambda n: two_groups(n, lr=0.04), ("float32", "float64"),
    ),
    "SGD(nesterov) x get_scheduler(reduce_lr_on_plateau: max, abs, eps) x one group": (
        lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda o: transformers.get_scheduler(
            "reduce_lr_on_plateau", o, scheduler_specific_kwargs=dict(
                mode="max", patience=0, threshold=0.01, threshold_mode="abs", factor=0.6,
                eps=0.003)),
        one_group, ("float32",),
    ),
    "DeepSpeed BertAdam(warmup_linear) x ReduceLROnPlateau x no_decay split": (
        lambda g: DeepSpeedBertAdam(g, lr=0.02, warmup=0.2, t_total=LOSS_STEPS),
        lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=2),
        lambda n: two_groups(n, lr=0.04), ("float32",),
    ),
    # The second group reaches its floor two decreases after the first: GreedyLR counts down
    # to its reset only while both are there (per-group copies would reset the first earlier).
    "Adam(L2, amsgrad) x GreedyLR(per-group bounds, reset) x no_decay split": (
        lambda g: torch.optim.Adam(g, lr=0.02, weight_decay=0.01, amsgrad=True),
        lambda o: transformers.optimization.GreedyLR(
            o, factor=0.5, patience=1, min_lr=[0.01, 0.005], max_lr=[0.04, 0.05],
            reset_start=2, cooldown=1, warmup=1),
        lambda n: two_groups(n, lr=0.04), ("float32", "float64"),
    ),
    "Adafactor(lr, beta1=None) x get_scheduler(greedy, smooth) x no_decay split": (
        lambda g: transformers.Adafactor(g, lr=0.02, relative_step=False, scale_parameter=True,
                                         weight_decay=0.01),
        lambda o: transformers.get_scheduler(
            "greedy", o, scheduler_specific_kwargs=dict(
                smooth=True, window_size=3, patience=1, factor=0.7, min_lr=0.002, max_lr=0.05)),
        lambda n: two_groups(n, lr=0.03), ("float32",),
    ),
}
LOSS_CASES = [(name, dtype) for name, case in LOSS_DRIVEN.items() for dtype in case[3]]


@pytest.mark.parametrize("name, dtype", LOSS_CASES, ids=[f"{n} [{d}]" for n, d in LOSS_CASES])
def test_from_torch_loss_driven(name, dtype):
    """``update(..., value=metric)`` is ``optimizer.step(); scheduler.step(metric)``, per group."""
    make_optimizer, make_scheduler, make_groups, _ = LOSS_DRIVEN[name]
    values = metric_stream()

    def make_torch(named):
        optimizer = make_optimizer(make_groups(named))
        scheduler = make_scheduler(optimizer)
        next_lr = bert_next_lrs(optimizer) if "BertAdam" in name else scheduler.get_last_lr
        side = TorchSide(optimizer, scheduler, next_lr)
        side.named = list(named.items())
        return side

    def make_optax(params, side):
        return ob.from_torch(side.optimizer, side.scheduler, named_parameters=side.named,
                             params=params)

    param_error, lr_error = run_group_parity(
        make_torch, make_optax, dtype=dtype, steps=LOSS_STEPS, shapes=SMALL_SHAPES, values=values
    )
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])


def test_the_loss_driven_cases_change_every_groups_rate():
    """The metric stream does make both schedulers move: a test of the cases, not the code."""
    values = metric_stream()
    for name in ("AdamW x ReduceLROnPlateau(min_lr per group, cooldown) x no_decay split",
                 "Adam(L2, amsgrad) x GreedyLR(per-group bounds, reset) x no_decay split"):
        make_optimizer, make_scheduler, make_groups, _ = LOSS_DRIVEN[name]
        weights = {n: torch.nn.Parameter(torch.zeros(s)) for n, s in SMALL_SHAPES.items()}
        optimizer = make_optimizer(make_groups(weights))
        scheduler = make_scheduler(optimizer)
        seen = set()
        for value in values:
            optimizer.step()
            scheduler.step(value)
            seen.add(tuple(scheduler.get_last_lr()))
        assert len(seen) >= 4, (name, seen)
        if "GreedyLR" in name:  # raised to max_lr, both groups at their floors, then reset
            assert {(0.04, 0.05), (0.01, 0.005), (0.01, 0.0125)} <= seen, seen




HAND_OVERS = {
    "AdamW x ReduceLROnPlateau(cooldown)": lambda o: lr_scheduler.ReduceLROnPlateau(
        o, factor=0.5, patience=1, cooldown=2, min_lr=[0.0005, 0.001]),
    "SGD x GreedyLR(smooth, reset)": lambda o: transformers.optimization.GreedyLR(
        o, factor=0.5, patience=1, min_lr=[0.01, 0.005], max_lr=[0.04, 0.05], reset_start=2,
        cooldown=1, warmup=1, smooth=True, window_size=3),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("setup", list(HAND_OVERS))
def test_mid_run_hand_over(setup, dtype):
    """PyTorch runs 19 updates (rates lowered, a cooldown or countdown under way, the window
    full); JAX continues from both state_dicts for 21 more, through a reset for GreedyLR."""

    def make_torch(named):
        if setup.startswith("AdamW"):
            optimizer = torch.optim.AdamW(two_groups(named, lr=0.04), lr=0.02, weight_decay=0.05)
        else:
            optimizer = torch.optim.SGD(two_groups(named, lr=0.04), lr=0.02, momentum=0.9)
        return optimizer, HAND_OVERS[setup](optimizer)

    param_error, lr_error, moment_error = run_hand_over(
        make_torch, dtype=dtype, before=19, after=21, values=metric_stream(), shapes=SMALL_SHAPES)
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])
    assert_within("param error of the moments sent back", moment_error, PARAM_TOL[dtype])


def test_a_fresh_state_would_not_continue_the_run():
    """The scheduler's best value, counters and rates are what load_torch_state_dict restores;
    without them (measured while writing the test) the rates part by half the peak rate."""
    named = {n: torch.nn.Parameter(torch.zeros(s)) for n, s in SMALL_SHAPES.items()}
    optimizer = torch.optim.AdamW(two_groups(named, lr=0.04), lr=0.02)
    scheduler = HAND_OVERS["AdamW x ReduceLROnPlateau(cooldown)"](optimizer)
    for p in named.values():
        p.grad = torch.ones_like(p)
    for value in metric_stream()[:19]:
        optimizer.step()
        scheduler.step(value)
    params = nest({n: jnp.zeros(s) for n, s in SMALL_SHAPES.items()})
    tx = ob.from_torch(optimizer, scheduler, named_parameters=named.items(), params=params)
    fresh = tx.init(params)
    names = ob.torch_parameter_names(named.items(), optimizer)
    loaded = ob.load_torch_state_dict(optimizer.state_dict(), tx, params, names,
                                      scheduler_state=scheduler.state_dict())
    assert float(fresh.rates.best) == math.inf
    assert float(loaded.rates.best) == pytest.approx(scheduler.best)
    assert int(loaded.rates.cooldown_counter) == scheduler.cooldown_counter
    assert [float(r) for r in ob.get_last_lr(loaded)] == pytest.approx(scheduler.get_last_lr())
