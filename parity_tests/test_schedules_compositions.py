"""Compositions of PyTorch schedulers that only a replay reproduces, read from the live objects.

PyTorch's side: the real schedulers over ``torch.optim.SGD`` (momentum 0.9) with two parameter
groups of different ``lr`` (and, for the cyclical members, different ``max_lr``/momenta), driven
the usual way: read each group's ``lr`` (and ``momentum``), ``optimizer.step()``,
``scheduler.step()``. The optax side: ``optax_bertadam.catalogue.replay_scheduler`` (each
group's ``TorchScheduler`` read through the catalogue's per-class options) called on the live
objects, its per-group schedules through ``jax.jit(jax.vmap)`` (and a jitted scalar call) in
float32 (x64 off) and float64 (``jax.enable_x64(True)``). Runs go past the cosine troughs and past
the replay's device table (``num_steps`` shorter than the run: the host path).

Error measure (``harness.check_schedule``): ``max_k |optax_k - torch_k| / max_k |torch_k|``.
Tolerances: 1e-6 in float32, 1e-12 in float64. ``pytest -s`` prints the worst error per case.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as S
from torch.optim.swa_utils import SWALR

from optax_bertadam import catalogue
from optax_bertadam.schedules import pytorch as pt
from parity_tests import harness

DTYPES = ["float32", "float64"]
LRS = (0.1, 0.03)
STEPS = 70


def _optimizer() -> torch.optim.Optimizer:
    params = [torch.zeros(1, dtype=torch.float64, requires_grad=True) for _ in LRS]
    return torch.optim.SGD(
        [{"params": [p], "lr": lr} for p, lr in zip(params, LRS, strict=True)], lr=LRS[0], momentum=0.9
    )


def _run(scheduler, optimizer, steps):
    """Each group's lr and momentum at counts ``0 .. steps-1`` from where ``scheduler`` is."""
    rates, momenta = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for update in range(steps):
            rates.append([float(g["lr"]) for g in optimizer.param_groups])
            momenta.append([float(g["momentum"]) for g in optimizer.param_groups])
            if update < steps - 1:
                optimizer.step()
                scheduler.step()
    return np.asarray(rates), np.asarray(momenta)


def _built(build):
    optimizer = _optimizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optimizer, build(optimizer)


def _two(a, b):  # per-group values
    return [a, b]


