"""``from_torch`` against the live PyTorch objects it reads.

A matrix of optimizer x scheduler x parameter-group setups: each builds a real ``torch.optim`` /
transformers / BertAdam optimizer with its groups and a real scheduler, hands both to
:func:`optax_bertadam.from_torch`, and runs both on identical gradients through the warmup,
several cycles and past the end. Parameters after every update: float32 within 2e-5 of each
tensor's largest magnitude, float64 within 1e-12; per-group rates (``scheduler.get_last_lr()``
vs :func:`optax_bertadam.get_last_lr`): float32 within 1e-6 of the peak rate, float64 1e-12.
A mid-run hand-over continues in JAX from PyTorch's ``state_dict`` and ``last_epoch``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from pytorch_pretrained_bert.optimization import BertAdam as PublishedBertAdam
from torch.optim import lr_scheduler

import optax_bertadam as ob
from parity_tests.group_harness import run_group_parity, run_hand_over
from parity_tests.harness import (
    LR_TOL,
    PARAM_TOL,
    SMALL_SHAPES,
    TORCH_NO_DECAY,
    TorchSide,
    assert_within,
)
from torch_ref import BertAdam as DeepSpeedBertAdam

STEPS = 24


def two_groups(named, **no_decay_overrides):
    """BERT's no_decay split, the second group with its own overrides."""
    decay = [p for n, p in named.items() if not any(nd in n for nd in TORCH_NO_DECAY)]
    no_decay = [p for n, p in named.items() if any(nd in n for nd in TORCH_NO_DECAY)]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, **no_decay_overrides}]


def one_group(named, **_):
    return list(named.values())


def bert_next_lrs(optimizer):
    """BertAdam's rate of the next update per group (its own schedule times group['lr'])."""

    def next_lrs():
        rates = []
        for group in optimizer.param_groups:
            step = optimizer.state[group["params"][0]].get("step", 0)
            if isinstance(optimizer, DeepSpeedBertAdam):
                rates.append(optimizer._scheduled_lr(group, step))
            else:
                rates.append(group["lr"] * group["schedule"].get_lr(step, nowarn=True))
        return rates

    return next_lrs


