"""The transformers ``Trainer`` as it is run: its ``TrainingArguments`` as one optax transformation.

What ``Trainer.train()`` does to the parameters at each optimizer step (transformers 5.25,
``trainer.py``, ``trainer_optimizer.py``, ``training_args.py``):

1. ``gradient_accumulation_steps`` micro-batches are back-propagated into ``param.grad``; each
   micro-batch loss is divided by the number of micro-batches unless the Trainer counts
   ``num_items_in_batch`` for the model (below);
2. ``clip_grad_norm_`` over every parameter with ``max_grad_norm`` (``> 0``; otherwise the norm
   is only measured); the pre-clip norm is logged as ``grad_norm``;
3. ``optimizer.step()`` with the optimizer of ``args.optim`` over two groups: the parameters of
   ``get_decay_parameter_names(model)`` at ``args.weight_decay``, the others at 0;
4. ``lr_scheduler.step()`` (``get_scheduler(lr_scheduler_type, ...)``); the rate of the step just
   taken is logged as ``learning_rate``.

:func:`from_training_arguments` builds that from the arguments alone (no torch model: the decay
rule is applied to Flax paths); :func:`from_trainer` reads a live ``Trainer`` (its optimizer's
groups through :func:`optax_bertadam.from_torch`). Nothing here imports torch or transformers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax

from optax_bertadam import catalogue, masks, mixed_precision, optimizers, transforms
from optax_bertadam.from_torch import from_torch as _from_torch
from optax_bertadam.schedules import transformers as hf_schedules

PyTree = Any

#: ``lr_scheduler_type`` values the Trainer steps once per optimizer step (the loss-driven
#: ``reduce_lr_on_plateau`` and ``greedy`` are stepped on evaluation metrics instead).
SUPPORTED_SCHEDULERS = tuple(
    name for name in hf_schedules.SCHEDULER_NAMES if name not in ("reduce_lr_on_plateau", "greedy")
)
LOSS_REDUCTIONS = ("sum", "mean")
#: ``Trainer.get_decay_parameter_names``'s name patterns, searched in the lower-cased name.
TRAINER_NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)",
                             r"_norm(?:$|\.)")
_NO_DECAY = [re.compile(pattern) for pattern in TRAINER_NO_DECAY_PATTERNS]
# torch.amp.GradScaler's defaults, which the Trainer's fp16 uses.
_GRAD_SCALER = dict(init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000)


def trainer_decay_mask(params: PyTree) -> PyTree:
    """The Trainer's weight-decay rule on a Flax parameter tree: True where decay applies.

    ``Trainer.get_decay_parameter_names`` decays every parameter outside ``nn.LayerNorm``
    modules whose lower-cased name matches none of ``bias``, ``layernorm``, ``rmsnorm``,
    ``(^|.)norm($|.)``, ``_norm($|.)``. On Flax paths (joined with ``.``) the same patterns
    apply, and a leaf named ``scale`` (the parameter of Flax's ``LayerNorm``/``RMSNorm``, which
    torch calls ``weight``) stands for "inside a LayerNorm". A Flax ``BatchNorm`` scale is
    therefore not decayed, although torch decays a ``BatchNorm`` weight not named ``norm``: pass
    ``decay_mask=`` for such models.

    Args:
      params: the parameter tree (Flax NNX state, Linen params, or any pytree).

    Returns:
      A tree of bools with ``params``' structure.

    >>> import jax.numpy as jnp
    >>> from optax_bertadam.trainer import trainer_decay_mask
    >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
    ...           "LayerNorm_0": {"scale": jnp.ones(2)}, "final_norm": {"kernel": jnp.ones(2)}}
    >>> mask = trainer_decay_mask(params)
    >>> mask["dense"], mask["LayerNorm_0"], mask["final_norm"]
    ({'bias': False, 'kernel': True}, {'scale': False}, {'kernel': False})
    """

    def decays(path, _):
        name = masks.parameter_name(path, separator=".").lower()
        if name.rsplit(".", 1)[-1] == "scale":
            return False
        return not any(pattern.search(name) for pattern in _NO_DECAY)

    return jax.tree_util.tree_map_with_path(decays, params)


def _value(value: Any) -> Any:
    # transformers' ExplicitEnum (OptimizerNames, SchedulerType) are str enums: their value.
    return getattr(value, "value", value)


def _optim_args(args: Any, optim: catalogue.TrainerOptimRecord) -> dict[str, Any]:
    """``args.optim_args`` as the Trainer parses and reads it for ``optim``."""
    text = getattr(args, "optim_args", None)
    if not text:
        return {}
    parsed = {}
    for mapping in str(text).replace(" ", "").split(","):
        if mapping.count("=") != 1:
            raise ValueError(
                f"args.optim_args={text!r} is invalid: expected comma-separated key=value pairs"
            )
        key, value = mapping.split("=")
        parsed[key] = value
    out: dict[str, Any] = {}
    for key in optim.optim_args:
        if key not in parsed:
            continue
        if key in ("nesterov", "centered"):
            out[key] = parsed[key].lower() in ("true", "1", "yes")
        else:
            try:
                out[key] = float(parsed[key])
            except ValueError:
                raise ValueError(
                    f"args.optim_args={text!r} is invalid: {key}={parsed[key]!r} is not a number"
                ) from None
    return out


def _warmup_steps(args: Any, num_training_steps: int | None) -> int:
    """``args.get_warmup_steps(n)``: 5.25 reads ``warmup_steps < 1`` as a ratio rounded up."""
    warmup = float(getattr(args, "warmup_steps", 0) or 0)
    ratio = float(getattr(args, "warmup_ratio", 0) or 0)  # transformers 4 still had it
    if num_training_steps is not None and hasattr(args, "get_warmup_steps"):
        return int(args.get_warmup_steps(num_training_steps))
    if warmup < 0:
        raise ValueError(f"args.warmup_steps={warmup!r} is invalid: expected a value >= 0")
    if warmup >= 1:
        return int(warmup)
    if warmup == 0 and ratio == 0:
        return 0
    if num_training_steps is None:
        raise ValueError(
            f"num_training_steps=None is invalid with args.warmup_steps={warmup!r} (a ratio of "
            "the training steps): pass num_training_steps, or set args.max_steps"
        )
    return math.ceil(num_training_steps * (warmup or ratio))


def _training_steps(args: Any, num_training_steps: int | None) -> int | None:
    max_steps = int(getattr(args, "max_steps", -1) or -1)
    if max_steps > 0:
        if num_training_steps is not None and int(num_training_steps) != max_steps:
            raise ValueError(
                f"num_training_steps={num_training_steps!r} is invalid with args.max_steps="
                f"{max_steps}: the Trainer schedules over max_steps (pass num_training_steps=None)"
            )
        return max_steps
    if num_training_steps is None:
        return None
    if isinstance(num_training_steps, bool) or int(num_training_steps) != num_training_steps or (
            num_training_steps < 1):
        raise ValueError(
            f"num_training_steps={num_training_steps!r} is invalid: expected an integer >= 1"
        )
    return int(num_training_steps)


def training_steps_for(args: Any, num_micro_batches_per_epoch: int) -> int:
    """The number of optimizer steps ``Trainer.train()`` schedules over.

    ``max_steps`` if ``> 0``, else ``ceil(num_train_epochs * update steps per epoch)`` with
    ``max(len_dataloader // N + (len_dataloader % N > 0), 1)`` update steps per epoch,
    ``N = gradient_accumulation_steps`` (``Trainer.set_initial_training_values``).

    Args:
      args: the ``TrainingArguments``.
      num_micro_batches_per_epoch: ``len(trainer.get_train_dataloader())``.

    Returns:
      The ``num_training_steps`` of the Trainer's scheduler.

    >>> from types import SimpleNamespace
    >>> from optax_bertadam.trainer import training_steps_for
    >>> args = SimpleNamespace(max_steps=-1, num_train_epochs=3.0, gradient_accumulation_steps=4)
    >>> training_steps_for(args, 10)  # 3 updates per epoch (the last one of 2 micro-batches)
    9
    """
    max_steps = int(getattr(args, "max_steps", -1) or -1)
    if max_steps > 0:
        return max_steps
    accumulation = int(getattr(args, "gradient_accumulation_steps", 1) or 1)
    per_epoch = max(num_micro_batches_per_epoch // accumulation
                    + int(num_micro_batches_per_epoch % accumulation > 0), 1)
    return math.ceil(float(args.num_train_epochs) * per_epoch)


def _schedule(args: Any, learning_rate: float, num_training_steps: int | None) -> Callable[[Any], Any]:
    """The rate of update ``count`` as ``get_scheduler(args.lr_scheduler_type, ...)`` sets it."""
    name = _value(getattr(args, "lr_scheduler_type", "linear"))
    if name not in SUPPORTED_SCHEDULERS:
        if name in hf_schedules.SCHEDULER_NAMES:
            raise ValueError(
                f"args.lr_scheduler_type={name!r} is not supported here: the Trainer steps it with "
                "evaluation metrics (eval_strategy), not once per optimizer step; use "
                "ob.reduce_lr_on_plateau / ob.greedy_lr with your metric, or one of "
                f"{', '.join(SUPPORTED_SCHEDULERS)}"
            )
        raise ValueError(
            f"args.lr_scheduler_type={name!r} is invalid: expected one of "
            f"{', '.join(SUPPORTED_SCHEDULERS)}"
        )
    kwargs = getattr(args, "lr_scheduler_kwargs", None) or {}
    if not isinstance(kwargs, Mapping):
        raise ValueError(
            f"args.lr_scheduler_kwargs={kwargs!r} is invalid: expected a dict of keyword arguments"
        )
    needs_total = name not in ("constant", "constant_with_warmup", "inverse_sqrt",
                               "warmup_stable_decay")
    if name == "warmup_stable_decay" and "num_stable_steps" not in kwargs:
        needs_total = True
    if needs_total and num_training_steps is None:
        raise ValueError(
            f"num_training_steps=None is invalid with args.lr_scheduler_type={name!r}, which "
            "schedules over the number of training steps: pass num_training_steps (the "
            "Trainer's: training_steps_for(args, len(train_dataloader))) or set args.max_steps"
        )
    warmup = _warmup_steps(args, num_training_steps) if name != "constant" else None
    try:
        return hf_schedules.get_scheduler(name, learning_rate, warmup, num_training_steps,
                                          dict(kwargs))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"args.lr_scheduler_kwargs={dict(kwargs)!r} is invalid for lr_scheduler_type="
            f"{name!r}: {error}"
        ) from error


def _loss_reduction(value: Any) -> str:
    if value not in LOSS_REDUCTIONS:
        raise ValueError(
            f"loss_reduction={value!r} is invalid: expected 'sum' (the Trainer leaves each "
            "micro-batch loss undivided: the model takes **kwargs / num_items_in_batch) or 'mean' "
            "(it divides each by gradient_accumulation_steps)"
        )
    return value


def _around(args: Any, tx: optax.GradientTransformation, loss_reduction: str
            ) -> optax.GradientTransformation:
    """The Trainer's clipping, fp16 loss scaling and accumulation around the optimizer."""
    max_grad_norm = getattr(args, "max_grad_norm", None)
    # max_grad_norm <= 0 or None: the Trainer still measures the norm (clip_grad_norm_ with an
    # infinite threshold, a coefficient of exactly 1) and logs it.
    threshold = float(max_grad_norm) if max_grad_norm is not None and max_grad_norm > 0 else math.inf
    tx = optax.chain(transforms.clip_grad_norm(threshold, per_tensor=False), tx)
    if getattr(args, "fp16", False):
        # GradScaler: unscale before clipping, skip non-finite steps (the scheduler too).
        tx = mixed_precision.dynamic_loss_scale(tx, **_GRAD_SCALER)
    accumulation = getattr(args, "gradient_accumulation_steps", 1) or 1
    if isinstance(accumulation, bool) or int(accumulation) != accumulation or accumulation < 1:
        raise ValueError(
            f"args.gradient_accumulation_steps={accumulation!r} is invalid: expected an integer >= 1"
        )
    if accumulation > 1:
        tx = optimizers.gradient_accumulation(tx, int(accumulation),
                                              average=loss_reduction == "mean")
    return tx


def from_training_arguments(
    args: Any,
    *,
    params: PyTree,
    num_training_steps: int | None = None,
    decay_mask: PyTree | Callable[[PyTree], PyTree] | None = None,
    loss_reduction: str = "sum",
) -> optax.GradientTransformation:
    r"""The optax transformation ``Trainer.train()`` applies, built from ``TrainingArguments``.

    Per micro-batch gradient :math:`g_j` (of the loss averaged over micro-batch :math:`j`), with
    :math:`N` = ``gradient_accumulation_steps``, each optimizer step :math:`k` does

    .. math::
      G &= \sum_{j=1}^{N} g_j \text{ (loss\_reduction="sum") or } \frac1N \sum_j g_j
          \text{ ("mean")} \\
      G &\leftarrow G \cdot \min\left(1, \frac{\text{max\_grad\_norm}}{\lVert G \rVert_2 +
          10^{-6}}\right) \quad\text{(max\_grad\_norm > 0)} \\
      p &\leftarrow \text{OPTIM}(p, G;\ \mathrm{lr}_k, \text{weight\_decay where the mask is True})

    with :math:`\mathrm{lr}_k` = ``get_scheduler(lr_scheduler_type, lr_scheduler_kwargs)`` at
    update :math:`k`. ``tx.update`` takes one micro-batch's gradient; updates are zero until the
    :math:`N`-th. :func:`optax_bertadam.get_lr` / ``get_last_lr`` give the rate of the next
    step (the Trainer logs the rate of the step just taken as ``learning_rate``), and
    :func:`optax_bertadam.get_grad_norm` the pre-clip norm of the last step (its ``grad_norm``).

    **Sum or mean of the micro-batches.** The Trainer divides each micro-batch loss by
    :math:`N` only when it does not count ``num_items_in_batch`` for the model: when the model's
    ``forward`` takes ``**kwargs`` (or it has ``accepts_loss_kwargs = True``) and the batches hold
    ``labels`` (or a ``compute_loss_func`` is given), it passes the item count to the model and
    leaves the loss undivided. A stock ``BertForSequenceClassification`` takes ``**kwargs`` but its
    loss ignores the count, so with transformers 5.25 the optimizer steps on the *sum* of the
    micro-batch gradients (its logged ``loss`` and ``grad_norm`` are :math:`N` times the mean's):
    ``loss_reduction="sum"``, the default. A model without ``**kwargs`` gets ``"mean"``.
    :func:`from_trainer` decides it from the live Trainer. A last accumulation of an epoch with
    fewer than :math:`N` micro-batches (an epoch not a multiple of :math:`N`) is not reproduced:
    choose the batch count so that it divides.

    **Optimizers** (``args.optim``; the Trainer's handler table): ``adamw_torch``,
    ``adamw_torch_fused`` (``torch.optim.AdamW(lr, betas=(adam_beta1, adam_beta2),
    eps=adam_epsilon)`` -> :func:`optax_bertadam.adamw`), ``adafactor`` (``transformers.Adafactor(lr,
    scale_parameter=False, relative_step=False)`` -> :func:`optax_bertadam.adafactor`), ``sgd``,
    ``adagrad``, ``rmsprop`` (``torch.optim`` defaults with ``lr``, updated from ``optim_args``
    keys the Trainer reads: sgd ``momentum, dampening, nesterov``; adagrad ``lr_decay, eps``;
    rmsprop ``momentum, alpha, eps, centered``; ``weight_decay`` there is overridden by the
    groups' as in the Trainer; other keys are ignored, as the Trainer ignores them). Every other
    name (bitsandbytes, apex, torchao, galore, apollo, lomo, schedule-free, grokadamw,
    stable_adamw, XLA/NPU, anyprecision) is refused.

    **Precision.** ``bf16=True`` on CPU/GPU autocasts the forward pass; parameters, gradients and
    the optimizer stay float32: nothing changes here. ``fp16=True`` wraps the step in
    :func:`optax_bertadam.dynamic_loss_scale` with ``GradScaler``'s defaults (differentiate
    ``ob.scale_loss(loss, state)``; a non-finite step is skipped, the scheduler with it).

    Args:
      args: a ``transformers.TrainingArguments`` (or an object with its attributes).
      params: the Flax parameter tree to train (for the decay mask).
      num_training_steps: the Trainer's number of optimizer steps when ``args.max_steps <= 0``
        (:func:`training_steps_for`); required by schedules over the training length and by a
        warmup given as a ratio.
      decay_mask: overrides :func:`trainer_decay_mask` (True: decayed with
        ``args.weight_decay``), a bool tree or a function of the params.
      loss_reduction: ``"sum"`` or ``"mean"`` of the micro-batch gradients (above).

    Returns:
      An ``optax.GradientTransformation``; with ``gradient_accumulation_steps > 1`` an
      ``optax.MultiSteps`` over it.

    Raises:
      ValueError: naming the argument, for an unsupported ``args.optim`` or
        ``args.lr_scheduler_type``, a bad ``lr_scheduler_kwargs`` or ``optim_args``, a missing
        ``num_training_steps``, a ``decay_mask`` not matching ``params``.

    >>> import jax.numpy as jnp, optax_bertadam as ob
    >>> from transformers import TrainingArguments
    >>> args = TrainingArguments(learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=0.1,
    ...                          weight_decay=0.01, max_steps=100, report_to=[])
    >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
    >>> tx = ob.from_training_arguments(args, params=params)
    >>> state = tx.init(params)
    >>> float(ob.get_lr(state)), float(ob.get_grad_norm(state))  # warmup: 10 steps from 0
    (0.0, 0.0)
    """
    optim = catalogue.trainer_optim_record(_value(getattr(args, "optim", None)))
    loss_reduction = _loss_reduction(loss_reduction)
    num_training_steps = _training_steps(args, num_training_steps)
    schedule = _schedule(args, float(args.learning_rate), num_training_steps)
    weight_decay = float(getattr(args, "weight_decay", 0.0) or 0.0)
    mask = trainer_decay_mask(params) if decay_mask is None else decay_mask
    resolved = mask(params) if callable(mask) else mask
    transforms.check_mask_matches(resolved, params, "decay_mask")
    extra = _optim_args(args, optim)
    extra.pop("weight_decay", None)  # the groups' weight_decay overrides the default
    # The decayed group as the Trainer's optimizer would hold it, read by that class's record;
    # the mask gives the other group its weight_decay of 0.
    group = optim.read(args, extra, weight_decay)
    tx = group.factory(schedule, **group.kwargs, mask=resolved)
    return _around(args, tx, loss_reduction)


def _trainer_loss_reduction(trainer: Any) -> str:
    """``"sum"`` where ``Trainer.training_step`` leaves micro-batch losses undivided."""
    scaled = getattr(trainer, "loss_is_scaled_for_ga", None)
    if scaled is None:
        scaled = bool(getattr(trainer, "model_accepts_loss_kwargs", False)) or (
            getattr(trainer, "compute_loss_func", None) is not None)
    return "sum" if scaled else "mean"


def _unwrap_accelerate(obj: Any, attribute: str) -> Any:
    # train() hands the optimizer and scheduler to accelerate, which wraps them.
    while obj is not None and type(obj).__module__.startswith("accelerate"):
        obj = getattr(obj, attribute)
    return obj


def _trainer_optimizer(trainer: Any) -> Any:
    """The live optimizer, or (before ``train()``) the one ``create_optimizer`` would build."""
    if getattr(trainer, "optimizer", None) is not None:
        return _unwrap_accelerate(trainer.optimizer, "optimizer")
    model = trainer.model
    decay = set(trainer.get_decay_parameter_names(model))
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if n in decay and p.requires_grad],
         "weight_decay": trainer.args.weight_decay},
        {"params": [p for n, p in named if n not in decay and p.requires_grad],
         "weight_decay": 0.0},
    ]
    cls, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, model)
    return cls(groups, **{k: v for k, v in kwargs.items() if k not in ("params", "model")})


