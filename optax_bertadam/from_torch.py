"""``from_torch``: the optax transformation that does what a live PyTorch optimizer and scheduler do.

Nothing here imports torch: classes are recognised by ``type(obj).__module__`` and
``__qualname__``, hyperparameters are read from ``optimizer.param_groups`` (each group's own) and
the scheduler's attributes. Whatever cannot be reproduced exactly is refused with an error naming
the class or option and listing what is supported.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import lr as lr_states
from optax_bertadam import lamb, masks, optimizers, param_groups, torch_state, transforms
from optax_bertadam.schedules import bert as bert_schedules
from optax_bertadam.schedules import pytorch as torch_schedules
from optax_bertadam.schedules import transformers as hf_schedules
from optax_bertadam.schedules.classic import sequential_lr

PyTree = Any
Schedule = Callable[[Any], Any]

SUPPORTED_OPTIMIZERS = (
    "torch.optim.AdamW", "torch.optim.Adam", "torch.optim.SGD", "transformers.Adafactor",
    "torch_ref.BertAdam (DeepSpeed)", "pytorch_pretrained_bert.BertAdam",
    "timm.optim.Lamb (apex FusedLAMB)",
)
_MULTIPLICATIVE = ("StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR",
                   "PolynomialLR", "ChainedScheduler")
SUPPORTED_SCHEDULERS = (
    *_MULTIPLICATIVE, "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR",
    "OneCycleLR", "SequentialLR", "LambdaLR from transformers.get_scheduler / get_*_schedule*",
    "transformers.AdafactorSchedule", "ReduceLROnPlateau", "transformers.GreedyLR",
)
# transformers' LambdaLR functions (functools.partial of these), to our multipliers at rate 1.
_TRANSFORMERS_LAMBDAS: Mapping[str, Callable[..., Schedule]] = {
    "_get_constant_schedule_with_warmup_lr_lambda": hf_schedules.get_constant_schedule_with_warmup,
    "_get_linear_schedule_with_warmup_lr_lambda": hf_schedules.get_linear_schedule_with_warmup,
    "_get_cosine_with_hard_restarts_schedule_with_warmup_lr_lambda":
        hf_schedules.get_cosine_with_hard_restarts_schedule_with_warmup,
    "_get_inverse_sqrt_schedule_lr_lambda": hf_schedules.get_inverse_sqrt_schedule,
    "_get_cosine_with_min_lr_schedule_with_warmup_lr_rate_lambda":
        hf_schedules.get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    "_get_wsd_scheduler_lambda": hf_schedules.get_wsd_schedule,
}


def _kind(obj: Any) -> tuple[str, str]:
    return type(obj).__module__, type(obj).__qualname__


def _listing(items: Iterable[str]) -> str:
    return ", ".join(items)


# --------------------------------------------------------------------------------- schedulers


def _refuse_user_function(where: str, function: Any) -> ValueError:
    return ValueError(
        f"{where}={function!r} is a function of your own, which from_torch cannot read: write it "
        "with jax.numpy (jnp.where for branches) and pass it as from_torch(optimizer, "
        "scheduler=multiplier), a function count -> factor of each group's lr, as LambdaLR's "
        "lr_lambda; or build the optimizer with ob.param_groups(factory, groups, "
        "schedule=multiplier)"
    )


def _transformers_multiplier(function: Any, where: str) -> Schedule | None:
    """The multiplier of a transformers ``get_scheduler`` LambdaLR function; None: not one."""
    if getattr(function, "__module__", None) == "transformers.optimization" and getattr(
        function, "__name__", None
    ) == "_get_constant_lambda":
        return transforms.constant_schedule
    if not isinstance(function, functools.partial) or function.args:
        return None
    inner = function.func
    if getattr(inner, "__module__", None) != "transformers.optimization":
        return None
    name, kwargs = inner.__name__, dict(function.keywords)
    if name == "_get_cosine_schedule_with_warmup_lr_lambda":
        # One transformers function serves "cosine" and "cosine_with_min_lr".
        min_lr_rate = kwargs.pop("min_lr_rate", 0.0)
        if min_lr_rate:
            return hf_schedules.get_cosine_with_min_lr_schedule_with_warmup(
                1.0, min_lr_rate=min_lr_rate, **kwargs
            )
        return hf_schedules.get_cosine_schedule_with_warmup(1.0, **kwargs)
    if name == "_get_polynomial_decay_schedule_with_warmup_lr_lambda":
        # transformers divides by the optimizer's default lr (lr_init): the multiplier of group i
        # is (lr_init - lr_end) * remaining**power / lr_init + lr_end / lr_init.
        lr_init = kwargs.pop("lr_init")
        rate = hf_schedules.get_polynomial_decay_schedule_with_warmup(lr_init, **kwargs)
        return transforms.ScheduleProduct(rate, lambda count: 1.0 / lr_init)
    if name in _TRANSFORMERS_LAMBDAS:
        return _TRANSFORMERS_LAMBDAS[name](1.0, **kwargs)
    known = sorted([*_TRANSFORMERS_LAMBDAS, "_get_cosine_schedule_with_warmup_lr_lambda",
                    "_get_polynomial_decay_schedule_with_warmup_lr_lambda", "_get_constant_lambda"])
    raise ValueError(
        f"{where} is transformers' {name}, which from_torch does not know (transformers changed?); "
        f"supported: {_listing(known)}"
    )


def _chainable(scheduler: Any) -> torch_schedules.ChainableSchedule:
    """A multiplicative scheduler as a :class:`ChainableSchedule` of rate 1 (its multiplier)."""
    module, name = _kind(scheduler)
    if name == "StepLR":
        return torch_schedules.step_lr(1.0, scheduler.step_size, scheduler.gamma)
    if name == "MultiStepLR":
        return torch_schedules.multi_step_lr(
            1.0, sorted(scheduler.milestones.elements()), scheduler.gamma
        )
    if name == "ConstantLR":
        return torch_schedules.constant_lr(1.0, scheduler.factor, scheduler.total_iters)
    if name == "LinearLR":
        return torch_schedules.linear_lr(
            1.0, scheduler.start_factor, scheduler.end_factor, scheduler.total_iters
        )
    if name == "ExponentialLR":
        return torch_schedules.exponential_lr(1.0, scheduler.gamma)
    if name == "PolynomialLR":
        return torch_schedules.polynomial_lr(1.0, scheduler.total_iters, scheduler.power)
    if name == "ChainedScheduler":
        return torch_schedules.chained_scheduler([_chainable(s) for s in scheduler._schedulers])
    if name == "MultiplicativeLR":
        raise _refuse_user_function("MultiplicativeLR.lr_lambdas", scheduler.lr_lambdas)
    raise ValueError(
        f"scheduler {module}.{name} cannot be a member of ChainedScheduler here: only the "
        f"multiplicative schedulers compose ({_listing(_MULTIPLICATIVE)})"
    )


def _scheduler_rates(
    scheduler: Any, optimizer: Any, momentum_name: str | None
) -> list[tuple[Schedule | None, Schedule | None]]:
    """Per group: (the rate ``count -> lr``, or None to keep the optimizer's; the momentum)."""
    module, name = _kind(scheduler)
    groups = optimizer.param_groups
    if module == "transformers.optimization" and name == "AdafactorSchedule":
        # A reporting scheduler: Adafactor with relative_step ignores group['lr'].
        if any(g.get("relative_step") is False for g in groups):
            raise ValueError(
                "scheduler AdafactorSchedule is supported with relative_step=True only (it reports "
                "Adafactor's own rate); with relative_step=False use a LambdaLR"
            )
        return [(None, None)] * len(groups)
    if module != "torch.optim.lr_scheduler":
        raise ValueError(
            f"scheduler {module}.{name} is not supported; supported: {_listing(SUPPORTED_SCHEDULERS)}"
        )
    if getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("scheduler is invalid: it drives another optimizer than optimizer")
    for attribute in ("base_lrs", "max_lrs", "base_momentums", "max_momentums"):
        values = getattr(scheduler, attribute, None)
        if isinstance(values, (list, tuple)) and len(values) != len(groups):
            raise ValueError(
                f"{name}.{attribute} has {len(values)} entries but the optimizer has {len(groups)} "
                "param groups (a group added after the scheduler was built)"
            )
    if name == "OneCycleLR":
        late = [i for i, g in enumerate(groups) if "max_lr" not in g]
        if late:
            raise ValueError(
                f"OneCycleLR has no max_lr for param_groups{late} (groups added after the "
                "scheduler was built)"
            )
    base_lrs = list(scheduler.base_lrs) if hasattr(scheduler, "base_lrs") else [
        g["initial_lr"] for g in groups
    ]
    if name in _MULTIPLICATIVE:
        multiplier = _chainable(scheduler).multiplier
        return [(transforms.ScaledSchedule(float(lr), multiplier), None) for lr in base_lrs]
    if name == "LambdaLR":
        rates = []
        for index, function in enumerate(scheduler.lr_lambdas):
            where = f"LambdaLR.lr_lambdas[{index}]"
            multiplier = _transformers_multiplier(function, where)
            if multiplier is None:
                raise _refuse_user_function(where, function)
            rates.append((transforms.ScaledSchedule(float(base_lrs[index]), multiplier), None))
        return rates
    if name == "CosineAnnealingLR":
        return [(torch_schedules.cosine_annealing_lr(float(lr), scheduler.T_max, scheduler.eta_min),
                 None) for lr in base_lrs]
    if name == "CosineAnnealingWarmRestarts":
        return [(torch_schedules.cosine_annealing_warm_restarts(
            float(lr), scheduler.T_0, scheduler.T_mult, scheduler.eta_min), None) for lr in base_lrs]
    if name == "SequentialLR":
        for position, member in enumerate(scheduler._schedulers):
            member_name = _kind(member)[1]
            if member_name in ("SequentialLR", "ChainedScheduler"):
                # PyTorch undoes the members' construction steps one level deep only: a nested
                # sequence or chain runs off by one update from what its parts compute.
                raise ValueError(
                    f"SequentialLR._schedulers[{position}] is a {member_name}, which PyTorch steps "
                    "off by one inside a SequentialLR; not supported: flatten it (one "
                    "SequentialLR of single schedulers)"
                )
            if position and member_name == "MultiplicativeLR":
                raise ValueError(
                    f"SequentialLR._schedulers[{position}] is a MultiplicativeLR, which PyTorch "
                    "cannot restart at its milestone; it may only come first"
                )
        members = [_scheduler_rates(s, optimizer, momentum_name) for s in scheduler._schedulers]
        if any(momentum is not None for member in members for _, momentum in member):
            raise ValueError("SequentialLR of CyclicLR/OneCycleLR with cycle_momentum is not supported")
        return [
            (sequential_lr([member[g][0] for member in members], list(scheduler._milestones)), None)
            for g in range(len(groups))
        ]
    if name == "CyclicLR":
        if scheduler._scale_fn_custom is not None:
            raise _refuse_user_function("CyclicLR.scale_fn", scheduler._scale_fn_custom)
        up = int(round(scheduler.total_size * scheduler.step_ratio))
        down = int(round(scheduler.total_size)) - up
        rates = []
        for g in range(len(groups)):
            cycle = torch_schedules.cyclic_lr(
                float(base_lrs[g]), float(scheduler.max_lrs[g]), up, down, scheduler.mode,
                scheduler.gamma, scale_mode=scheduler.scale_mode,
                cycle_momentum=bool(scheduler.cycle_momentum),
                base_momentum=float(scheduler.base_momentums[g]) if scheduler.cycle_momentum else 0.8,
                max_momentum=float(scheduler.max_momentums[g]) if scheduler.cycle_momentum else 0.9,
            )
            rates.append((cycle.learning_rate, cycle.momentum))
        return _check_momentum(rates, momentum_name, name)
    if name == "OneCycleLR":
        phases = scheduler._schedule_phases
        total = scheduler.total_steps
        rates = []
        for group in groups:
            cycle = torch_schedules.one_cycle_lr(
                float(group["max_lr"]), total_steps=total,
                pct_start=(phases[0]["end_step"] + 1) / total,
                anneal_strategy=scheduler._anneal_func_type,
                cycle_momentum=bool(scheduler.cycle_momentum),
                base_momentum=float(group.get("base_momentum", 0.85)),
                max_momentum=float(group.get("max_momentum", 0.95)),
                div_factor=group["max_lr"] / group["initial_lr"],
                final_div_factor=group["initial_lr"] / group["min_lr"],
                three_phase=len(phases) == 3,
            )
            rates.append((cycle.learning_rate, cycle.momentum))
        return _check_momentum(rates, momentum_name, name)
    if name == "MultiplicativeLR":
        raise _refuse_user_function("MultiplicativeLR.lr_lambdas", scheduler.lr_lambdas)
    raise ValueError(
        f"scheduler {module}.{name} is not supported; supported: {_listing(SUPPORTED_SCHEDULERS)}"
    )


def _last_epoch(scheduler: Any) -> int:
    """The scheduler's update count (a ``ChainedScheduler`` keeps its members')."""
    if hasattr(scheduler, "last_epoch"):
        return int(scheduler.last_epoch)
    return _last_epoch(scheduler._schedulers[0])


def _optimizer_of(scheduler: Any) -> Any:
    return scheduler.optimizer if hasattr(scheduler, "optimizer") else _optimizer_of(scheduler._schedulers[0])


# How many updates of a copy of the live scheduler from_torch compares its reproduction with.
LIVE_CHECK_UPDATES = 600


def _check_against_the_live_scheduler(
    scheduler: Any, optimizer: Any, rates: list[tuple[Schedule | None, Schedule | None]],
    momentum_name: str | None, updates: int = LIVE_CHECK_UPDATES,
) -> None:
    """Refuse a reproduction that differs from what the live scheduler will do.

    A copy of ``scheduler`` (over placeholder parameters, so nothing of the model is copied) is
    stepped ``updates`` times from where it is; the rates (and cycled momenta) it gives each
    group must be the reproduction's at the same counts, to 1e-6 of the group's peak. This
    catches what a scheduler's attributes do not show: a group ``lr`` changed by hand after the
    scheduler was built, a scheduler built with a ``last_epoch`` its optimizer's rates do not
    match, or a member of a ``SequentialLR`` that replaced ``group['initial_lr']``.
    """
    import copy
    import warnings

    memo: dict[int, Any] = {id(optimizer.state): type(optimizer.state)()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            memo[id(p)] = p.new_empty(0) if hasattr(p, "new_empty") else p
    try:
        twin = copy.deepcopy(scheduler, memo)
    except Exception:  # an object that cannot be copied: nothing to compare with
        return
    name = _kind(scheduler)[1]

    def momentum_of(group):
        if momentum_name == "b1":
            return float(_scalar(group["betas"][0]))
        return float(_scalar(group[momentum_name])) if momentum_name else None

    expected = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for k in range(updates + 1):
            if k:
                try:
                    twin.step()
                except Exception:  # e.g. OneCycleLR past total_steps: the run ends there
                    break
            expected.append([(float(_scalar(g["lr"])), momentum_of(g))
                             for g in _optimizer_of(twin).param_groups])
    start = _last_epoch(scheduler)
    counts = np.arange(start, start + len(expected))
    with jax.enable_x64(True):
        for index, (rate, momentum) in enumerate(rates):
            for which, schedule in ((0, rate), (1, momentum)):
                if not callable(schedule):
                    continue
                want = np.asarray([e[index][which] for e in expected], np.float64)
                got = np.asarray(jax.vmap(schedule)(jnp.asarray(counts)), np.float64)
                scale = max(float(np.max(np.abs(want))), 1e-300)
                wrong = np.flatnonzero(~(np.abs(got - want) <= 1e-6 * scale))
                if wrong.size:
                    k = int(wrong[0])
                    what = "lr" if which == 0 else momentum_name
                    raise ValueError(
                        f"scheduler {name} is not reproduced exactly here: after {k} more "
                        f"scheduler.step() (last_epoch {start + k}) PyTorch's param_groups[{index}]"
                        f"['{what}'] is {float(want[k])!r} but the reproduction gives "
                        f"{float(got[k])!r}. Causes: "
                        "a group's lr changed by hand after the scheduler was built, a scheduler "
                        "built with a last_epoch its optimizer's lr does not match, or a "
                        "SequentialLR member (e.g. OneCycleLR) that replaced group['initial_lr']"
                    )


def _check_momentum(rates, momentum_name, scheduler_name):
    if momentum_name is None and any(m is not None for _, m in rates):
        raise ValueError(
            f"{scheduler_name}(cycle_momentum=True) cycles a momentum this optimizer does not have "
            "as momentum or betas[0]; pass cycle_momentum=False"
        )
    return rates


# ------------------------------------------------------------------- loss-driven schedulers


_LOSS_DRIVEN = (("torch.optim.lr_scheduler", "ReduceLROnPlateau"),
                ("transformers.optimization", "GreedyLR"))


def _loss_driven_rule(
    scheduler: Any, optimizer: Any
) -> tuple[hf_schedules.LossDrivenRule, list[float]] | None:
    """``(rule, initial rates)`` of ``ReduceLROnPlateau`` or transformers' ``GreedyLR``; else None."""
    name = _kind(scheduler)[1]
    groups = optimizer.param_groups
    if _kind(scheduler) not in _LOSS_DRIVEN:
        return None
    if scheduler.optimizer is not optimizer:
        raise ValueError("scheduler is invalid: it drives another optimizer than optimizer")

    def per_group(values: Any, attribute: str) -> list[float]:
        values = [float(_scalar(v)) for v in values]
        if len(values) != len(groups):
            raise ValueError(
                f"{name}.{attribute} has {len(values)} entries but the optimizer has {len(groups)} "
                "param groups (a group added after the scheduler was built)"
            )
        return values

    common = dict(mode=scheduler.mode, factor=float(scheduler.factor), patience=scheduler.patience,
                  threshold=float(scheduler.threshold), threshold_mode=scheduler.threshold_mode,
                  cooldown=scheduler.cooldown, eps=float(scheduler.eps))
    if name == "ReduceLROnPlateau":
        min_lrs = scheduler.min_lrs
        if getattr(scheduler, "default_min_lr", None) is not None:
            min_lrs = [scheduler.default_min_lr] * len(groups)  # what PyTorch does for new groups
        # The rates start from the groups' current lr (a plateau scheduler keeps no initial rates).
        initial = [float(_scalar(g["lr"])) for g in groups]
        rule = hf_schedules.plateau_rule(initial, min_lr=per_group(min_lrs, "min_lrs"), **common)
    else:
        # GreedyLR's reset goes back to the rates it was built with, which may not be today's.
        initial = per_group(scheduler._init_lrs, "_init_lrs")
        # `verbose` only prints; it changes no number.
        rule = hf_schedules.greedy_rule(
            initial, min_lr=per_group(scheduler.min_lrs, "min_lrs"),
            max_lr=per_group(scheduler.max_lrs, "max_lrs"), warmup=scheduler.warmup,
            smooth=bool(scheduler.smooth), window_size=scheduler.window_size,
            reset_start=scheduler.reset_start_original, **common,
        )
    return rule, initial


def _refuse_under_loss_driven(builder: _GroupOptimizer, index: int, scheduler_name: str) -> None:
    """Groups whose update is not ``rate * (update at rate 1)`` cannot follow a changing rate."""
    if builder.factory is not optimizers.adafactor:
        return
    if builder.kwargs["relative_step"]:
        raise ValueError(
            f"{scheduler_name} with transformers.Adafactor(relative_step=True) (param_groups"
            f"[{index}]) is not supported: Adafactor ignores group['lr'] then, so the scheduler "
            "changes only the rate it reports; pass relative_step=False and lr"
        )
    if builder.kwargs["beta1"] is not None:
        raise ValueError(
            f"{scheduler_name} with transformers.Adafactor(beta1={builder.kwargs['beta1']}) "
            f"(param_groups[{index}]) is not supported: Adafactor's first moment averages updates "
            "already multiplied by earlier rates, which a rate chosen by the loss cannot be "
            "applied to afterwards; pass beta1=None"
        )


class LossDrivenGroupsState(NamedTuple):
    """State of parameter groups under one loss-driven scheduler (``ReduceLROnPlateau``, ``GreedyLR``).

    Attributes:
      groups: the ``optax.partition`` state of the groups' optimizers, each at its initial rate.
      rates: the scheduler's state (``ReduceLROnPlateauState`` or ``GreedyLRState``) whose
        ``learning_rate`` and ``scale`` have one entry per group.
    """

    groups: Any
    rates: Any

    def next_learning_rate(self) -> jax.Array:
        """Every group's rate of the next update: its scale times its optimizer's own rate.

        Returns:
          A 1-d array, one entry per parameter group.
        """
        own = [jnp.asarray(s.next_learning_rate()) for _, s in lr_states.learning_rate_states(self.groups)]
        return self.rates.scale * jnp.stack(own).astype(self.rates.scale.dtype)


def _under_loss_driven_rule(
    groups: optax.GradientTransformation,
    label_tree: Callable[[PyTree], PyTree],
    rule: hf_schedules.LossDrivenRule,
) -> optax.GradientTransformationExtraArgs:
    """The groups' updates, group ``i``'s scaled by ``rate_i / initial rate_i`` (from earlier values).

    Every supported optimizer's update is linear in its rate (decoupled decay included), so
    scaling it is running the group at the scheduler's rate, as :func:`reduce_lr_on_plateau` does
    for one group. ``update`` requires ``value=``, the metric passed to ``scheduler.step``.
    """

    def init_fn(params: PyTree) -> LossDrivenGroupsState:
        return LossDrivenGroupsState(groups.init(params), rule.init())

    def update_fn(updates, state, params=None, *, value, **extra_args):
        hf_schedules.check_scalar_value(value)
        updates, inner = groups.update(updates, state.groups, params, **extra_args)
        scale = state.rates.scale
        count = scale.shape[0]

        def scaled(update, label):
            # Frozen parameters (label == count) have zero updates and no rate.
            return update * scale[label].astype(update.dtype) if label < count else update

        updates = jax.tree.map(scaled, updates, label_tree(updates))
        return updates, LossDrivenGroupsState(inner, rule.step(state.rates, value))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------------- optimizers


def _scalar(value: Any) -> Any:
    # 0-d tensor hyperparameters (torch allows lr=torch.tensor(...)) become Python numbers; other
    # values (a user's own group keys) are left alone.
    if hasattr(value, "item") and not isinstance(value, (bool, int, float)) and np.ndim(value) == 0:
        return value.item()
    return value


def _refuse_flag(group: Mapping[str, Any], index: int, class_name: str, flag: str) -> None:
    if group.get(flag):
        raise ValueError(
            f"{class_name}(param_groups[{index}]['{flag}']=True) is not supported by from_torch"
            + (": negate the gradients instead" if flag == "maximize" else "")
        )


_TIMM_LAMB_KEYS = {"lr", "bias_correction", "betas", "eps", "weight_decay", "grad_averaging",
                   "trust_clip", "always_adapt"}


def _timm_lamb_group(g: Mapping[str, Any], index: int) -> _GroupOptimizer:
    """Group ``index`` of a ``timm.optim.Lamb`` as :func:`optax_bertadam.nvidia_lamb`.

    timm pre-normalises the gradients of all groups together by ``defaults['max_grad_norm']``
    (a group's own key is not read): :func:`_timm_lamb_max_grad_norm` does it before the groups,
    so each group's copy has none. ``foreach`` only picks timm's arithmetic path.
    """
    if g.get("decoupled_decay", False):
        raise ValueError(
            f"timm Lamb(param_groups[{index}]['decoupled_decay']=True) is not supported by "
            "from_torch: its trust ratio reads the parameters after an lr-dependent shrink"
        )
    betas = tuple(_scalar(b) for b in g["betas"])
    return _GroupOptimizer(lamb.nvidia_lamb, dict(
        b1=betas[0], b2=betas[1], eps=g["eps"], weight_decay=g["weight_decay"],
        grad_averaging=bool(g["grad_averaging"]), max_grad_norm=None,
        bias_correction=bool(g["bias_correction"]), trust_clip=bool(g["trust_clip"]),
        always_adapt=bool(g["always_adapt"]), caution=bool(g.get("caution", False)),
    ), "b1")


def _timm_lamb_max_grad_norm(optimizer: Any, builders: list[Any]) -> float | None:
    """The norm timm's Lamb pre-normalises all its groups' gradients to (None: not a timm Lamb,
    or no pre-normalisation)."""
    if not builders or any(b.factory is not lamb.nvidia_lamb for b in builders):
        return None
    norm = _scalar(optimizer.defaults.get("max_grad_norm"))
    return None if norm is None else float(norm)


@dataclasses.dataclass
class _GroupOptimizer:
    factory: Callable[..., optax.GradientTransformation]
    kwargs: dict[str, Any]
    momentum_name: str | None  # the argument a cycled momentum goes to
    own_multiplier: Schedule | None = None  # an optimizer's own schedule (BertAdam), per group


def _group_optimizer(optimizer: Any, group: Mapping[str, Any], index: int) -> _GroupOptimizer:
    module, name = _kind(optimizer)
    g = {k: _scalar(v) for k, v in group.items() if k != "params"}
    if module.startswith("torch.optim") and name in ("Adam", "AdamW"):
        _refuse_flag(g, index, name, "maximize")
        betas = tuple(_scalar(b) for b in g["betas"])
        decoupled = name == "AdamW" or bool(g.get("decoupled_weight_decay", False))
        common = dict(b1=betas[0], b2=betas[1], eps=g["eps"], weight_decay=g["weight_decay"])
        if decoupled and not g.get("amsgrad", False):
            return _GroupOptimizer(optimizers.adamw, {**common, "correct_bias": True}, "b1")
        return _GroupOptimizer(
            optimizers.adam,
            {**common, "amsgrad": bool(g.get("amsgrad", False)), "decoupled_weight_decay": decoupled},
            "b1",
        )
    if module.startswith("torch.optim") and name == "SGD":
        _refuse_flag(g, index, name, "maximize")
        return _GroupOptimizer(optimizers.sgd, dict(
            momentum=g["momentum"], dampening=g["dampening"], weight_decay=g["weight_decay"],
            nesterov=bool(g["nesterov"]),
        ), "momentum")
    if module == "transformers.optimization" and name == "Adafactor":
        return _GroupOptimizer(optimizers.adafactor, dict(
            eps=tuple(g["eps"]), clip_threshold=g["clip_threshold"], decay_rate=g["decay_rate"],
            beta1=g["beta1"], weight_decay=g["weight_decay"],
            scale_parameter=bool(g["scale_parameter"]), relative_step=bool(g["relative_step"]),
            warmup_init=bool(g["warmup_init"]),
        ), None)
    if module.startswith("torch_ref") and name == "BertAdam":
        moment_dtype = getattr(optimizer, "moment_dtype", None)
        multiplier = bert_schedules.bert_multiplier(
            g["schedule"], g["t_total"], g["warmup"], schedule_kwargs=g.get("schedule_kwargs") or None
        )
        return _GroupOptimizer(optimizers.bertadam, dict(
            b1=g["b1"], b2=g["b2"], e=g["e"], weight_decay=g["weight_decay"],
            max_grad_norm=g["max_grad_norm"], clip_mode=g.get("clip_mode", "per_tensor"),
            moment_dtype=None if moment_dtype is None else jnp.dtype(str(moment_dtype).split(".")[-1]),
        ), None, multiplier)
    if module == "timm.optim.lamb" and name == "Lamb" and _TIMM_LAMB_KEYS <= set(g):
        return _timm_lamb_group(g, index)
    if module == "pytorch_pretrained_bert.optimization" and name == "BertAdam":
        return _GroupOptimizer(optimizers.bertadam, dict(
            b1=g["b1"], b2=g["b2"], e=g["e"], weight_decay=g["weight_decay"],
            max_grad_norm=g["max_grad_norm"],
        ), None, published_bert_multiplier(group["schedule"]))
    raise ValueError(
        f"optimizer {module}.{name} is not supported by from_torch; supported: "
        f"{_listing(SUPPORTED_OPTIMIZERS)}"
    )


@dataclasses.dataclass(frozen=True)
class PublishedBertMultiplier:
    """The multiplier of a ``pytorch_pretrained_bert`` 0.6.2 ``_LRSchedule`` at update ``count``.

    ``progress = count / t_total``, ``w`` = warmup (``-1`` read as 0), ``c`` = cycles:

    * ``ConstantLR``: 1; any schedule with ``t_total < 0``: 1;
    * ``WarmupConstantSchedule``: ``progress / w`` while ``progress < w``, then 1;
    * ``WarmupLinearSchedule``: ``progress / w``, then ``max((progress - 1) / (w - 1), 0)``: 0 at
      ``t_total`` and after (unlike DeepSpeed's ``warmup_linear``, which goes negative);
    * ``WarmupCosineSchedule``: ``progress / w``, then ``0.5 (1 + cos(2 pi c p))`` with
      ``p = (progress - w) / (1 - w)``.

    The warmup test is decided on the integer count (boundary computed in double precision).
    """

    kind: str
    t_total: float
    warmup: float
    cycles: float
    boundary: int

    def __call__(self, count: Any) -> Any:
        progress = jnp.asarray(count, dtype=float) / self.t_total
        if self.kind == "ConstantLR" or self.t_total < 0:
            return jnp.ones_like(progress)
        ramp = progress / self.warmup if self.warmup > 0 else jnp.zeros_like(progress)
        if self.kind == "WarmupConstantSchedule":
            after = jnp.ones_like(progress)
        elif self.kind == "WarmupLinearSchedule":
            after = jnp.maximum((progress - 1.0) / (self.warmup - 1.0), 0.0)
        else:
            p = (progress - self.warmup) / (1.0 - self.warmup)
            after = 0.5 * (1.0 + jnp.cos(math.pi * self.cycles * 2 * p))
        return jnp.where(jnp.asarray(count) < self.boundary, ramp, after)


def published_bert_multiplier(schedule: Any) -> PublishedBertMultiplier:
    """The :class:`PublishedBertMultiplier` of a ``pytorch_pretrained_bert`` schedule object."""
    kinds = ("ConstantLR", "WarmupConstantSchedule", "WarmupLinearSchedule", "WarmupCosineSchedule")
    module, name = _kind(schedule)
    if module != "pytorch_pretrained_bert.optimization" or name not in kinds:
        raise ValueError(
            f"pytorch_pretrained_bert.BertAdam schedule {module}.{name} is not supported (the "
            "restart schedules are not reproduced exactly in float32); supported: "
            f"{_listing(kinds)}"
        )
    t_total, warmup = float(schedule.t_total), float(schedule.warmup)
    boundary = 0
    if t_total > 0 and warmup > 0:
        boundary = bert_schedules.warmup_end_count(t_total, warmup)
    return PublishedBertMultiplier(name, t_total, warmup, float(getattr(schedule, "cycles", 0.5)),
                                   boundary)


# ---------------------------------------------------------------------------------- from_torch


def from_torch(
    optimizer: Any,
    scheduler: Any = None,
    *,
    named_parameters: Iterable[tuple[str, Any]],
    params: PyTree,
    name_map: Mapping[str, str] | None = None,
    transform: Callable[[str, np.ndarray], np.ndarray] | None = None,
) -> optax.GradientTransformation:
    r"""The optax transformation over ``params`` that does what ``optimizer`` and ``scheduler`` do.

    Reads the live PyTorch objects: the optimizer's class and every parameter group's own
    hyperparameters, the scheduler's class and attributes. Group :math:`i` becomes the matching
    optimizer of this package on the Flax parameters of that group, at the rate

    .. math:: \mathrm{lr}_{i,k} = \text{scheduler's rate of group } i \text{ at update } k

    (``initial_lr * lr_lambda(k)`` for a ``LambdaLR``, the scheduler's formula otherwise), as
    ``optimizer.step(); scheduler.step()`` once per update runs it. ``CyclicLR``/``OneCycleLR``
    momentum cycling is reproduced (``optax.inject_hyperparams`` drives ``b1`` or ``momentum``).
    Flax parameters whose torch parameter is in no group are not trained (zero updates), as in
    PyTorch. :func:`optax_bertadam.get_last_lr` lists the groups' rates like
    ``scheduler.get_last_lr()``.

    With a loss-driven scheduler (``ReduceLROnPlateau``, transformers' ``GreedyLR``, also as
    ``get_scheduler("reduce_lr_on_plateau" | "greedy")``) the transformation's ``update``
    requires ``value=``, the metric of ``scheduler.step(metric)``: update ``k`` runs at the rates
    the metrics of updates ``0 .. k-1`` chose, every group at its own rate within its own
    ``min_lrs``/``max_lrs``, one decision for all groups as in PyTorch. The groups' optimizers
    run at their initial rates (``GreedyLR``: its ``_init_lrs``) and each group's update is
    scaled by ``rate / initial rate``, exact because every supported update is linear in the rate.

    ``tx.init(params)`` starts a fresh run (update 0, zero moments). To continue a run mid-way:
    ``state = ob.load_torch_state_dict(optimizer.state_dict(), tx,
    params, ob.torch_parameter_names(model.named_parameters(), optimizer), name_map=...,
    transform=..., scheduler_state=scheduler.state_dict())``: the scheduler's ``last_epoch`` sets
    the count, a loss-driven scheduler's best value, counters and rates come along.

    Supported optimizers: ``torch.optim.AdamW`` (amsgrad too), ``Adam`` (L2 decay, amsgrad,
    ``decoupled_weight_decay``), ``SGD`` (momentum, dampening, nesterov, weight_decay),
    ``transformers.Adafactor``, DeepSpeed's ``torch_ref.BertAdam`` and
    ``pytorch_pretrained_bert.BertAdam`` (its ConstantLR/WarmupConstant/WarmupLinear/WarmupCosine
    schedule objects), ``timm.optim.Lamb`` (apex ``FusedLAMB``; its global pre-normalisation spans
    the groups). Schedulers: StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR,
    PolynomialLR, ChainedScheduler (of those), CosineAnnealingLR, CosineAnnealingWarmRestarts,
    CyclicLR (built-in modes), OneCycleLR, SequentialLR (of supported schedulers), every
    transformers ``get_scheduler`` LambdaLR, ``AdafactorSchedule``, ``ReduceLROnPlateau``,
    ``GreedyLR``; or a jnp function ``count -> factor`` of each group's ``lr`` (a ``LambdaLR``
    written with ``jax.numpy``).
    Refused (``ValueError`` naming it): ``maximize=True``, timm Lamb's ``decoupled_decay=True``,
    a ``LambdaLR``/``MultiplicativeLR`` of a Python function of your own, a custom ``CyclicLR.scale_fn``, the restart schedules of
    ``pytorch_pretrained_bert``, a loss-driven scheduler over ``Adafactor`` with
    ``relative_step=True`` or ``beta1``, a scheduler whose per-group lists no longer match the
    groups, and any other class.

    Args:
      optimizer: the live ``torch.optim.Optimizer``.
      scheduler: its scheduler, stepped once per ``optimizer.step()`` (a loss-driven one with
        the metric); a jnp function ``count -> factor`` of each group's lr; or ``None``.
      named_parameters: ``model.named_parameters()``.
      params: the Flax parameter tree the transformation will update.
      name_map: Flax path (``/``-joined) -> torch name; default: the path with ``.``.
      transform: ``transform(flax_path, array)`` from torch's layout to Flax's (e.g.
        :func:`optax_bertadam.transpose_kernels`), used to check the shapes.

    Returns:
      An ``optax.GradientTransformation`` (an ``optax.partition`` over the groups); under a
      loss-driven scheduler an ``optax.GradientTransformationExtraArgs`` whose ``update``
      requires ``value=``.

    >>> import torch, jax.numpy as jnp, optax_bertadam as ob
    >>> model = torch.nn.Linear(2, 1)
    >>> optimizer = torch.optim.SGD([{"params": [model.weight]},
    ...                              {"params": [model.bias], "lr": 0.5}], lr=0.1, momentum=0.9)
    >>> scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    >>> params = {"weight": jnp.zeros((1, 2)), "bias": jnp.zeros(1)}
    >>> tx = ob.from_torch(optimizer, scheduler, named_parameters=model.named_parameters(),
    ...                    params=params)
    >>> [float(lr) for lr in ob.get_last_lr(tx.init(params))]
    [0.10000000149011612, 0.5]

    A plateau scheduler: the metric goes in as ``value=``.

    >>> plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    >>> tx = ob.from_torch(optimizer, plateau, named_parameters=model.named_parameters(),
    ...                    params=params)
    >>> state = tx.init(params)
    >>> grads = {"weight": jnp.ones((1, 2)), "bias": jnp.ones(1)}
    >>> for loss in (1.0, 1.0):  # no improvement on the second value: every group halves
    ...     _, state = tx.update(grads, state, params, value=loss)
    >>> [round(float(lr), 6) for lr in ob.get_last_lr(state)]
    [0.05, 0.25]
    """
    groups = list(optimizer.param_groups) if hasattr(optimizer, "param_groups") else None
    if not groups:
        raise TypeError(f"optimizer={optimizer!r} is invalid: expected a torch.optim.Optimizer")
    builders = [_group_optimizer(optimizer, group, i) for i, group in enumerate(groups)]
    # DeepSpeed BertAdam's clip_mode='global' clips its groups together: done before the groups.
    max_norm, clipped_together = param_groups.global_clip_across_groups(
        optimizers.bertadam,
        {i: b.kwargs for i, b in enumerate(builders) if b.factory is optimizers.bertadam},
    )
    momentum_names = {b.momentum_name for b in builders}
    if scheduler is not None and _kind(scheduler) in _LOSS_DRIVEN:
        for index, builder in enumerate(builders):
            _refuse_under_loss_driven(builder, index, _kind(scheduler)[1])
    loss_driven = None if scheduler is None else _loss_driven_rule(scheduler, optimizer)
    if loss_driven is not None:
        rates = [(rate, None) for rate in loss_driven[1]]
    elif scheduler is None:
        rates = [(None, None)] * len(groups)
    elif callable(scheduler) and not hasattr(scheduler, "optimizer"):
        multiplier = torch_schedules._check_jnp_function("scheduler", scheduler)
        rates = [(transforms.ScaledSchedule(float(_scalar(g["lr"])), multiplier), None)
                 for g in groups]
    else:
        rates = _scheduler_rates(scheduler, optimizer, next(iter(momentum_names)))
        _check_against_the_live_scheduler(scheduler, optimizer, rates, next(iter(momentum_names)))

    # Which group each Flax leaf belongs to.
    named = {str(n): p for n, p in named_parameters}
    group_of = {id(p): i for i, g in enumerate(groups) for p in g["params"]}
    paths_and_leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    paths = [masks.parameter_name(path) for path, _ in paths_and_leaves]
    mapping = {p: p.replace("/", ".") for p in paths} if name_map is None else dict(name_map)
    problems, labels = [], []
    frozen = len(groups)
    flax_of_tensor: dict[int, str] = {}
    for path, (_, leaf) in zip(paths, paths_and_leaves, strict=True):
        torch_name = mapping.get(path)
        if torch_name is None or torch_name not in named:
            problems.append(f"{path} (torch name {torch_name!r} not in named_parameters)")
            labels.append(frozen)
            continue
        tensor = named[torch_name]
        if id(tensor) in flax_of_tensor:
            # Tied weights (named_parameters(remove_duplicate=False)): torch sums the gradients of
            # one tensor; two Flax leaves would be trained apart.
            problems.append(f"{path} and {flax_of_tensor[id(tensor)]} are one torch tensor "
                            f"({torch_name}, tied): keep one Flax parameter for it")
        flax_of_tensor[id(tensor)] = path
        shape = tuple(tensor.shape)
        if transform is not None:
            moved_shape = np.shape(transform(path, np.broadcast_to(np.zeros((), np.float32), shape)))
            group = group_of.get(id(tensor))
            if (group is not None and builders[group].factory is optimizers.adafactor
                    and len(shape) >= 2 and torch_state.axes_moved_by(transform, path, shape) is None):
                problems.append(
                    f"{path}: transform moves torch {torch_name}'s axes other than by swapping the "
                    "last two, but transformers.Adafactor factors its second moment over the last "
                    "two axes, which then differ"
                )
            shape = moved_shape
        if shape != tuple(np.shape(leaf)):
            problems.append(f"{path}: torch {torch_name} has shape {shape}, Flax {np.shape(leaf)}")
        # A parameter without requires_grad never gets a gradient: torch.optim skips it.
        trained = getattr(tensor, "requires_grad", True)
        labels.append(group_of.get(id(tensor), frozen) if trained else frozen)
    in_flax = {id(named[mapping[p]]) for p in paths if mapping.get(p) in named}
    untracked = [f"param_groups[{i}]['params'][{j}]" for i, g in enumerate(groups)
                 for j, p in enumerate(g["params"]) if id(p) not in in_flax]
    if untracked:
        problems.append("torch parameters of the optimizer with no Flax parameter: "
                        + ", ".join(untracked[:10]))
    if problems:
        raise ValueError("from_torch: the parameters do not match: " + "; ".join(problems[:20]))

    transformations: dict[int, optax.GradientTransformation] = {}
    for index, (builder, group, (rate, momentum)) in enumerate(zip(builders, groups, rates, strict=True)):
        lr = _scalar(group["lr"])
        if rate is None:
            rate = lr  # a constant rate, or None (Adafactor's relative step)
        kwargs = dict(builder.kwargs)
        if builder.own_multiplier is not None:
            # BertAdam's own schedule multiplies the (scheduled) group lr.
            base = rate if callable(rate) else None
            rate = transforms.ScheduleProduct(base, builder.own_multiplier) if base is not None else (
                transforms.ScaledSchedule(float(rate), builder.own_multiplier))
        if builder.factory is optimizers.adafactor and kwargs["relative_step"]:
            rate = None
        try:
            if momentum is None:
                transformations[index] = builder.factory(rate, **kwargs)
            else:
                static = tuple(k for k in kwargs if k != builder.momentum_name)
                injected = optax.inject_hyperparams(
                    builder.factory, static_args=("learning_rate", *static)
                )
                transformations[index] = injected(
                    learning_rate=rate, **{**kwargs, builder.momentum_name: momentum}
                )
        except (TypeError, ValueError) as error:
            raise type(error)(f"param_groups[{index}]: {error}") from error
    if frozen in labels:
        transformations[frozen] = optax.set_to_zero()

    def label_tree(tree: PyTree) -> PyTree:
        return jax.tree.unflatten(jax.tree.structure(tree), labels)

    partition = param_groups.clip_groups_together(
        max_norm, clipped_together, label_tree, optax.partition(transformations, label_tree)
    )
    lamb_norm = _timm_lamb_max_grad_norm(optimizer, builders)
    if lamb_norm is not None:
        # timm's Lamb divides every group's gradients by one global norm first (trained only).
        trained = lambda tree: jax.tree.map(lambda label: label != frozen, label_tree(tree))
        partition = optax.chain(
            optax.masked(lamb.clip_by_global_norm_ratio(lamb_norm), trained), partition
        )
    if loss_driven is None:
        return partition
    return _under_loss_driven_rule(partition, label_tree, loss_driven[0])
