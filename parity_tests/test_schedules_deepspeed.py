"""DeepSpeed's five schedules against the installed ``deepspeed.runtime.lr_schedules`` classes.

Each case builds the DeepSpeed scheduler over a ``torch.optim.AdamW`` with two parameter groups
of different ``lr`` (AdamW has ``betas``, so ``OneCycle`` cycles ``betas[0]``), and drives it as
DeepSpeed's engine does: read every group's ``lr`` (and ``betas``), ``optimizer.step()``, then
``scheduler.step()``. The optax schedule of each group (the per-group entry where an argument is
a list) is compared at every count ``0 .. 39`` through ``jax.jit(jax.vmap)``, in float32 (x64
off) and float64 (``jax.enable_x64(True)``).

Error measure: ``max_k |optax_k - deepspeed_k| / max_k |deepspeed_k|`` (relative to the peak),
per group, for the rate and for OneCycle's momentum. Tolerances: the harness's ``LR_TOL``,
1e-6 in float32 and 1e-12 in float64.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from deepspeed.runtime import lr_schedules

from optax_bertadam import schedules
from parity_tests import harness

NUM_UPDATES = 40
GROUP_LRS = (0.1, 0.02)


def _drive(scheduler_class, kwargs: dict[str, Any]):
    """Per group: the rate and ``betas`` each of ``NUM_UPDATES`` updates runs at."""
    params = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    optimizer = torch.optim.AdamW([{"params": [params[0]], "lr": GROUP_LRS[0]},
                                   {"params": [params[1]], "lr": GROUP_LRS[1]}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = scheduler_class(optimizer, **kwargs)
        rates, betas = [], []
        for _ in range(NUM_UPDATES):
            rates.append([float(group["lr"]) for group in optimizer.param_groups])
            betas.append([tuple(group["betas"]) for group in optimizer.param_groups])
            optimizer.step()
            scheduler.step()
    return list(zip(*rates, strict=True)), list(zip(*betas, strict=True))


def _entry(value: Any, group: int) -> Any:
    return value[group] if isinstance(value, (list, tuple)) else value


def _per_group(kwargs: dict[str, Any], group: int) -> dict[str, Any]:
    return {name: _entry(value, group) for name, value in kwargs.items()}


def _check(name: str, scheduler_class, factory, kwargs, dtype, *, optimizer_lr: str | None = None,
           defaults: dict[str, Any] | None = None):
    rates, betas = _drive(scheduler_class, kwargs)
    for group in range(2):
        own = {**(defaults or {}), **_per_group(kwargs, group)}
        if optimizer_lr is not None:
            own[optimizer_lr] = GROUP_LRS[group]

        def build(own=own):
            built = factory(**own)
            return built.learning_rate if isinstance(built, schedules.CycleSchedules) else built

        harness.check_schedule(f"{name} group {group} rate", build, rates[group], dtype,
                               jit_scalar=group == 0)
        if factory is schedules.one_cycle and own.get("cycle_momentum", True):
            harness.check_schedule(f"{name} group {group} beta1",
                                   lambda own=own: factory(**own).momentum,
                                   [b[0] for b in betas[group]], dtype, jit_scalar=False)
            # DeepSpeed forces betas[1] to 0.99 from construction on.
            assert {b[1] for b in betas[group]} == {0.99}


WARMUP_CASES = [
    dict(warmup_type="log", warmup_num_steps=1),
    dict(warmup_type="linear", warmup_num_steps=1),
    dict(warmup_type="log", warmup_num_steps=2),
    dict(warmup_type="linear", warmup_num_steps=3, warmup_min_lr=[0.01, 0.002]),
    dict(warmup_type="log", warmup_num_steps=13, warmup_min_lr=0.001, warmup_max_lr=[0.2, 0.05]),
    dict(warmup_type="linear", warmup_num_steps=1000, warmup_max_lr=0.3),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", WARMUP_CASES, ids=str)
def test_warmup_lr(case, dtype):
    # WarmupLR's warmup_max_lr=None is the optimizer's lr of each group.
    lr_kwargs = {} if "warmup_max_lr" in case else {"warmup_max_lr": list(GROUP_LRS)}
    _check("WarmupLR", lr_schedules.WarmupLR, schedules.warmup_lr, {**case, **lr_kwargs}, dtype)


DECAY_CASES = [
    dict(total_num_steps=20, warmup_type="linear", warmup_num_steps=1),
    dict(total_num_steps=20, warmup_type="log", warmup_num_steps=2, warmup_max_lr=[0.1, 0.03]),
    dict(total_num_steps=25, warmup_type="log", warmup_num_steps=7, warmup_min_lr=0.01),
    dict(total_num_steps=5, warmup_type="linear", warmup_num_steps=8),  # total < warmup
    dict(total_num_steps=30, warmup_type="linear", warmup_num_steps=29, warmup_max_lr=0.5),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", DECAY_CASES, ids=str)
def test_warmup_decay_lr(case, dtype):
    _check("WarmupDecayLR", lr_schedules.WarmupDecayLR, schedules.warmup_decay_lr, case, dtype)


COSINE_CASES = [
    dict(total_num_steps=20, warmup_num_steps=1, warmup_type="log"),
    dict(total_num_steps=20, warmup_num_steps=2, warmup_type="linear", cos_min_ratio=0.3),
    dict(total_num_steps=30, warmup_num_steps=7, warmup_type="log", warmup_min_ratio=0.2),
    dict(total_num_steps=4, warmup_num_steps=6, warmup_type="linear", warmup_min_ratio=0.1),
    dict(total_num_steps=25, warmup_num_steps=100, warmup_type="log", cos_min_ratio=0.0),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", COSINE_CASES, ids=str)
def test_warmup_cosine_lr(case, dtype):
    _check("WarmupCosineLR", lr_schedules.WarmupCosineLR, schedules.warmup_cosine_lr, case, dtype,
           optimizer_lr="learning_rate")


ONE_CYCLE_CASES = [
    dict(cycle_first_step_size=3),
    dict(cycle_first_step_size=4, cycle_second_step_size=2, decay_step_size=2, decay_lr_rate=0.5,
         decay_mom_rate=0.01),
    dict(cycle_first_step_size=5, cycle_second_step_size=0, decay_step_size=3, decay_lr_rate=0.2),
    dict(cycle_first_step_size=6, cycle_second_step_size=9, cycle_first_stair_count=2),
    dict(cycle_first_step_size=7, cycle_second_step_size=4, cycle_first_stair_count=3,
         cycle_second_stair_count=2, decay_step_size=1.5, decay_lr_rate=0.1),
    dict(cycle_first_step_size=4, cycle_momentum=False, decay_step_size=4, decay_lr_rate=1.0,
         cycle_min_lr=[0.001, 0.002], cycle_max_lr=[0.01, 0.03]),
    dict(cycle_first_step_size=3, cycle_min_mom=[0.85, 0.7], cycle_max_mom=[0.95, 0.9],
         decay_step_size=2, decay_mom_rate=0.02),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ONE_CYCLE_CASES, ids=str)
def test_one_cycle(case, dtype):
    case = {"cycle_min_lr": 0.001, "cycle_max_lr": 0.01, **case}
    _check("OneCycle", lr_schedules.OneCycle, schedules.one_cycle, case, dtype)


RANGE_CASES = [
    dict(lr_range_test_min_lr=0.001, lr_range_test_step_size=1),
    dict(lr_range_test_min_lr=[0.001, 0.01], lr_range_test_step_size=3, lr_range_test_step_rate=0.5),
    dict(lr_range_test_min_lr=0.002, lr_range_test_step_size=3, lr_range_test_staircase=True),
    dict(lr_range_test_min_lr=[0.01, 0.001], lr_range_test_step_size=7, lr_range_test_step_rate=2.0,
         lr_range_test_staircase=True),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", RANGE_CASES, ids=str)
def test_lr_range_test(case, dtype):
    _check("LRRangeTest", lr_schedules.LRRangeTest, schedules.lr_range_test, case, dtype)


@pytest.mark.parametrize(
    "factory, kwargs, match",
    [
        (schedules.warmup_lr, dict(warmup_num_steps=0), "warmup_num_steps=0"),
        (schedules.warmup_lr, dict(warmup_type="cosine"), "warmup_type='cosine'"),
        (schedules.warmup_decay_lr, dict(total_num_steps=1.5), "total_num_steps=1.5"),
        (schedules.warmup_cosine_lr, dict(learning_rate=0.1, total_num_steps=10,
                                          warmup_num_steps=-1), "warmup_num_steps=-1"),
        (schedules.one_cycle, dict(cycle_min_lr=0.0, cycle_max_lr=1.0, cycle_first_step_size=0),
         "cycle_first_step_size=0"),
        (schedules.one_cycle, dict(cycle_min_lr=0.0, cycle_max_lr=1.0, decay_step_size=-1),
         "decay_step_size=-1"),
        (schedules.lr_range_test, dict(lr_range_test_step_size=0), "lr_range_test_step_size=0"),
    ],
)
def test_bad_arguments_are_refused_when_built(factory, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory(**kwargs)


# from_torch reads a live DeepSpeed scheduler over a plain torch optimizer (a catalogue record of
# each class): per-group lrs, OneCycle's beta1 cycled on Adam, a scheduler resumed mid-run.
LIVE = {
    "WarmupLR": lambda o: lr_schedules.WarmupLR(o, warmup_min_lr=[0.001, 0.002],
                                                warmup_max_lr=[0.05, 0.02], warmup_num_steps=6),
    "WarmupDecayLR": lambda o: lr_schedules.WarmupDecayLR(o, total_num_steps=18, warmup_num_steps=4,
                                                          warmup_type="linear"),
    "WarmupCosineLR": lambda o: lr_schedules.WarmupCosineLR(o, total_num_steps=20, warmup_num_steps=5,
                                                            warmup_min_ratio=0.1),
    "OneCycle": lambda o: lr_schedules.OneCycle(o, 0.01, 0.1, cycle_first_step_size=5,
                                                decay_lr_rate=0.1, decay_step_size=3,
                                                cycle_min_mom=0.8, cycle_max_mom=0.95),
    "LRRangeTest": lambda o: lr_schedules.LRRangeTest(o, lr_range_test_min_lr=[0.001, 0.002],
                                                      lr_range_test_step_size=3),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(LIVE))
def test_from_torch_reads_a_live_deepspeed_scheduler(name, dtype):
    import optax_bertadam as ob
    from parity_tests.group_harness import run_group_parity
    from parity_tests.harness import LR_TOL, PARAM_TOL, SMALL_SHAPES, TorchSide, assert_within

    def make_torch(named):
        values = list(named.values())
        optimizer = torch.optim.Adam([{"params": values[:1]}, {"params": values[1:], "lr": 0.03}],
                                     lr=0.02, betas=(0.9, 0.99))
        scheduler = LIVE[name](optimizer)
        side = TorchSide(optimizer, scheduler, scheduler.get_last_lr)
        side.named = list(named.items())
        return side

    def make_optax(params, side):
        return ob.from_torch(side.optimizer, side.scheduler, named_parameters=side.named, params=params)

    param_error, lr_error = run_group_parity(make_torch, make_optax, dtype=dtype, steps=20,
                                             shapes=SMALL_SHAPES)
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])