# name: (make optimizer from groups, make scheduler from optimizer or None, groups, dtypes)
MATRIX = {
    "AdamW x get_scheduler(linear) x no_decay split": (
        lambda g: torch.optim.AdamW(g, lr=0.02, weight_decay=0.05),
        lambda o: transformers.get_scheduler("linear", o, num_warmup_steps=5, num_training_steps=18),
        lambda n: two_groups(n, lr=0.04), ("float32", "float64"),
    ),
    "AdamW(amsgrad) x CosineAnnealingLR x no_decay split": (
        lambda g: torch.optim.AdamW(g, lr=0.02, amsgrad=True, betas=(0.8, 0.95)),
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.002),
        lambda n: two_groups(n, lr=0.01, betas=(0.9, 0.99)), ("float32", "float64"),
    ),
    "Adam(L2) x OneCycleLR(three_phase, betas cycled) x no_decay split": (
        lambda g: torch.optim.Adam(g, lr=0.02, weight_decay=0.01),
        lambda o: lr_scheduler.OneCycleLR(o, max_lr=[0.05, 0.02], total_steps=STEPS,
                                          three_phase=True, pct_start=0.25),
        lambda n: two_groups(n), ("float32", "float64"),
    ),
    "SGD(nesterov) x CyclicLR(triangular2, momentum cycled) x no_decay split": (
        lambda g: torch.optim.SGD(g, lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda o: lr_scheduler.CyclicLR(o, base_lr=[0.005, 0.01], max_lr=0.05, step_size_up=4,
                                        step_size_down=3, mode="triangular2"),
        lambda n: two_groups(n), ("float32", "float64"),
    ),
    "SGD(dampening) x SequentialLR(LinearLR, ExponentialLR) x one group": (
        lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.02),
        lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.2, total_iters=5),
                                                lr_scheduler.ExponentialLR(o, 0.9)], [6]),
        one_group, ("float32",),
    ),
    "SGD x CosineAnnealingWarmRestarts(T_mult=2) x no_decay split": (
        lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.5),
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.001),
        lambda n: two_groups(n, lr=0.1), ("float64",),
    ),
    "Adam x ChainedScheduler(ConstantLR, MultiStepLR) x no_decay split": (
        lambda g: torch.optim.Adam(g, lr=0.02, amsgrad=True),
        lambda o: lr_scheduler.ChainedScheduler([lr_scheduler.ConstantLR(o, 0.5, total_iters=4),
                                                 lr_scheduler.MultiStepLR(o, [8, 8, 15], 0.5)]),
        lambda n: two_groups(n, lr=0.03), ("float32",),
    ),
    "AdamW x get_scheduler(polynomial, lr_end) x no_decay split": (
        lambda g: torch.optim.AdamW(g, lr=0.02),
        lambda o: transformers.get_scheduler(
            "polynomial", o, num_warmup_steps=4, num_training_steps=18,
            scheduler_specific_kwargs={"lr_end": 0.001, "power": 2.0}),
        lambda n: two_groups(n, lr=0.05), ("float64",),
    ),
    "DeepSpeed BertAdam(warmup_linear) x none x no_decay split": (
        lambda g: DeepSpeedBertAdam(g, lr=0.02, warmup=0.2, t_total=18, max_grad_norm=0.5),
        None, lambda n: two_groups(n, lr=0.04), ("float32", "float64"),
    ),
    "DeepSpeed BertAdam x get_scheduler(cosine) x one group": (
        lambda g: DeepSpeedBertAdam(g, lr=0.02, weight_decay=0.01),
        lambda o: transformers.get_scheduler("cosine", o, num_warmup_steps=4, num_training_steps=18),
        one_group, ("float32",),
    ),
    "pytorch_pretrained_bert BertAdam(warmup_linear) x none x no_decay split": (
        lambda g: PublishedBertAdam(g, lr=0.02, warmup=0.2, t_total=18),
        None, lambda n: two_groups(n, lr=0.04), ("float32", "float64"),
    ),
    "pytorch_pretrained_bert BertAdam(warmup_cosine) x none x one group": (
        lambda g: PublishedBertAdam(g, lr=0.02, warmup=0.1, t_total=18, schedule="warmup_cosine"),
        None, one_group, ("float32",),
    ),
    "Adafactor(lr) x get_scheduler(cosine_with_restarts) x no_decay split": (
        lambda g: transformers.Adafactor(g, lr=0.02, relative_step=False, scale_parameter=True,
                                         beta1=0.9, weight_decay=0.01),
        lambda o: transformers.get_scheduler(
            "cosine_with_restarts", o, num_warmup_steps=3, num_training_steps=18,
            scheduler_specific_kwargs={"num_cycles": 2}),
        lambda n: two_groups(n), ("float32",),
    ),
    "Adafactor(relative_step) x AdafactorSchedule x one group": (
        lambda g: transformers.Adafactor(g, lr=None),
        lambda o: transformers.optimization.AdafactorSchedule(o),
        one_group, ("float32",),
    ),
}
CASES = [(name, dtype) for name, case in MATRIX.items() for dtype in case[3]]


@pytest.mark.parametrize("name, dtype", CASES, ids=[f"{n} [{d}]" for n, d in CASES])
def test_from_torch_matrix(name, dtype):
    make_optimizer, make_scheduler, make_groups, _ = MATRIX[name]

    def make_torch(named):
        optimizer = make_optimizer(make_groups(named))
        scheduler = make_scheduler(optimizer) if make_scheduler else None
        if "BertAdam" in name:
            next_lr = bert_next_lrs(optimizer)
        elif "relative_step" in name:
            next_lr = None  # AdafactorSchedule reports per-tensor rates, not the group's
        else:
            next_lr = scheduler.get_last_lr
        return TorchSide(optimizer, scheduler, next_lr)

    def make_optax(params, side):
        return ob.from_torch(side.optimizer, side.scheduler, named_parameters=side.named,
                             params=params)

    def make_torch_named(named):
        side = make_torch(named)
        side.named = list(named.items())
        return side

    param_error, lr_error = run_group_parity(
        make_torch_named, make_optax, dtype=dtype, steps=STEPS, shapes=SMALL_SHAPES
    )
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])