# name -> (build(optimizer) -> live scheduler, momentum cycled)
COMPOSITIONS = {
    "chain-warmup-cosine": (lambda o: S.ChainedScheduler([
        S.LinearLR(o, 0.25, total_iters=5), S.CosineAnnealingLR(o, T_max=12, eta_min=1e-3)]), False),
    "chain-cosine-first-exponential": (lambda o: S.ChainedScheduler([
        S.CosineAnnealingLR(o, T_max=8, eta_min=2e-3), S.ExponentialLR(o, 0.97)]), False),
    "chain-step-cosine-multistep": (lambda o: S.ChainedScheduler([
        S.StepLR(o, 5, 0.5), S.CosineAnnealingLR(o, T_max=10),
        S.MultiStepLR(o, [7, 20, 20], 0.3)]), False),
    "chain-constant-cosine-polynomial": (lambda o: S.ChainedScheduler([
        S.ConstantLR(o, 0.5, 4), S.CosineAnnealingLR(o, T_max=6, eta_min=5e-3),
        S.PolynomialLR(o, total_iters=40, power=2.0)]), False),
    "chain-of-cosine-and-warm-restarts": (lambda o: S.ChainedScheduler([
        S.CosineAnnealingWarmRestarts(o, 4, 2, 1e-3), S.CosineAnnealingLR(o, T_max=9, eta_min=1e-3)]),
        False),
    "sequential-nested-chain-first": (lambda o: S.SequentialLR(o, [
        S.ChainedScheduler([S.LinearLR(o, 0.2, total_iters=4), S.CosineAnnealingLR(o, 10, 1e-3)]),
        S.ExponentialLR(o, 0.95)], milestones=[15]), False),
    "sequential-nested-sequential-first": (lambda o: S.SequentialLR(o, [
        S.SequentialLR(o, [S.LinearLR(o, 0.2, total_iters=3), S.StepLR(o, 3, 0.7)], milestones=[4]),
        S.CosineAnnealingLR(o, T_max=10, eta_min=1e-3)], milestones=[12]), False),
    "sequential-nested-exponential-cosine": (lambda o: S.SequentialLR(o, [
        S.SequentialLR(o, [S.ExponentialLR(o, 0.9), S.CosineAnnealingLR(o, 7, 2e-3)], milestones=[5]),
        S.ConstantLR(o, 0.5, 6)], milestones=[20]), False),
    "chain-with-nested-sequential": (lambda o: S.ChainedScheduler([
        S.SequentialLR(o, [S.ConstantLR(o, 0.5, 3), S.ExponentialLR(o, 0.96)], milestones=[5]),
        S.CosineAnnealingLR(o, T_max=11, eta_min=1e-3)]), False),
    "chain-of-chains": (lambda o: S.ChainedScheduler([
        S.ChainedScheduler([S.LinearLR(o, 0.5, total_iters=4), S.ExponentialLR(o, 0.98)]),
        S.CosineAnnealingLR(o, T_max=13, eta_min=1e-3)]), False),
    "sequential-cosine-then-swalr": (lambda o: S.SequentialLR(o, [
        S.CosineAnnealingLR(o, T_max=20), SWALR(o, swa_lr=_two(0.02, 0.01), anneal_epochs=5)],
        milestones=[12]), False),
    "sequential-linear-then-warm-restarts": (lambda o: S.SequentialLR(o, [
        S.LinearLR(o, 0.1, total_iters=4), S.CosineAnnealingWarmRestarts(o, 3, 2, 1e-3)],
        milestones=[4]), False),
    "sequential-warmup-one-cycle-momentum": (lambda o: S.SequentialLR(o, [
        S.LinearLR(o, 0.3, total_iters=5),
        S.OneCycleLR(o, max_lr=_two(0.2, 0.05), total_steps=70, base_momentum=_two(0.8, 0.7),
                     max_momentum=_two(0.95, 0.9), three_phase=True)], milestones=[6]), True),
    "sequential-cyclic-momentum-then-exponential": (lambda o: S.SequentialLR(o, [
        S.CyclicLR(o, base_lr=_two(0.01, 0.002), max_lr=_two(0.1, 0.04), step_size_up=4,
                   step_size_down=6, mode="triangular2", base_momentum=_two(0.8, 0.75),
                   max_momentum=_two(0.9, 0.95)),
        S.ExponentialLR(o, 0.9)], milestones=[25]), True),
    "sequential-exponential-then-cyclic-momentum": (lambda o: S.SequentialLR(o, [
        S.ExponentialLR(o, 0.9),
        S.CyclicLR(o, base_lr=_two(0.01, 0.002), max_lr=_two(0.1, 0.04), step_size_up=5,
                   mode="exp_range", gamma=0.98)], milestones=[10]), True),
}


def _check_groups(name, schedules, expected, dtype, counts, attribute="learning_rate", jit_scalar=False):
    for group, cycle in enumerate(schedules):
        harness.check_schedule(
            f"{name}[{group}].{attribute}", lambda c=cycle: getattr(c, attribute),
            expected[:, group], dtype, counts=counts, jit_scalar=jit_scalar,
        )


def _read(scheduler, optimizer, num_steps):
    base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    return catalogue.replay_scheduler(scheduler, base_lrs, num_steps=num_steps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPOSITIONS)