def from_trainer(
    trainer: Any,
    *,
    params: PyTree,
    name_map: Mapping[str, str] | None = None,
    transform: Callable[[str, Any], Any] | None = None,
) -> optax.GradientTransformation:
    r"""The optax transformation a live ``transformers.Trainer`` applies, for Flax ``params``.

    As :func:`from_training_arguments`, but read from the Trainer itself: the optimizer's own
    parameter groups (``trainer.optimizer``, or before ``train()`` the one its
    ``create_optimizer`` builds: ``get_decay_parameter_names`` of the live model, parameters
    without ``requires_grad`` left untrained) through :func:`optax_bertadam.from_torch`; the
    scheduler (``trainer.lr_scheduler`` if built, else ``args.lr_scheduler_type`` over the
    Trainer's own number of steps, :func:`training_steps_for` of its train dataloader); the
    sum or mean of the micro-batches from what ``training_step`` does for this model (``"sum"``
    when ``model_accepts_loss_kwargs`` or a ``compute_loss_func``, as for every transformers
    model with ``**kwargs``, e.g. BERT; else ``"mean"``); ``max_grad_norm``,
    ``gradient_accumulation_steps`` and ``fp16`` from ``trainer.args``.

    Args:
      trainer: the ``transformers.Trainer``.
      params: the Flax parameter tree (every torch parameter of the optimizer needs one).
      name_map: Flax path (``/``-joined) -> torch name; default: the path with ``.``.
      transform: ``transform(flax_path, array)`` from torch's layout to Flax's (e.g.
        :func:`optax_bertadam.transpose_kernels`), used to check the shapes.

    Returns:
      An ``optax.GradientTransformation`` taking one micro-batch's gradient per ``update``.

    Raises:
      ValueError: for what :func:`from_training_arguments` refuses, ``params`` that do not match
        ``trainer.model``, or an epoch whose micro-batch count ``gradient_accumulation_steps``
        does not divide.

    >>> import torch, jax.numpy as jnp, optax_bertadam as ob
    >>> from transformers import Trainer, TrainingArguments
    >>> class Tiny(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.dense = torch.nn.Linear(2, 1)
    ...     def forward(self, x, labels=None):
    ...         return {"loss": ((self.dense(x)[:, 0] - labels) ** 2).mean()}
    >>> args = TrainingArguments(learning_rate=0.1, max_steps=4, weight_decay=0.1, report_to=[],
    ...                          use_cpu=True, save_strategy="no")
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):  # DeepSpeed's accelerator notice, if any
    ...     trainer = Trainer(Tiny(), args)
    >>> params = {"dense": {"weight": jnp.zeros((1, 2)), "bias": jnp.zeros(1)}}
    >>> tx = ob.from_trainer(trainer, params=params)
    >>> [round(float(lr), 6) for lr in ob.get_last_lr(tx.init(params))]  # decay group, no-decay
    [0.1, 0.1]
    """
    args = trainer.args
    catalogue.trainer_optim_record(_value(getattr(args, "optim", None)))
    optimizer = _trainer_optimizer(trainer)
    scheduler = _unwrap_accelerate(getattr(trainer, "lr_scheduler", None), "scheduler")
    if type(scheduler).__name__ in ("ReduceLROnPlateau", "GreedyLR"):
        raise ValueError(
            f"trainer.lr_scheduler={type(scheduler).__name__} is not supported: the Trainer steps "
            "it with evaluation metrics, not once per optimizer step; use ob.reduce_lr_on_plateau "
            "/ ob.greedy_lr with your metric"
        )
    accumulation = int(getattr(args, "gradient_accumulation_steps", 1) or 1)
    dataset = getattr(trainer, "train_dataset", None)
    batches = None
    if dataset is not None and hasattr(dataset, "__len__"):
        batches = len(trainer.get_train_dataloader())
        if batches % accumulation:
            raise ValueError(
                f"args.gradient_accumulation_steps={accumulation} is invalid for this Trainer: "
                f"its epoch has {batches} micro-batches, so the Trainer steps after the last "
                f"{batches % accumulation} of each epoch, which is not reproduced; choose a "
                "dataset size or batch size whose micro-batch count it divides"
            )
    if scheduler is not None and _unwrap_accelerate(getattr(scheduler, "optimizer", None),
                                                    "optimizer") is optimizer:
        # The scheduler was built over accelerate's wrapper of the optimizer: a shallow copy
        # pointing at the optimizer itself (the live scheduler is left alone).
        import copy

        scheduler = copy.copy(scheduler)
        scheduler.optimizer = optimizer
    if scheduler is None:
        total = None if batches is None else training_steps_for(args, batches)
        total = _training_steps(args, total)
        # from_torch takes the multiplier of each group's lr (a LambdaLR's lr_lambda): the
        # schedule at rate 1, except transformers' polynomial, whose lambda divides its rate
        # by the optimizer's default lr.
        if _value(getattr(args, "lr_scheduler_type", "linear")) == "polynomial":
            learning_rate = float(args.learning_rate)
            if learning_rate <= 0.0:
                raise ValueError(
                    f"args.learning_rate={learning_rate!r} is invalid with lr_scheduler_type="
                    "'polynomial': expected > 0 (transformers divides by it)"
                )
            scheduler = transforms.ScaledSchedule(1.0 / learning_rate,
                                                  _schedule(args, learning_rate, total))
        else:
            scheduler = _schedule(args, 1.0, total)
    try:
        tx = _from_torch(
            optimizer, scheduler, named_parameters=trainer.model.named_parameters(),
            params=params, name_map=name_map, transform=transform,
        )
    except ValueError as error:
        if "do not match" in str(error):
            raise ValueError(f"params does not match trainer.model: {error}") from error
        raise
    return _around(args, tx, _trainer_loss_reduction(trainer))