# A user's LambdaLR function and its jax.numpy twin. The warmup from 0 is the usual one: torch
# has set each group's lr to 0 when from_torch reads it, and k / 3 is a float32 quotient of the
# int32 count unless the count comes in the default integer dtype (float64 runs, issue 17).
USER_MULTIPLIERS = {
    "step decay": (lambda k: 0.9 ** (k // 3), lambda k: 0.9 ** (k // 3)),
    "warmup from 0 over 3": (lambda k: min(1.0, k / 3), lambda k: jnp.minimum(1.0, k / 3)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("function", sorted(USER_MULTIPLIERS))
def test_a_jnp_multiplier_as_scheduler_is_a_lambda_lr(function, dtype):
    """The documented replacement of a user's own LambdaLR: the same function in jax.numpy."""
    torch_function, jnp_function = USER_MULTIPLIERS[function]

    def make_torch(named):
        optimizer = torch.optim.SGD(two_groups(named, lr=0.05), lr=0.02, momentum=0.7,
                                    dampening=0.3, weight_decay=0.01)
        scheduler = lr_scheduler.LambdaLR(optimizer, torch_function)
        side = TorchSide(optimizer, scheduler, scheduler.get_last_lr)
        side.named = list(named.items())
        return side

    def make_optax(params, side):
        return ob.from_torch(side.optimizer, jnp_function, named_parameters=side.named,
                             params=params)

    param_error, lr_error = run_group_parity(make_torch, make_optax, dtype=dtype, steps=STEPS,
                                             shapes=SMALL_SHAPES)
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])


def without_first(named):
    """The parameters but the first: a PyTorch script that freezes one by leaving it out."""
    return dict(list(named.items())[1:])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("setup", ["AdamW x linear warmup", "SGD x OneCycleLR",
                                   "Adafactor(beta1) x cosine with restarts",
                                   "Adam(amsgrad in one group) x StepLR, a frozen parameter",
                                   "BertAdam(global clip, own schedule) x linear warmup, a frozen parameter"])
def test_mid_run_hand_over(setup, dtype):
    """PyTorch runs 10 updates; JAX continues from the state_dicts for 14 more; then back."""

    def make_torch(named):
        if setup == "AdamW x linear warmup":
            optimizer = torch.optim.AdamW(two_groups(named, lr=0.05), lr=0.02)
            return optimizer, transformers.get_linear_schedule_with_warmup(optimizer, 4, 20)
        if setup.startswith("Adam(amsgrad"):
            optimizer = torch.optim.Adam(two_groups(without_first(named), amsgrad=True), lr=0.02,
                                         weight_decay=0.01)
            return optimizer, lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
        if setup.startswith("BertAdam"):
            optimizer = DeepSpeedBertAdam(two_groups(without_first(named), lr=0.05), lr=0.02,
                                          warmup=0.2, t_total=20, schedule="warmup_cosine",
                                          clip_mode="global", max_grad_norm=0.5)
            return (optimizer, transformers.get_linear_schedule_with_warmup(optimizer, 3, 30),
                    bert_next_lrs(optimizer))
        if setup.startswith("Adafactor"):
            optimizer = transformers.Adafactor(two_groups(named, lr=0.03), lr=0.02, beta1=0.9,
                                               relative_step=False, weight_decay=0.01)
            return optimizer, transformers.get_cosine_with_hard_restarts_schedule_with_warmup(
                optimizer, 3, 24, num_cycles=2)
        optimizer = torch.optim.SGD(two_groups(named), lr=0.02, momentum=0.9)
        return optimizer, lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=24)

    param_error, lr_error, moment_error = run_hand_over(make_torch, dtype=dtype, before=10,
                                                        after=14, shapes=SMALL_SHAPES)
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])
    assert_within("param error of the moments sent back", moment_error, PARAM_TOL[dtype])


# ---------------------------------------------------------------------------------- refusals


def small_model():
    return torch.nn.Linear(2, 1)