def test_composition_matches_the_live_torch_scheduler(name, dtype):
    build, cycles_momentum = COMPOSITIONS[name]
    optimizer, scheduler = _built(build)
    # A device table shorter than the run: counts past 40 come from the host replay.
    schedules = _read(scheduler, optimizer, num_steps=40)
    rates, momenta = _run(scheduler, optimizer, STEPS)
    counts = np.arange(STEPS)
    _check_groups(name, schedules, rates, dtype, counts, jit_scalar=name.startswith("chain-warmup"))
    assert all((s.momentum is not None) == cycles_momentum for s in schedules)
    if cycles_momentum:
        _check_groups(name, schedules, momenta, dtype, counts, attribute="momentum")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["chain-warmup-cosine", "sequential-nested-chain-first",
                                  "sequential-warmup-one-cycle-momentum"])
def test_resumed_scheduler_continues_at_its_count(name, dtype):
    """Read after 17 steps (and from a fresh copy that loaded its state_dict): the schedules
    are functions of the count since construction, and the count is the scheduler's own."""
    build, cycles_momentum = COMPOSITIONS[name]
    optimizer, scheduler = _built(build)
    _run(scheduler, optimizer, 18)
    count = catalogue.scheduler_count(scheduler)
    assert count == 17
    fresh_optimizer, fresh = _built(build)
    fresh.load_state_dict(scheduler.state_dict())
    fresh_optimizer.load_state_dict(optimizer.state_dict())
    assert catalogue.scheduler_count(fresh) == count
    for live, opt in ((scheduler, optimizer), (fresh, fresh_optimizer)):
        schedules = _read(live, opt, num_steps=100)
        rates, momenta = _run(live, opt, 30)
        counts = np.arange(count, count + 30)
        _check_groups(f"resumed-{name}", schedules, rates, dtype, counts)
        if cycles_momentum:
            _check_groups(f"resumed-{name}", schedules, momenta, dtype, counts, attribute="momentum")


SWALR_CASES = {
    "cos-5": dict(swa_lr=_two(0.02, 0.05), anneal_epochs=5),
    "linear-3": dict(swa_lr=0.01, anneal_epochs=3, anneal_strategy="linear"),
    "cos-0": dict(swa_lr=_two(0.02, 0.05), anneal_epochs=0),
    "linear-1": dict(swa_lr=0.2, anneal_epochs=1, anneal_strategy="linear"),
    "cos-40": dict(swa_lr=_two(0.001, 0.3), anneal_epochs=40),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SWALR_CASES)
