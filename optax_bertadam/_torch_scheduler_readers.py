"""Readers of live PyTorch schedulers that only a step-by-step replay reproduces.

Each ``read_*`` function reads the attributes of a live scheduler object (it never imports
torch: classes are recognised by ``type(obj).__module__`` and ``__qualname__``) and returns one
schedule per parameter group, built by :mod:`optax_bertadam.schedules.pytorch`:

* :func:`read_swalr`: ``torch.optim.swa_utils.SWALR`` -> :func:`~optax_bertadam.schedules.pytorch.swa_lr`.
* :func:`read_chained_scheduler`: ``ChainedScheduler`` of any members (``CosineAnnealingLR`` in its
  recursive form, nested ``SequentialLR``/``ChainedScheduler``, ...);
* :func:`read_sequential_lr`: ``SequentialLR``, nested ones and momentum-cycling members included;
* :func:`read_torch_scheduler`: the :class:`~optax_bertadam.schedules.pytorch.TorchScheduler` of one
  group (the recursion the two above use).

The schedules are functions of :func:`scheduler_count`, the number of ``step()`` calls since the
scheduler was built (a resumed scheduler continues at its own count). A user's own Python
function (``LambdaLR``/``MultiplicativeLR``'s ``lr_lambda``, ``CyclicLR``'s ``scale_fn``) cannot be
read: it is refused, unless ``read_lambda`` turns it into a ``jax.numpy`` function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from optax_bertadam.schedules import pytorch as torch_schedules
from optax_bertadam.schedules.pytorch import CycleSchedules, TorchScheduler

Schedule = Callable[[Any], Any]
# read_lambda(function, where) -> a jnp multiplier of the count, or None when it is not one it knows.
LambdaReader = Callable[[Any, str], "Schedule | None"]

_LR_SCHEDULER = "torch.optim.lr_scheduler"
_SWA_UTILS = "torch.optim.swa_utils"
_COMPOSITES = ("SequentialLR", "ChainedScheduler")
_LEAVES = ("LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR",
           "ExponentialLR", "PolynomialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
           "CyclicLR", "OneCycleLR")

#: Counts tabulated on the device when a replay is built (later counts are replayed on the host).
DEFAULT_NUM_STEPS = 10_000


def _kind(obj: Any) -> tuple[str, str]:
    return type(obj).__module__, type(obj).__qualname__


def _class_name(scheduler: Any, where: str) -> str:
    module, name = _kind(scheduler)
    if module == _SWA_UTILS and name == "SWALR":
        return name
    if module == _LR_SCHEDULER and name in (*_LEAVES, *_COMPOSITES):
        return name
    raise ValueError(
        f"{where} is a {module}.{name}, which cannot be replayed; supported: "
        f"{', '.join([*_LEAVES, *_COMPOSITES, 'SWALR'])}"
    )


def scheduler_count(scheduler: Any) -> int:
    """How many times ``scheduler.step()`` has run since it was built: the count to resume at.

    A ``ChainedScheduler`` keeps no count of its own (its first member's); ``SWALR``'s is its
    ``_step_count - 1`` (what its rate depends on).

    Returns:
      The count (an int >= 0 for a scheduler built the usual way).
    """
    name = _kind(scheduler)[1]
    if name == "ChainedScheduler":
        return scheduler_count(scheduler._schedulers[0])
    if name == "SWALR":
        return int(scheduler._step_count) - 1
    return int(scheduler.last_epoch)


# torch's annealing functions (OneCycleLR's and SWALR's), by the strategy name they implement: a
# state dict of an older torch (OneCycleLR before 2.2) restores only the function.
_ANNEAL_FUNCTIONS = {"_annealing_cos": "cos", "_annealing_linear": "linear",
                     "_cosine_anneal": "cos", "_linear_anneal": "linear"}


def anneal_strategy(scheduler: Any, attribute: str) -> str:
    """``'cos'`` or ``'linear'`` of a OneCycleLR or SWALR, also from a state dict of an older torch.

    Raises:
      ValueError: an ``anneal_func`` that is not one of torch's own (a function of the user's).
    """
    strategy = getattr(scheduler, attribute, None)
    if strategy in ("cos", "linear"):
        return strategy
    function = getattr(scheduler, "anneal_func", None)
    name = getattr(function, "__name__", None)
    if name in _ANNEAL_FUNCTIONS:
        return _ANNEAL_FUNCTIONS[name]
    raise ValueError(
        f"{type(scheduler).__name__}.anneal_func={function!r} is not supported: expected torch's own "
        f"{' or '.join(_ANNEAL_FUNCTIONS)} (anneal_strategy 'cos' or 'linear')"
    )


def _refuse_user_function(where: str, function: Any) -> ValueError:
    return ValueError(
        f"{where}={function!r} is a function of your own, which cannot be read from the object: "
        "write it with jax.numpy and build the schedule with "
        "optax_bertadam.schedules.pytorch.replay_torch_schedulers(lr, TorchScheduler(...))"
    )


def read_torch_scheduler(
    scheduler: Any, group: int, *, read_lambda: LambdaReader | None = None, where: str = "scheduler"
) -> TorchScheduler:
    """Group ``group``'s values of a live scheduler (members included), as a :class:`TorchScheduler`.

    Args:
      scheduler: a live ``torch.optim.lr_scheduler`` object (``ReduceLROnPlateau`` excepted) or
        ``SWALR``.
      group: the parameter group's index.
      read_lambda: turns a ``LambdaLR``/``MultiplicativeLR`` function into a jnp multiplier, or
        returns ``None``; without it such members are refused.
      where: how errors name the scheduler.

    Returns:
      The :class:`TorchScheduler`.

    Raises:
      ValueError: for a class that cannot be replayed or a function of the user's own.
    """
    name = _class_name(scheduler, where)
    if name in _COMPOSITES:
        members = tuple(
            read_torch_scheduler(member, group, read_lambda=read_lambda,
                                 where=f"{where}._schedulers[{index}]")
            for index, member in enumerate(scheduler._schedulers)
        )
        milestones = tuple(int(m) for m in scheduler._milestones) if name == "SequentialLR" else ()
        return TorchScheduler(name, members=members, milestones=milestones)
    groups = scheduler.optimizer.param_groups
    values = groups[group]
    options: dict[str, Any] = {}
    if hasattr(scheduler, "base_lrs") and name not in ("CyclicLR", "OneCycleLR", "SWALR"):
        options["learning_rate"] = float(scheduler.base_lrs[group])
    if name in ("LambdaLR", "MultiplicativeLR"):
        function = scheduler.lr_lambdas[group]
        multiplier = None if read_lambda is None else read_lambda(function, f"{where}.lr_lambdas[{group}]")
        if multiplier is None:
            raise _refuse_user_function(f"{where}.lr_lambdas[{group}]", function)
        options["lr_lambda"] = multiplier
    elif name == "StepLR":
        options.update(step_size=scheduler.step_size, gamma=scheduler.gamma)
    elif name == "MultiStepLR":
        options.update(milestones=tuple(sorted(scheduler.milestones.elements())), gamma=scheduler.gamma)
    elif name == "ConstantLR":
        options.update(factor=scheduler.factor, total_iters=scheduler.total_iters)
    elif name == "LinearLR":
        options.update(start_factor=scheduler.start_factor, end_factor=scheduler.end_factor,
                       total_iters=scheduler.total_iters)
    elif name == "ExponentialLR":
        options.update(gamma=scheduler.gamma)
    elif name == "PolynomialLR":
        options.update(total_iters=scheduler.total_iters, power=scheduler.power)
    elif name == "CosineAnnealingLR":
        options.update(T_max=scheduler.T_max, eta_min=scheduler.eta_min)
    elif name == "CosineAnnealingWarmRestarts":
        options.update(T_0=scheduler.T_0, T_mult=scheduler.T_mult, eta_min=scheduler.eta_min)
    elif name == "CyclicLR":
        if scheduler._scale_fn_custom is not None:
            raise _refuse_user_function(f"{where}.scale_fn", scheduler._scale_fn_custom)
        up = int(round(scheduler.total_size * scheduler.step_ratio))
        options.update(
            base_lr=float(scheduler.base_lrs[group]), max_lr=float(scheduler.max_lrs[group]),
            step_size_up=up, step_size_down=int(round(scheduler.total_size)) - up,
            mode=scheduler.mode, gamma=scheduler.gamma, cycle_momentum=bool(scheduler.cycle_momentum),
        )
        if scheduler.cycle_momentum:
            options.update(base_momentum=float(scheduler.base_momentums[group]),
                           max_momentum=float(scheduler.max_momentums[group]))
    elif name == "OneCycleLR":
        phases = scheduler._schedule_phases
        total = scheduler.total_steps
        options.update(
            max_lr=float(values["max_lr"]), total_steps=total,
            pct_start=(phases[0]["end_step"] + 1) / total,
            anneal_strategy=anneal_strategy(scheduler, "_anneal_func_type"),
            cycle_momentum=bool(scheduler.cycle_momentum),
            div_factor=values["max_lr"] / values["initial_lr"],
            final_div_factor=values["initial_lr"] / values["min_lr"],
            three_phase=len(phases) == 3,
        )
        if scheduler.cycle_momentum:
            options.update(base_momentum=float(values["base_momentum"]),
                           max_momentum=float(values["max_momentum"]))
    else:  # SWALR
        options.update(swa_lr=float(values["swa_lr"]), anneal_epochs=scheduler.anneal_epochs,
                       anneal_strategy=anneal_strategy(scheduler, "_anneal_strategy"))
    return TorchScheduler(name, options)


def _first_leaf(spec: TorchScheduler) -> TorchScheduler:
    return _first_leaf(spec.members[0]) if spec.members else spec


def _read_replay(
    scheduler: Any, base_lrs: Sequence[float], expected: str, num_steps: int,
    read_lambda: LambdaReader | None,
) -> list[CycleSchedules]:
    name = _class_name(scheduler, "scheduler")
    if name != expected:
        raise ValueError(f"scheduler is a {name}, not a {expected}")
    schedules = []
    for group, base_lr in enumerate(base_lrs):
        spec = read_torch_scheduler(scheduler, group, read_lambda=read_lambda)
        # The group's lr before the first scheduler was built: what that one recorded as its
        # base (OneCycleLR may have replaced group['initial_lr'] since).
        first = _first_leaf(spec).option("learning_rate")
        learning_rate = float(base_lr) if first is None else first
        schedules.append(torch_schedules.replay_torch_schedulers(learning_rate, spec, num_steps))
    return schedules


def read_chained_scheduler(
    scheduler: Any, base_lrs: Sequence[float], *, num_steps: int = DEFAULT_NUM_STEPS,
    read_lambda: LambdaReader | None = None,
) -> list[CycleSchedules]:
    """Per group, the rate (and cycled momentum) a live ``ChainedScheduler`` sets at each count.

    Any members: ``CosineAnnealingLR`` (recursive: it anneals whatever rate the members before
    it left), ``SWALR``, ``SequentialLR``/``ChainedScheduler``, the closed-form classes, ...

    Args:
      scheduler: the live ``ChainedScheduler``.
      base_lrs: each group's ``initial_lr``, used where no member records the group's rate.
      num_steps: counts tabulated on the device (later ones are replayed on the host).
      read_lambda: see :func:`read_torch_scheduler`.

    Returns:
      One :class:`~optax_bertadam.schedules.pytorch.CycleSchedules` per group, functions of
      :func:`scheduler_count`.
    """
    return _read_replay(scheduler, base_lrs, "ChainedScheduler", num_steps, read_lambda)


def read_sequential_lr(
    scheduler: Any, base_lrs: Sequence[float], *, num_steps: int = DEFAULT_NUM_STEPS,
    read_lambda: LambdaReader | None = None,
) -> list[CycleSchedules]:
    """Per group, the rate and momentum a live ``SequentialLR`` sets at each count.

    Nested ``SequentialLR``/``ChainedScheduler`` members run as PyTorch runs them (one step ahead
    of what their parts compute alone); ``CyclicLR``/``OneCycleLR`` members with
    ``cycle_momentum`` give the momentum (each sets it while active, the others leave it);
    ``MultiplicativeLR`` after the first position multiplies the previous member's last rate.

    Args:
      scheduler: the live ``SequentialLR``.
      base_lrs: each group's ``initial_lr`` (the rate ``SequentialLR`` resets to when built).
      num_steps: counts tabulated on the device (later ones are replayed on the host).
      read_lambda: see :func:`read_torch_scheduler`.

    Returns:
      One :class:`~optax_bertadam.schedules.pytorch.CycleSchedules` per group (``momentum``
      ``None`` unless a member cycles it), functions of :func:`scheduler_count`.
    """
    return _read_replay(scheduler, base_lrs, "SequentialLR", num_steps, read_lambda)


def read_swalr(scheduler: Any, base_lrs: Sequence[float] | None = None) -> list[Schedule]:
    """Per group, the rate a live ``torch.optim.swa_utils.SWALR`` sets after each of its steps.

    Args:
      scheduler: the live ``SWALR``.
      base_lrs: each group's ``lr`` when SWALR took over (its rate at count 0). ``None``: recovered
        from the group's current ``lr`` as PyTorch recovers it at every step (exact while SWALR
        still anneals; once it holds ``swa_lr`` only that is known, and it is all that remains).

    Returns:
      One :func:`~optax_bertadam.schedules.pytorch.swa_lr` schedule per group, a function of
      :func:`scheduler_count`.
    """
    if _class_name(scheduler, "scheduler") != "SWALR":
        raise ValueError(f"scheduler is a {type(scheduler).__qualname__}, not a SWALR")
    groups = scheduler.optimizer.param_groups
    strategy = anneal_strategy(scheduler, "_anneal_strategy")
    epochs = int(scheduler.anneal_epochs)
    if base_lrs is None:
        step = scheduler_count(scheduler)
        if epochs == 0:
            step = max(1, step)
        alpha = torch_schedules._swa_alpha_cos if strategy == "cos" else torch_schedules._swa_alpha_linear
        a = alpha(max(0, min(1, step / max(1, epochs))))
        base_lrs = [
            g["swa_lr"] if a == 1 else (float(g["lr"]) - a * g["swa_lr"]) / (1 - a) for g in groups
        ]
    if len(base_lrs) != len(groups):
        raise ValueError(f"base_lrs has {len(base_lrs)} entries but the optimizer has {len(groups)} groups")
    return [
        torch_schedules.swa_lr(float(lr), float(g["swa_lr"]), epochs, strategy)
        for lr, g in zip(base_lrs, groups, strict=True)
    ]