def jax_params():
    return {"weight": jnp.zeros((1, 2)), "bias": jnp.zeros(1)}


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda m: (torch.optim.Adam(m.parameters(), maximize=True), None),
         r"Adam\(param_groups\[0\]\['maximize'\]=True\) is not supported"),
        (lambda m: (torch.optim.NAdam(m.parameters()), None),
         r"optimizer torch.optim.nadam.NAdam is not supported.*torch.optim.AdamW"),
        (lambda m: (o := torch.optim.SGD(m.parameters(), lr=0.1),
                    lr_scheduler.LambdaLR(o, lambda k: 0.5 ** k)),
         r"LambdaLR.lr_lambdas\[0\]=.* is a function of your own.*jax.numpy.*scheduler=multiplier"),
        (lambda m: (o := torch.optim.SGD(m.parameters(), lr=0.1),
                    lr_scheduler.MultiplicativeLR(o, lambda k: 0.5)),
         r"MultiplicativeLR.lr_lambdas=.* is a function of your own"),
        (lambda m: (o := torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
                    lr_scheduler.CyclicLR(o, 0.01, 0.1, scale_fn=lambda x: 1.0)),
         r"CyclicLR.scale_fn=.* is a function of your own"),
        (lambda m: (o := transformers.Adafactor(m.parameters(), lr=None),
                    lr_scheduler.ReduceLROnPlateau(o)),
         r"ReduceLROnPlateau with transformers.Adafactor\(relative_step=True\) \(param_groups\[0\]\) "
         r"is not supported: Adafactor ignores group\['lr'\]"),
        (lambda m: (o := transformers.Adafactor(m.parameters(), lr=0.1, relative_step=False,
                                                beta1=0.9),
                    transformers.optimization.GreedyLR(o)),
         r"GreedyLR with transformers.Adafactor\(beta1=0.9\).*pass beta1=None"),
        (lambda m: (o := torch.optim.SGD([{"params": [m.weight]}, {"params": [m.bias]}], lr=0.1),
                    lr_scheduler.ReduceLROnPlateau(o, min_lr=[0.0, 0.0]),
                    o.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]}))[:2],
         r"ReduceLROnPlateau.min_lrs has 2 entries but the optimizer has 3 param groups"),
        (lambda m: (PublishedBertAdam(m.parameters(), lr=0.1, schedule=__import__(
            "pytorch_pretrained_bert.optimization", fromlist=["x"]
        ).WarmupCosineWithHardRestartsSchedule(warmup=0.1, t_total=10)), None),
         r"WarmupCosineWithHardRestartsSchedule is not supported.*WarmupLinearSchedule"),
        # A group's lr set by hand after the scheduler was built: torch's StepLR goes on from it.
        (lambda m: (o := torch.optim.SGD(m.parameters(), lr=0.05),
                    lr_scheduler.StepLR(o, 3, 0.5),
                    o.param_groups[0].__setitem__("lr", 0.2))[:2],
         r"StepLR is not reproduced exactly here: .*is 0.2 but the reproduction gives 0.05"),
        # A group added after the scheduler: its per-group lists no longer match.
        (lambda m: (o := torch.optim.SGD([m.weight], lr=0.1), lr_scheduler.StepLR(o, 2),
                    o.add_param_group({"params": [m.bias]}))[:2],
         r"StepLR.base_lrs has 1 entries but the optimizer has 2 param groups"),
    ],
)
def test_what_cannot_be_reproduced_is_refused(make, match):
    model = small_model()
    optimizer, scheduler = make(model)
    with pytest.raises(ValueError, match=match):
        ob.from_torch(optimizer, scheduler, named_parameters=model.named_parameters(),
                      params=jax_params())