def test_swalr_matches_torch(case, dtype):
    optimizer, scheduler = _built(lambda o: SWALR(o, **SWALR_CASES[case]))
    schedules = catalogue.read_swalr(scheduler, [g["lr"] for g in optimizer.param_groups])
    rates, _ = _run(scheduler, optimizer, 50)
    for group, schedule in enumerate(schedules):
        harness.check_schedule(f"SWALR-{case}[{group}]", lambda s=schedule: s, rates[:, group], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_swalr_after_swa_start_is_read_from_its_current_rate(dtype):
    """The SWA loop: another scheduler until the SWA start, then SWALR from the rate it left."""
    optimizer = _optimizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cosine = S.CosineAnnealingLR(optimizer, T_max=30)
        swa = SWALR(optimizer, swa_lr=_two(0.01, 0.004), anneal_epochs=8)
    _run(cosine, optimizer, 12)
    _run(swa, optimizer, 4)  # three SWALR steps: annealing from the cosine's rate at count 11
    schedules = catalogue.read_swalr(swa)  # base recovered from the live rate
    count = catalogue.scheduler_count(swa)
    assert count == 3
    rates, _ = _run(swa, optimizer, 20)
    counts = np.arange(count, count + 20)
    for group, schedule in enumerate(schedules):
        harness.check_schedule(f"SWALR-after-cosine[{group}]", lambda s=schedule: s, rates[:, group],
                               dtype, counts=counts)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multiplicative_lr_after_the_first_position_with_a_jnp_factor(dtype):
    """MultiplicativeLR restarts at its milestone from the previous member's last rate times
    lr_lambda(0): the reader refuses a Python function; replay_torch_schedulers with the same
    factor written in jax.numpy reproduces it."""
    def factor(k):
        return 0.9 + 0.001 * k

    optimizer, scheduler = _built(lambda o: S.SequentialLR(o, [
        S.CosineAnnealingLR(o, 10, 1e-3), S.MultiplicativeLR(o, factor)], milestones=[6]))
    with pytest.raises(ValueError, match="lr_lambdas.*function of your own"):
        catalogue.replay_scheduler(scheduler, list(LRS))
    rates, _ = _run(scheduler, optimizer, 40)
    for group, lr in enumerate(LRS):
        spec = pt.TorchScheduler("SequentialLR", members=(
            pt.TorchScheduler("CosineAnnealingLR", {"T_max": 10, "eta_min": 1e-3}),
            pt.TorchScheduler("MultiplicativeLR", {"lr_lambda": lambda k: 0.9 + 0.001 * k})),
            milestones=(6,))
        harness.check_schedule(
            f"SequentialLR-then-MultiplicativeLR[{group}]",
            lambda lr=lr, spec=spec: pt.replay_torch_schedulers(lr, spec, 40).learning_rate,
            rates[:, group], dtype, jit_scalar=False,
        )


def test_what_torch_cannot_run_or_the_object_does_not_show_is_refused():
    optimizer, scheduler = _built(lambda o: S.SequentialLR(o, [
        S.ExponentialLR(o, 0.9), S.ChainedScheduler([S.StepLR(o, 2)])], milestones=[3]))
    with pytest.raises(ValueError, match="after the first position.*NotImplementedError"):
        catalogue.replay_scheduler(scheduler, list(LRS))
    optimizer, scheduler = _built(lambda o: S.ChainedScheduler([
        S.CyclicLR(o, 0.01, 0.1, scale_fn=lambda x: 1.0), S.ExponentialLR(o, 0.9)]))
    with pytest.raises(ValueError, match="scale_fn.*function of your own"):
        catalogue.replay_scheduler(scheduler, list(LRS))
    optimizer, scheduler = _built(lambda o: S.ReduceLROnPlateau(o))
    with pytest.raises(ValueError, match="ReduceLROnPlateau, which cannot be replayed; supported: .*SWALR"):
        catalogue.replay_scheduler(scheduler, list(LRS))
    with pytest.raises(ValueError, match="kind='Plateau' is invalid"):
        pt.replay_torch_schedulers(0.1, pt.TorchScheduler("Plateau"))
    with pytest.raises(ValueError, match="requires it"):
        pt.replay_torch_schedulers(0.1, pt.TorchScheduler("StepLR", {"gamma": 0.5}))
    with pytest.raises(ValueError, match="milestones=.* expected 1"):
        pt.replay_torch_schedulers(0.1, pt.TorchScheduler(
            "SequentialLR", members=(pt.TorchScheduler("ExponentialLR", {"gamma": 0.9}),) * 2))


# ---------------------------------------------------------- CosineAnnealingWarmRestarts, long

# Large T_mult (>= 4 overflowed int64 when the restart table was built) and long runs.
WARM_RESTARTS = [(10, 4), (1, 4), (3, 5), (2, 7), (7, 10), (1, 16), (5, 64), (1, 1000),
                 (10**6, 4), (4, 2), (1, 3), (50, 1), (13, 1), (1, 2**40)]
LONG = 6000


def _warm_restarts_rates(t_0, t_mult, eta_min, steps):
    optimizer = _optimizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = S.CosineAnnealingWarmRestarts(optimizer, t_0, t_mult, eta_min)
        rates = []
        for _ in range(steps):
            rates.append(optimizer.param_groups[0]["lr"])
            scheduler.step()
    return np.asarray(rates)


@pytest.mark.parametrize("dtype", DTYPES)
def test_warm_restarts_with_any_t_mult_match_torch_over_long_runs(dtype):
    for t_0, t_mult in WARM_RESTARTS:
        eta_min = 0.01 * LRS[0] if t_mult % 2 else 0.0
        expected = _warm_restarts_rates(t_0, t_mult, eta_min, LONG)
        harness.check_schedule(
            f"CosineAnnealingWarmRestarts-T_0={t_0}-T_mult={t_mult}",
            lambda t_0=t_0, t_mult=t_mult, eta_min=eta_min: pt.cosine_annealing_warm_restarts(
                LRS[0], T_0=t_0, T_mult=t_mult, eta_min=eta_min),
            expected, dtype, jit_scalar=False,
        )


def test_warm_restarts_builds_for_every_small_pair():
    # Every (T_0, T_mult) up to 64 x 64 builds (T_mult >= 4 overflowed int64 when built), and the
    # rate at the largest int32 count is finite.
    far = jnp.asarray(2**31 - 1)
    for t_0 in range(1, 65, 7):
        for t_mult in range(1, 65):
            schedule = pt.cosine_annealing_warm_restarts(1.0, T_0=t_0, T_mult=t_mult)
            if t_0 in (1, 50) and t_mult in (4, 64):
                assert np.isfinite(float(jax.jit(schedule)(far)))


def test_replay_takes_arrays_of_counts_and_jits():
    spec = pt.TorchScheduler("ChainedScheduler", members=(
        pt.TorchScheduler("ExponentialLR", {"gamma": 0.9}),
        pt.TorchScheduler("CosineAnnealingLR", {"T_max": 5, "eta_min": 0.01})))
    schedule = pt.replay_torch_schedulers(0.1, spec, num_steps=10).learning_rate
    counts = jnp.arange(24).reshape(2, 12)  # past the table too
    got = np.asarray(jax.jit(schedule)(counts))
    want = np.asarray([[float(jax.jit(schedule)(c)) for c in row] for row in counts])
    np.testing.assert_array_equal(got, want)


def test_a_replay_past_where_torchs_own_arithmetic_overflows_still_builds():
    """CyclicLR('triangular2') halves per cycle with torch's 1 / 2.0**(c - 1), an OverflowError
    past 1024 cycles: the replay tabulated for from_torch (100k counts) went there and failed
    the whole build (an explorer run of the properties found it). The counts torch runs match,
    count 0 included: a CyclicLR built after another scheduler starts at the group's initial_lr
    (torch's construction step runs before CyclicLR sets its own base_lrs)."""
    def build(optimizer):
        return S.ChainedScheduler([
            S.CosineAnnealingLR(optimizer, T_max=9),  # a member only the replay reproduces
            S.CyclicLR(optimizer, base_lr=0.01, max_lr=0.1, step_size_up=1, mode="triangular2",
                       cycle_momentum=False),
        ])

    optimizer, scheduler = _built(build)
    schedules = _read(scheduler, optimizer, num_steps=catalogue.REPLAY_STEPS)
    rates, _ = _run(scheduler, optimizer, STEPS)
    _check_groups("chain-cosine-triangular2", schedules, rates, "float64", np.arange(STEPS))


@pytest.mark.parametrize("before", [0, 1, 12])
def test_swalr_after_a_milestone_is_read_as_torch_runs_it(before):
    """SequentialLR([LinearLR, SWALR(per-group swa_lr)]): SWALR anneals from the rate the group
    has at its milestone. Read through the catalogue (what from_torch does) before, at and after
    that milestone; the closed form recovered SWALR's start from the group's current lr, which
    before the milestone is LinearLR's (an explorer run found it: 0.00305 against torch's
    0.000326 at the milestone)."""
    optimizer, scheduler = _built(lambda o: S.SequentialLR(o, [
        S.LinearLR(o, 0.53, 0.03, 2), SWALR(o, swa_lr=[0.009, 0.038], anneal_epochs=8,
                                            anneal_strategy="linear")], milestones=[10]))
    _run(scheduler, optimizer, before + 1)  # hand over after `before` updates
    start = catalogue.scheduler_count(scheduler)
    rates = catalogue.read_scheduler(scheduler, optimizer, "momentum")
    expected, _ = _run(scheduler, optimizer, STEPS)
    for group, (rate, _) in enumerate(rates):
        harness.check_schedule(f"sequential-linear-swalr[{group}]", lambda r=rate: r,
                               expected[:, group], "float64", counts=np.arange(start, start + STEPS))
