"""``from_torch``: the optax transformation that does what a live PyTorch optimizer and scheduler do.

Nothing here imports torch: classes are recognised by ``type(obj).__module__`` and
``__qualname__``, hyperparameters are read from ``optimizer.param_groups`` (each group's own) and
the scheduler's attributes. Whatever cannot be reproduced exactly is refused with an error naming
the class or option and listing what is supported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import (
    _validation,
    catalogue,
    optimizers,
    param_groups,
    torch_params,
    torch_state,
    transforms,
)
from optax_bertadam import lr as lr_states
from optax_bertadam.schedules import loss_driven

PyTree = Any
Schedule = Callable[[Any], Any]

def _at_default_int(count: Any, function: Callable[[Any], Any]) -> Any:
    """A user's ``LambdaLR`` multiplier at ``count`` in the default integer dtype.

    torch evaluates ``lr_lambda(k)`` in Python floats; the jax.numpy twin sees the count in the
    default integer dtype (int64 in a float64 run), so that ``k / w`` is a float64 quotient there,
    not the float32 one an int32 count gives.
    """
    return function(jnp.asarray(count, dtype=int))


def _last_epoch(scheduler: Any) -> int:
    """The scheduler's update count (a ``ChainedScheduler`` keeps its members')."""
    if hasattr(scheduler, "last_epoch"):
        return int(scheduler.last_epoch)
    if hasattr(scheduler, "last_batch_iteration"):  # DeepSpeed's: -1 when built
        return int(scheduler.last_batch_iteration) + 1
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
    group must be the reproduction's at the same counts, to 1e-6 of the group's peak (its
    ``initial_lr``/``max_lr`` or the largest rate checked). This
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
    except Exception as error:  # an object that cannot be copied: nothing to compare with
        warnings.warn(
            f"from_torch could not check its reproduction of {catalogue.class_of(scheduler)} against "
            f"the live scheduler: copying the scheduler failed ({type(error).__name__}: {error}). "
            "The rates follow the scheduler's attributes but are unverified: compare "
            "ob.get_last_lr(state) with scheduler.get_last_lr() over a few updates",
            _validation.UncheckedReproductionWarning, stacklevel=3,
        )
        return
    name = type(scheduler).__qualname__

    def momentum_of(group):
        if momentum_name == "b1":
            return float(catalogue.scalar(group["betas"][0]))
        return float(catalogue.scalar(group[momentum_name])) if momentum_name else None

    expected = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for k in range(updates + 1):
            if k:
                try:
                    twin.step()
                except Exception:  # e.g. OneCycleLR past total_steps: the run ends there
                    break
            expected.append([(float(catalogue.scalar(g["lr"])), momentum_of(g))
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
                if which == 0:
                    # The group's peak, not only what is left of it: a schedule handed over at
                    # its end (a LinearLR to ~0, whose recursive form torch leaves at -9e-20)
                    # has only round-off left to compare.
                    group = optimizer.param_groups[index]
                    scale = max([scale, *(abs(float(catalogue.scalar(group[key])))
                                          for key in ("initial_lr", "max_lr") if key in group)])
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


# ------------------------------------------------------------------- loss-driven schedulers


def _refuse_under_loss_driven(builder: catalogue.GroupOptimizer, index: int, scheduler_name: str) -> None:
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
    rule: loss_driven.LossDrivenRule,
) -> optax.GradientTransformationExtraArgs:
    """The groups' updates, group ``i``'s scaled by ``rate_i / initial rate_i`` (from earlier values).

    Every supported optimizer's update is linear in its rate (decoupled decay included), so
    scaling it is running the group at the scheduler's rate, as :func:`reduce_lr_on_plateau` does
    for one group. ``update`` requires ``value=``, the metric passed to ``scheduler.step``.
    """

    def init_fn(params: PyTree) -> LossDrivenGroupsState:
        return LossDrivenGroupsState(groups.init(params), rule.init())

    def update_fn(updates, state, params=None, *, value, **extra_args):
        loss_driven.check_scalar_value(value)
        updates, inner = groups.update(updates, state.groups, params, **extra_args)
        scale = state.rates.scale
        count = scale.shape[0]

        def scaled(update, label):
            # Frozen parameters (label == count) have zero updates and no rate.
            return update * scale[label].astype(update.dtype) if label < count else update

        updates = jax.tree.map(scaled, updates, label_tree(updates))
        return updates, LossDrivenGroupsState(inner, rule.step(state.rates, value))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

# ---------------------------------------------------------------------------------- from_torch


def from_torch(
    optimizer: Any,
    scheduler: Any = None,
    *,
    named_parameters: Iterable[tuple[str, Any]],
    params: PyTree,
    name_map: torch_params.NameMap = None,
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

    ``scheduler`` as a jnp function ``f`` follows ``LambdaLR``'s convention: group ``i`` runs at
    ``initial_lr_i * f(k)``, ``initial_lr`` being the lr the group had before any scheduler changed
    it (torch records it when a scheduler is built; a warmup ``LambdaLR`` has already set ``lr`` to
    ``initial_lr * f(0)``, often 0). For a ``MultiplicativeLR(optimizer, g)`` pass the running
    product ``f(k) = g(1) g(2) ... g(k)``, e.g. ``ob.multiplicative_lr(1.0, g, num_steps).multiplier``.

    The classes it reads are the records of :mod:`optax_bertadam.catalogue`. Optimizers:
    ``torch.optim.AdamW`` (amsgrad too), ``Adam`` (L2 decay, amsgrad,
    ``decoupled_weight_decay``), ``SGD`` (momentum, dampening, nesterov, weight_decay),
    ``Adagrad`` (lr_decay, weight_decay, initial_accumulator_value, eps), ``RMSprop`` (alpha,
    eps, weight_decay, momentum, centered), ``transformers.Adafactor``, DeepSpeedExamples'
    ``BertAdam`` (bing_bert's ``optimization.py``, recognised by its parameter groups wherever it lives) and
    ``pytorch_pretrained_bert.BertAdam`` (its ConstantLR/WarmupConstant/WarmupLinear/WarmupCosine/
    WarmupCosineWithWarmupRestarts schedule objects), ``timm.optim.Lamb`` (apex ``FusedLAMB``;
    its global pre-normalisation spans the groups), DeepSpeed's ``FusedAdam`` and
    ``DeepSpeedCPUAdam`` (``adam_w_mode``, ``bias_correction``) and ``FusedLamb``
    (``max_coeff``, ``min_coeff``, ``eps_inside_sqrt``, ``bias_correction``). Schedulers: StepLR, MultiStepLR,
    ConstantLR, LinearLR, ExponentialLR, PolynomialLR, ChainedScheduler (of those),
    CosineAnnealingLR, CosineAnnealingWarmRestarts, CyclicLR (built-in modes), OneCycleLR,
    SequentialLR (of supported schedulers), every transformers ``get_scheduler`` LambdaLR,
    ``AdafactorSchedule``, ``ReduceLROnPlateau``, ``GreedyLR``, ``torch.optim.swa_utils.SWALR``,
    compositions PyTorch runs (nested ``SequentialLR``/``ChainedScheduler``, ``CosineAnnealingLR``
    in a chain: replayed as PyTorch steps them), DeepSpeed's ``WarmupLR``, ``WarmupDecayLR``,
    ``WarmupCosineLR``, ``OneCycle`` and ``LRRangeTest`` over a torch optimizer; or a jnp function
    ``count -> factor`` of each group's ``initial_lr`` (a ``LambdaLR`` written with
    ``jax.numpy``).
    Refused (``ValueError`` naming it): ``maximize=True``, timm Lamb's ``decoupled_decay=True``,
    a ``LambdaLR``/``MultiplicativeLR`` of a
    Python function of your own, a custom ``CyclicLR.scale_fn``,
    ``pytorch_pretrained_bert``'s ``WarmupCosineWithHardRestartsSchedule``, a loss-driven
    scheduler over ``Adafactor`` with ``relative_step=True`` or ``beta1``, a scheduler whose
    per-group lists no longer match the groups, and any other class.

    What is checked against the live objects: the scheduler. A copy of it (over placeholder
    parameters) is stepped :data:`LIVE_CHECK_UPDATES` times and every group's rate (and cycled
    momentum) must match the reproduction to 1e-6 of its peak, or from_torch refuses; if the
    scheduler cannot be copied, an :class:`UncheckedReproductionWarning` says so. The
    optimizer's hyperparameters are read from each group (``param_groups[i]``, never the
    defaults) but not checked by running the optimizer: the parity tests do that per class.

    Args:
      optimizer: the live ``torch.optim.Optimizer``.
      scheduler: its scheduler, stepped once per ``optimizer.step()`` (a loss-driven one with
        the metric); a jnp function ``count -> factor`` of each group's lr; or ``None``.
      named_parameters: ``model.named_parameters()``.
      params: the Flax parameter tree the transformation will update.
      name_map: Flax path (``/``-joined) -> torch name, a dict or a function of the path;
        default: the path with ``.``. Paired by :func:`optax_bertadam.match_parameters`, as in
        :func:`optax_bertadam.load_torch_state_dict` and ``compare_training``.
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
    record = catalogue.optimizer_record(optimizer)
    builders = [record.read_group(optimizer, group, i) for i, group in enumerate(groups)]
    # DeepSpeed BertAdam's clip_mode='global' clips its groups together: done before the groups.
    max_norm, clipped_together = param_groups.global_clip_across_groups(
        optimizers.bertadam,
        {i: b.kwargs for i, b in enumerate(builders) if b.factory is optimizers.bertadam},
    )
    momentum_name = builders[0].momentum_name
    loss_driven = None
    if scheduler is None:
        rates = [(None, None)] * len(groups)
    elif callable(scheduler) and not hasattr(scheduler, "optimizer"):
        # LambdaLR's convention: a factor of each group's initial_lr (its lr before any scheduler
        # changed it; torch records it as initial_lr when the first scheduler is built).
        multiplier = transforms.BoundSchedule(
            _at_default_int, (_validation.check_jnp_function("scheduler", scheduler),))
        rates = [(transforms.ScaledSchedule(float(catalogue.scalar(g.get("initial_lr", g["lr"]))),
                                            multiplier), None) for g in groups]
    elif catalogue.is_loss_driven(scheduler):
        name = type(scheduler).__qualname__
        for index, builder in enumerate(builders):
            _refuse_under_loss_driven(builder, index, name)
        loss_driven = catalogue.read_loss_driven(scheduler, optimizer)
        rates = [(rate, None) for rate in loss_driven[1]]
    else:
        rates = catalogue.read_scheduler(scheduler, optimizer, momentum_name)
        _check_against_the_live_scheduler(scheduler, optimizer, rates, momentum_name)

    # Which group each Flax leaf belongs to (the optimizer's parameters must all have one).
    matches = torch_params.match_parameters(
        named_parameters, params, name_map, transform,
        required=[p for g in groups for p in g["params"]],
    )
    group_of = {id(p): i for i, g in enumerate(groups) for p in g["params"]}
    frozen = len(groups)
    problems, labels = [], []
    for match in matches:
        group = group_of.get(id(match.tensor))
        shape = tuple(match.tensor.shape)
        if (transform is not None and group is not None and builders[group].factory is optimizers.adafactor
                and len(shape) >= 2 and torch_state.axes_moved_by(transform, match.flax_path, shape) is None):
            problems.append(
                f"{match.flax_path}: transform moves torch {match.torch_name}'s axes other than by "
                "swapping the last two, but transformers.Adafactor factors its second moment over "
                "the last two axes, which then differ"
            )
        # A parameter without requires_grad never gets a gradient: torch.optim skips it.
        trained = getattr(match.tensor, "requires_grad", True)
        labels.append(frozen if group is None or not trained else group)
    if problems:
        raise ValueError("from_torch: the parameters do not match: " + "; ".join(problems))

    transformations: dict[int, optax.GradientTransformation] = {}
    for index, (builder, group, (rate, momentum)) in enumerate(zip(builders, groups, rates, strict=True)):
        lr = catalogue.scalar(group["lr"])
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
    across = record.across_groups(optimizer) if record.across_groups else None
    if across is not None:
        # Done to the gradients of every trained parameter together, before any group's update.
        trained = lambda tree: jax.tree.map(lambda label: label != frozen, label_tree(tree))
        partition = optax.chain(optax.masked(across, trained), partition)
    if loss_driven is None:
        return partition
    return _under_loss_driven_rule(partition, label_tree, loss_driven[0])