def test_mismatched_parameters_are_refused_and_unlisted_ones_are_frozen():
    model = small_model()
    optimizer = torch.optim.SGD([model.weight], lr=0.1)
    with pytest.raises(ValueError, match=r"shapes that differ .*weight <- weight: torch \(1, 2\) after "
                                         r"transform, Flax \(2, 1\)"):
        ob.from_torch(optimizer, named_parameters=model.named_parameters(),
                      params={"weight": jnp.zeros((2, 1)), "bias": jnp.zeros(1)})
    # With the transform the shapes agree; the bias is in no group: not trained, as in PyTorch.
    params = {"weight": jnp.zeros((2, 1)), "bias": jnp.zeros(1)}
    tx = ob.from_torch(optimizer, named_parameters=model.named_parameters(), params=params,
                       transform=lambda path, a: np.swapaxes(a, 0, 1) if a.ndim == 2 else a)
    state = tx.init(params)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    assert float(updates["bias"][0]) == 0.0 and float(updates["weight"][0, 0]) == pytest.approx(-0.1)
    assert [float(lr) for lr in ob.get_last_lr(state)] == pytest.approx([0.1])


def test_tied_weights_and_an_adafactor_kernel_layout_it_cannot_follow_are_refused():
    model = torch.nn.Sequential(torch.nn.Embedding(3, 2), torch.nn.Linear(2, 3, bias=False))
    model[1].weight = model[0].weight  # tied, as BERT's decoder and word embeddings
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    params = {"0": {"weight": jnp.zeros((3, 2))}, "1": {"weight": jnp.zeros((3, 2))}}
    with pytest.raises(ValueError, match=r"torch tensors behind two Flax leaves \(tied.*0/weight and "
                                         r"1/weight \(1.weight\)"):
        ob.from_torch(optimizer, named_parameters=model.named_parameters(remove_duplicate=False),
                      params=params)
    conv = torch.nn.Conv1d(2, 4, 3, bias=False)  # (out, in, width); Flax keeps (width, in, out)
    adafactor = transformers.Adafactor(conv.parameters(), lr=0.01, relative_step=False,
                                       scale_parameter=False)
    with pytest.raises(ValueError, match=r"weight: transform moves torch weight's axes other than by "
                                         r"swapping the last two.*Adafactor"):
        ob.from_torch(adafactor, named_parameters=conv.named_parameters(),
                      params={"weight": jnp.zeros((3, 2, 4))},
                      transform=lambda path, a: np.transpose(a, (2, 1, 0)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer_name", ["AdamW", "SGD"])
def test_parameters_without_requires_grad_are_not_trained(optimizer_name, dtype):
    """"Freeze the embeddings, then AdamW(model.parameters())": torch skips a parameter whose grad
    stays None (no decay, no momentum); so does the reproduction, through a hand-over too."""

    def make_torch(named):
        first = next(iter(named.values()))
        first.requires_grad_(False)
        if optimizer_name == "AdamW":
            optimizer = torch.optim.AdamW(two_groups(named, lr=0.05), lr=0.02, weight_decay=0.1)
        else:
            optimizer = torch.optim.SGD(two_groups(named), lr=0.02, momentum=0.9, weight_decay=0.1)
        return optimizer, lr_scheduler.StepLR(optimizer, 4, 0.5)

    param_error, lr_error, moment_error = run_hand_over(make_torch, dtype=dtype, before=6, after=8,
                                                        shapes=SMALL_SHAPES)
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])
    assert_within("param error of the moments sent back", moment_error, PARAM_TOL[dtype])


def test_user_keys_of_a_group_are_left_alone():
    model = small_model()
    optimizer = torch.optim.AdamW([{"params": [model.weight], "tag": torch.tensor([1.0, 2.0]),
                                    "name": "weights"}, {"params": [model.bias]}], lr=0.1)
    tx = ob.from_torch(optimizer, named_parameters=model.named_parameters(), params=jax_params())
    assert [float(lr) for lr in ob.get_last_lr(tx.init(jax_params()))] == pytest.approx([0.1, 0.1])


# ------------------------------------------------------- what an outside suite found (issue 17)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["LambdaLR warmup from 0", "MultiplicativeLR"])
def test_a_jnp_multiplier_scales_the_initial_lr_not_the_scheduled_one(kind, dtype):
    """A warmup LambdaLR has already set every group's lr to initial_lr * f(0) = 0: the rate of
    update k is initial_lr * f(k) (it used to be lr * f(k), 0 forever). For a MultiplicativeLR
    the jnp function is the running product of its factors."""

    def torch_multiplier(k):
        return min(1.0, k / 4)

    def make_torch(named):
        optimizer = torch.optim.AdamW(two_groups(named, lr=0.05), lr=0.02)
        if kind == "MultiplicativeLR":
            scheduler = lr_scheduler.MultiplicativeLR(optimizer, lambda k: 0.8)
        else:
            scheduler = lr_scheduler.LambdaLR(optimizer, torch_multiplier)
        side = TorchSide(optimizer, scheduler, scheduler.get_last_lr)
        side.named = list(named.items())
        return side

    def make_optax(params, side):
        if kind == "MultiplicativeLR":
            multiplier = ob.multiplicative_lr(1.0, lambda k: jnp.asarray(0.8), num_steps=STEPS).multiplier
        else:
            # In the default float dtype: k is the state's int32 count, and int32 / 4 is float32
            # even under jax.enable_x64.
            multiplier = lambda k: jnp.minimum(1.0, jnp.asarray(k, dtype=float) / 4)
        return ob.from_torch(side.optimizer, multiplier, named_parameters=side.named, params=params)

    param_error, lr_error = run_group_parity(make_torch, make_optax, dtype=dtype, steps=STEPS,
                                             shapes=SMALL_SHAPES)
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])


@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_a_one_cycle_lr_restored_from_an_older_torch_is_read(strategy):
    """torch < 2.2 kept OneCycleLR's annealing as `anneal_func` (a state dict of that time restores
    it); torch runs it, so from_torch reads it too."""

    def make_torch(named):
        optimizer = torch.optim.SGD(two_groups(named), lr=0.02, momentum=0.9)
        scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=[0.1, 0.05], total_steps=STEPS,
                                            anneal_strategy=strategy)
        del scheduler._anneal_func_type
        scheduler.anneal_func = getattr(scheduler, f"_annealing_{strategy}")
        side = TorchSide(optimizer, scheduler, scheduler.get_last_lr)
        side.named = list(named.items())
        return side

    def make_optax(params, side):
        return ob.from_torch(side.optimizer, side.scheduler, named_parameters=side.named, params=params)

    param_error, lr_error = run_group_parity(make_torch, make_optax, steps=STEPS, shapes=SMALL_SHAPES)
    assert_within("param error", param_error, PARAM_TOL["float32"])
    assert_within("lr error", lr_error, LR_TOL["float32"])

    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    del scheduler._anneal_func_type
    scheduler.anneal_func = lambda start, end, pct: start
    with pytest.raises(ValueError, match=r"OneCycleLR.anneal_func=.* is not supported: expected torch's own"):
        ob.from_torch(optimizer, scheduler, named_parameters=model.named_parameters(), params=jax_params())


def test_deepspeed_bertadam_is_recognised_by_its_groups_wherever_it_lives(tmp_path, monkeypatch):
    """A user's own copy of DeepSpeedExamples' optimization.py (a module of theirs, not torch_ref)."""
    import importlib.util
    import pathlib
    import sys

    import torch_ref.bertadam

    source = pathlib.Path(torch_ref.bertadam.__file__).read_text()
    (tmp_path / "my_training").mkdir()
    (tmp_path / "my_training" / "__init__.py").write_text("")
    (tmp_path / "my_training" / "optimization.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = importlib.util.spec_from_file_location(
        "my_training.optimization", tmp_path / "my_training" / "optimization.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "my_training.optimization", module)
    spec.loader.exec_module(module)
    assert type(module.BertAdam).__module__ != "torch_ref"

    def make_torch(named):
        optimizer = module.BertAdam(two_groups(named, lr=0.05), lr=0.02, warmup=0.2, t_total=20,
                                    schedule="warmup_cosine", max_grad_norm=0.5)
        side = TorchSide(optimizer, None, bert_next_lrs_of_copy(optimizer))
        side.named = list(named.items())
        return side

    def make_optax(params, side):
        return ob.from_torch(side.optimizer, None, named_parameters=side.named, params=params)

    param_error, lr_error = run_group_parity(make_torch, make_optax, steps=STEPS, shapes=SMALL_SHAPES)
    assert_within("param error", param_error, PARAM_TOL["float32"])
    assert_within("lr error", lr_error, LR_TOL["float32"])


def bert_next_lrs_of_copy(optimizer):
    def next_lrs():
        return [optimizer._scheduled_lr(g, optimizer.state[g["params"][0]].get("step", 0))
                for g in optimizer.param_groups]

    return next_lrs


def test_a_live_check_that_cannot_run_says_so():
    """A scheduler that cannot be copied: the reproduction stands but a warning says it is unchecked."""
    import threading

    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    scheduler.lock = threading.Lock()  # deepcopy cannot copy a lock
    with pytest.warns(ob.UncheckedReproductionWarning, match=r"could not check.*StepLR.*copying"):
        tx = ob.from_torch(optimizer, scheduler, named_parameters=model.named_parameters(),
                           params=jax_params())
    assert float(ob.get_lr(tx.init(jax_params()))) == pytest.approx(0.1)


def test_a_schedule_handed_over_at_its_end_is_checked_against_the_groups_peak():
    """LinearLR(end_factor=3.4e-32) handed over after its last step: torch's recursive form left
    each group's lr at -9e-20 where the closed form gives ~0. Against what is left of the run
    (round-off) the live check saw a 100% difference and refused (an explorer run found it);
    against the group's peak it is 1e-17. The run then continues as torch's does."""
    model = small_model()
    optimizer = torch.optim.Adam([{"params": [model.weight], "lr": 0.01236},
                                  {"params": [model.bias], "lr": 0.08072}])
    scheduler = lr_scheduler.LinearLR(optimizer, 0.1354, 3.371e-32, total_iters=4)
    for _ in range(5):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] < 0  # torch's round-off, below the closed form's 0
    tx = ob.from_torch(optimizer, scheduler, named_parameters=model.named_parameters(),
                       params=jax_params())
    names = ob.torch_parameter_names(model.named_parameters(), optimizer)
    state = ob.load_torch_state_dict(optimizer.state_dict(), tx, jax_params(), names,
                                     scheduler_state=scheduler.state_dict())
    rates = np.asarray(ob.get_last_lr(state), np.float64)
    peaks = np.asarray([g["initial_lr"] for g in optimizer.param_groups])
    assert_within("lr error", float(np.max(np.abs(rates - scheduler.get_last_lr()) / peaks)),
                  LR_TOL["float32"])


def test_the_published_bertadam_schedules_have_one_implementation():
    """from_torch reads pytorch_pretrained_bert's schedule objects into the one implementation of
    those schedules (schedules.bert.pretrained_bert_schedule): within a few float32 ulps of the
    published double-precision rate at every count of a long run (a naive float32
    progress = count / t_total was 9.1e-7 of the peak off here)."""
    from pytorch_pretrained_bert.optimization import (
        WarmupCosineSchedule,
        WarmupCosineWithWarmupRestartsSchedule,
    )

    from optax_bertadam.catalogue import pretrained_bert_multiplier
    from optax_bertadam.torch_state import _set_counts

    model = small_model()
    t_total = 50_000
    counts = np.arange(t_total + 200)
    for schedule in (WarmupCosineSchedule(warmup=0.1, t_total=t_total, cycles=2.5),
                     WarmupCosineWithWarmupRestartsSchedule(warmup=0.05, t_total=t_total, cycles=3)):
        optimizer = PublishedBertAdam(model.parameters(), lr=1.0, schedule=schedule)
        tx = ob.from_torch(optimizer, None, named_parameters=model.named_parameters(), params=jax_params())
        state = tx.init(jax_params())
        want = np.asarray([schedule.get_lr(int(k), nowarn=True) for k in counts])
        sampled = counts[::997]
        got = np.asarray([float(ob.get_lr(_set_counts(state, int(k)))) for k in sampled])
        error = float(np.max(np.abs(got - want[sampled])))
        everywhere = np.asarray(jax.vmap(pretrained_bert_multiplier(schedule))(jnp.asarray(counts)))
        error = max(error, float(np.max(np.abs(everywhere - want))))
        assert_within(f"{type(schedule).__name__} rate error (of the peak)", error, 5e-7)


@pytest.mark.parametrize("make", [
    lambda o: (lr_scheduler.StepLR(o, 2, 0.5), ob.step_lr(0.1, 2, 0.5)),
    lambda o: (lr_scheduler.ChainedScheduler([lr_scheduler.LinearLR(o, 0.25, total_iters=4),
                                              lr_scheduler.MultiStepLR(o, [3, 9], 0.3)]),
               ob.chained_scheduler([ob.linear_lr(0.1, 0.25, total_iters=4),
                                     ob.multi_step_lr(0.1, [3, 9], 0.3)])),
], ids=["StepLR", "ChainedScheduler"])
def test_a_hand_built_schedule_and_from_torch_give_one_state_layout(make):
    """ob.adamw(ob.step_lr(...)) and from_torch of the same StepLR hold the same state: base rate
    as the state's learning_rate, the multiplier as a value (one type, ScaledSchedule), so a
    checkpoint of one has the structure the other expects."""
    model = small_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01, eps=1e-8)
    scheduler, schedule = make(optimizer)
    params = jax_params()
    converted = ob.from_torch(optimizer, scheduler, named_parameters=model.named_parameters(),
                              params=params).init(params)
    group_state = converted.inner_states[0].inner_state
    by_hand = ob.adamw(schedule, weight_decay=0.01, eps=1e-8).init(params)
    assert jax.tree.structure(group_state) == jax.tree.structure(by_hand)
    for a, b in zip(jax.tree.leaves(group_state), jax.tree.leaves(by_hand), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(by_hand[-1].learning_rate) == pytest.approx(0.1)  # the base, not 1


# Compositions PyTorch runs that no closed form of the count reproduces: from_torch replays
# them as PyTorch steps them (schedules.pytorch.replay_torch_schedulers).
COMPOSITIONS = {
    "SequentialLR of a SequentialLR (one update ahead of its parts)": lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.SequentialLR(o, [lr_scheduler.ConstantLR(o, 0.5, 2),
                                          lr_scheduler.ExponentialLR(o, 0.9)], [3]),
            lr_scheduler.StepLR(o, 2, 0.5)], [8]),
    "SequentialLR of a ChainedScheduler": lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.ChainedScheduler([lr_scheduler.ConstantLR(o, 0.5, 2),
                                           lr_scheduler.ExponentialLR(o, 0.9)]),
            lr_scheduler.ExponentialLR(o, 0.8)], [5]),
    "SequentialLR of StepLR then OneCycleLR (which replaced initial_lr)": lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.StepLR(o, 2, 0.5),
            lr_scheduler.OneCycleLR(o, max_lr=[0.1, 0.2], total_steps=20, cycle_momentum=False)], [5]),
    "ChainedScheduler with CosineAnnealingLR (recursive form)": lambda o: lr_scheduler.ChainedScheduler(
        [lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.001), lr_scheduler.ExponentialLR(o, 0.95)]),
    "SequentialLR of LinearLR then OneCycleLR cycling the momentum": lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.LinearLR(o, 0.2, total_iters=4),
            lr_scheduler.OneCycleLR(o, max_lr=[0.1, 0.2], total_steps=30)], [4]),
    "SWALR (cos)": lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=[0.005, 0.02], anneal_epochs=6),
    "SWALR (linear) after warm restarts, chained": lambda o: lr_scheduler.ChainedScheduler(
        [lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2),
         torch.optim.swa_utils.SWALR(o, swa_lr=0.01, anneal_epochs=4, anneal_strategy="linear")]),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_compositions_torch_runs_are_reproduced(name, dtype):
    def make_torch(named):
        optimizer = torch.optim.SGD(two_groups(named, lr=0.05), lr=0.02, momentum=0.9)
        scheduler = COMPOSITIONS[name](optimizer)
        side = TorchSide(optimizer, scheduler, scheduler.get_last_lr)
        side.named = list(named.items())
        return side

    def make_optax(params, side):
        return ob.from_torch(side.optimizer, side.scheduler, named_parameters=side.named, params=params)

    param_error, lr_error = run_group_parity(make_torch, make_optax, dtype=dtype, steps=STEPS,
                                             shapes=SMALL_SHAPES)
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])
