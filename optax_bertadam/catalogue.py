"""The catalogue of PyTorch-side classes: one record for each class the library can read.

A record says how to recognise a live object (by what it is: its class, or for a class users copy
into their own code, its parameter groups), how to read its hyperparameters group by group,
which factory of this package reproduces it, the per-parameter keys of its ``state`` and whether
a metric drives it. :func:`~optax_bertadam.from_torch`, the state migration and
:func:`~optax_bertadam.compare_training` read these records; nothing else in the library keeps a
list of PyTorch classes. Nothing here imports torch: the records read attributes of live objects.
A scheduler class's hyperparameters are read once, by its record's ``options``: its closed form
and its step-by-step replay (:func:`torch_scheduler`, :func:`replay_scheduler`) are built from them.

Teaching the library a new PyTorch class is one record here plus the factory that reproduces it.
Configurations name classes too: a ``TrainingArguments.optim`` (:data:`TRAINER_OPTIMS`) or a
DeepSpeed ``optimizer.type`` (:data:`DEEPSPEED_OPTIMIZER_TYPES`) becomes the parameter group the
class it builds would hold, which that class's record reads as it reads a live object.

>>> from optax_bertadam import catalogue
>>> [record.name for record in catalogue.OPTIMIZERS][:3]
['torch.optim.AdamW', 'torch.optim.Adam', 'torch.optim.SGD']
>>> catalogue.scheduler_record_by_name("ReduceLROnPlateau").loss_driven
True
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import _validation, lamb, optimizers, transforms
from optax_bertadam import deepspeed as ds_engine
from optax_bertadam.schedules import bert as bert_schedules
from optax_bertadam.schedules import deepspeed as ds_schedules
from optax_bertadam.schedules import loss_driven
from optax_bertadam.schedules import pytorch as torch_schedules
from optax_bertadam.schedules import transformers as hf_schedules
from optax_bertadam.schedules.classic import sequential_lr
from optax_bertadam.schedules.pytorch import TorchScheduler

Schedule = Callable[[Any], Any]
# Per group: the rate (count -> lr; None keeps the optimizer's) and the cycled momentum (or None).
GroupRates = list[tuple[Schedule | None, Schedule | None]]


def class_of(obj: Any) -> str:
    """``module.qualname`` of ``obj``'s class, as error messages name it."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def is_instance_of(obj: Any, module: str, qualname: str) -> bool:
    """``obj`` is exactly the class ``qualname`` of the package ``module`` (or a submodule of it).

    Exactly: a subclass may change ``step()``, which the records cannot see.
    """
    kind = type(obj)
    return kind.__qualname__ == qualname and (
        kind.__module__ == module or kind.__module__.startswith(module + ".")
    )


def scalar(value: Any) -> Any:
    """A 0-d tensor hyperparameter (torch allows ``lr=torch.tensor(...)``) as a Python number.

    Other values (a user's own group keys) are returned as they are.
    """
    if hasattr(value, "item") and not isinstance(value, (bool, int, float)) and np.ndim(value) == 0:
        return value.item()
    return value


# ---------------------------------------------------------------------------------- optimizers


@dataclasses.dataclass(frozen=True)
class GroupOptimizer:
    """What one parameter group of a live optimizer becomes: ``factory(lr, **kwargs)``.

    Attributes:
      factory: the optimizer of this package.
      kwargs: its arguments other than the learning rate, read from the group.
      momentum_name: the argument a scheduler's cycled momentum goes to (``"b1"``,
        ``"momentum"``), or ``None`` when the optimizer has none.
      own_multiplier: a schedule the optimizer applies itself on top of the group's ``lr``
        (BertAdam's ``schedule``/``t_total``), or ``None``.
    """

    factory: Callable[..., Any]
    kwargs: Mapping[str, Any]
    momentum_name: str | None
    own_multiplier: Schedule | None = None

    def build(self, learning_rate: Any, momentum: Schedule | None = None) -> Any:
        """``factory(learning_rate, **kwargs)``; with a cycled ``momentum`` schedule, the factory
        under ``optax.inject_hyperparams`` with that schedule as :attr:`momentum_name`."""
        if momentum is None:
            return self.factory(learning_rate, **self.kwargs)
        static = tuple(k for k in self.kwargs if k != self.momentum_name)
        injected = optax.inject_hyperparams(self.factory, static_args=("learning_rate", *static))
        return injected(learning_rate=learning_rate, **{**self.kwargs, self.momentum_name: momentum})


@dataclasses.dataclass(frozen=True)
class OptimizerRecord:
    """One PyTorch-side optimizer class.

    Attributes:
      name: the name users know it by, e.g. ``"torch.optim.AdamW"``.
      recognises: ``optimizer -> bool``: whether a live object is this class.
      read_group: ``(optimizer, group, index) -> GroupOptimizer``: one parameter group's own
        hyperparameters (never the optimizer's defaults), refusing what is not reproduced.
      factories: the optimizers of this package that reproduce it.
      state_keys: the per-parameter keys of its ``state`` that this package's states hold.
      writes_step: whether its per-parameter state has a ``step`` (``torch.optim.SGD``: no).
      across_groups: ``optimizer -> GradientTransformation | None``: what the class does to the
        gradients of all its groups together before any group's update (timm's Lamb divides
        them by one global norm), applied to every trained parameter; ``None``: nothing.
      construct: the class's constructor over keyword arguments (:class:`Constructor`), for
        the classes a configuration names (DeepSpeed's ``optimizer.type``); ``None``: not built
        from a configuration.
    """

    name: str
    recognises: Callable[[Any], bool]
    read_group: Callable[[Any, Mapping[str, Any], int], GroupOptimizer]
    factories: tuple[Callable[..., Any], ...]
    state_keys: tuple[str, ...] = ()
    writes_step: bool = True
    across_groups: Callable[[Any], Any] | None = None
    construct: Constructor | None = None


def _refuse_flag(group: Mapping[str, Any], index: int, class_name: str, flag: str) -> None:
    if group.get(flag):
        raise ValueError(
            f"{class_name}(param_groups[{index}]['{flag}']=True) is not supported by from_torch"
            + (": negate the gradients instead" if flag == "maximize" else "")
        )


def _group_values(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: scalar(v) for k, v in group.items() if k != "params"}


def _read_adam(decoupled_by_class: bool, class_name: str):
    def read(optimizer: Any, group: Mapping[str, Any], index: int) -> GroupOptimizer:
        del optimizer
        g = _group_values(group)
        _refuse_flag(g, index, class_name, "maximize")
        b1, b2 = (scalar(b) for b in g["betas"])
        decoupled = decoupled_by_class or bool(g.get("decoupled_weight_decay", False))
        common = dict(b1=b1, b2=b2, eps=g["eps"], weight_decay=g["weight_decay"])
        if decoupled and not g.get("amsgrad", False):
            return GroupOptimizer(optimizers.adamw, {**common, "correct_bias": True}, "b1")
        return GroupOptimizer(
            optimizers.adam,
            {**common, "amsgrad": bool(g.get("amsgrad", False)), "decoupled_weight_decay": decoupled},
            "b1",
        )

    return read


def _read_sgd(optimizer: Any, group: Mapping[str, Any], index: int) -> GroupOptimizer:
    del optimizer
    g = _group_values(group)
    _refuse_flag(g, index, "SGD", "maximize")
    return GroupOptimizer(optimizers.sgd, dict(
        momentum=g["momentum"], dampening=g["dampening"], weight_decay=g["weight_decay"],
        nesterov=bool(g["nesterov"]),
    ), "momentum")


def _read_adagrad(optimizer: Any, group: Mapping[str, Any], index: int) -> GroupOptimizer:
    """``foreach``/``differentiable`` change no number; ``maximize`` and the ``fused`` CPU kernel
    (its own arithmetic) are refused."""
    g = _group_values(group)
    _refuse_flag(g, index, "Adagrad", "maximize")
    _refuse_flag(g, index, "Adagrad", "fused")
    # torch fills every group's `sum` with the constructor's initial_accumulator_value: a group's
    # own value is kept in the group but never read.
    initial = scalar(optimizer.defaults["initial_accumulator_value"])
    return GroupOptimizer(optimizers.adagrad, dict(
        lr_decay=g["lr_decay"], weight_decay=g["weight_decay"], eps=g["eps"],
        initial_accumulator_value=initial,
    ), None)


def _read_rmsprop(optimizer: Any, group: Mapping[str, Any], index: int) -> GroupOptimizer:
    del optimizer
    g = _group_values(group)
    _refuse_flag(g, index, "RMSprop", "maximize")
    return GroupOptimizer(optimizers.rmsprop, dict(
        alpha=g["alpha"], eps=g["eps"], weight_decay=g["weight_decay"], momentum=g["momentum"],
        centered=bool(g["centered"]),
    ), "momentum")


def _read_adafactor(optimizer: Any, group: Mapping[str, Any], index: int) -> GroupOptimizer:
    del optimizer, index
    g = _group_values(group)
    return GroupOptimizer(optimizers.adafactor, dict(
        eps=tuple(g["eps"]), clip_threshold=g["clip_threshold"], decay_rate=g["decay_rate"],
        beta1=g["beta1"], weight_decay=g["weight_decay"],
        scale_parameter=bool(g["scale_parameter"]), relative_step=bool(g["relative_step"]),
        warmup_init=bool(g["warmup_init"]),
    ), None)


# The group keys of DeepSpeedExamples' BertAdam (bing_bert's optimization.py, which users copy
# into their own code): recognised by these, its schedule a name, not by where it lives.
_DEEPSPEED_BERTADAM_KEYS = frozenset(
    ("lr", "schedule", "warmup", "t_total", "b1", "b2", "e", "weight_decay", "max_grad_norm")
)


def _is_deepspeed_bertadam(optimizer: Any) -> bool:
    groups = getattr(optimizer, "param_groups", None)
    return bool(groups) and all(
        _DEEPSPEED_BERTADAM_KEYS <= set(g) and isinstance(g["schedule"], str) for g in groups
    )


def _read_deepspeed_bertadam(optimizer: Any, group: Mapping[str, Any], index: int) -> GroupOptimizer:
    del index
    g = _group_values(group)
    moment_dtype = getattr(optimizer, "moment_dtype", None)
    multiplier = bert_schedules.bert_multiplier(
        g["schedule"], g["t_total"], g["warmup"], schedule_kwargs=g.get("schedule_kwargs") or None
    )
    return GroupOptimizer(optimizers.bertadam, dict(
        b1=g["b1"], b2=g["b2"], e=g["e"], weight_decay=g["weight_decay"],
        max_grad_norm=g["max_grad_norm"], clip_mode=g.get("clip_mode", "per_tensor"),
        moment_dtype=None if moment_dtype is None else jnp.dtype(str(moment_dtype).split(".")[-1]),
    ), None, multiplier)


# pytorch_pretrained_bert 0.6.2's schedule classes, by the schedule name
# :func:`~optax_bertadam.schedules.bert.pretrained_bert_schedule` knows them by.
_PRETRAINED_BERT_SCHEDULE_CLASSES = {
    "ConstantLR": "none",
    "WarmupConstantSchedule": "warmup_constant",
    "WarmupLinearSchedule": "warmup_linear",
    "WarmupCosineSchedule": "warmup_cosine",
    "WarmupCosineWithWarmupRestartsSchedule": "warmup_cosine_with_warmup_restarts",
}


def pretrained_bert_multiplier(schedule: Any) -> Schedule:
    """The multiplier (rate at ``lr = 1``) of a ``pytorch_pretrained_bert`` 0.6.2 schedule object.

    The one implementation of those schedules is
    :func:`~optax_bertadam.schedules.bert.pretrained_bert_schedule`; this reads the object's
    class, ``t_total``, ``warmup`` and ``cycles`` into it.
    """
    name = type(schedule).__qualname__
    if not is_instance_of(schedule, "pytorch_pretrained_bert", name) or (
        name not in _PRETRAINED_BERT_SCHEDULE_CLASSES
    ):
        why = (" (its rate jumps from 0 to 1 at every restart, at a step decided by the "
               "double-precision rounding of progress * cycles, which float32 cannot reproduce)"
               if name == "WarmupCosineWithHardRestartsSchedule" else "")
        raise ValueError(
            f"pytorch_pretrained_bert.BertAdam schedule {class_of(schedule)} is not supported{why}; "
            f"supported: {_validation.listing(_PRETRAINED_BERT_SCHEDULE_CLASSES)}"
        )
    t_total = float(schedule.t_total)
    cycles = getattr(schedule, "cycles", None)
    warmup = float(schedule.warmup)
    if name == "WarmupCosineWithWarmupRestartsSchedule" and warmup >= 0:
        warmup /= float(cycles)  # the object keeps warmup * cycles; the function takes warmup
    return bert_schedules.pretrained_bert_schedule(
        _PRETRAINED_BERT_SCHEDULE_CLASSES[name], 1.0,
        t_total=-1 if t_total < 0 else int(t_total), warmup=warmup,
        cycles=None if cycles is None or name == "ConstantLR" else float(cycles),
    )


def _read_pretrained_bertadam(optimizer: Any, group: Mapping[str, Any], index: int) -> GroupOptimizer:
    del optimizer
    g = _group_values(group)
    try:
        multiplier = pretrained_bert_multiplier(group["schedule"])
    except ValueError as error:
        raise ValueError(f"param_groups[{index}]['schedule']: {error}") from None
    return GroupOptimizer(optimizers.bertadam, dict(
        b1=g["b1"], b2=g["b2"], e=g["e"], weight_decay=g["weight_decay"],
        max_grad_norm=g["max_grad_norm"],
    ), None, multiplier)


# The group keys of timm's Lamb (apex FusedLAMB's pure-PyTorch copy).
_TIMM_LAMB_KEYS = frozenset(("lr", "bias_correction", "betas", "eps", "weight_decay", "grad_averaging",
                             "trust_clip", "always_adapt"))


def _is_timm_lamb(optimizer: Any) -> bool:
    groups = getattr(optimizer, "param_groups", None)
    return is_instance_of(optimizer, "timm.optim", "Lamb") and bool(groups) and all(
        _TIMM_LAMB_KEYS <= set(g) for g in groups)


def _read_timm_lamb(optimizer: Any, group: Mapping[str, Any], index: int) -> GroupOptimizer:
    """A group of ``timm.optim.Lamb`` as :func:`optax_bertadam.nvidia_lamb`.

    timm pre-normalises the gradients of all groups together by ``defaults['max_grad_norm']``
    (a group's own key is not read): :func:`_timm_lamb_prenormalisation` does it before the
    groups, so each group's copy has none. ``foreach`` only picks timm's arithmetic path.
    """
    del optimizer
    g = _group_values(group)
    if g.get("decoupled_decay", False):
        raise ValueError(
            f"timm Lamb(param_groups[{index}]['decoupled_decay']=True) is not supported by "
            "from_torch: its trust ratio reads the parameters after an lr-dependent shrink"
        )
    b1, b2 = (scalar(b) for b in g["betas"])
    return GroupOptimizer(lamb.nvidia_lamb, dict(
        b1=b1, b2=b2, eps=g["eps"], weight_decay=g["weight_decay"],
        grad_averaging=bool(g["grad_averaging"]), max_grad_norm=None,
        bias_correction=bool(g["bias_correction"]), trust_clip=bool(g["trust_clip"]),
        always_adapt=bool(g["always_adapt"]), caution=bool(g.get("caution", False)),
    ), "b1")


def _timm_lamb_prenormalisation(optimizer: Any) -> Any:
    norm = scalar(optimizer.defaults.get("max_grad_norm"))
    return None if norm is None else lamb.clip_by_global_norm_ratio(float(norm))


def _read_deepspeed_adam(class_name: str):
    """A group of ``FusedAdam`` / ``DeepSpeedCPUAdam`` as :func:`optax_bertadam.fused_adam`.

    Both keep ``adam_w_mode`` on the object (one for all groups), the rest per group.
    """

    def read(optimizer: Any, group: Mapping[str, Any], index: int) -> GroupOptimizer:
        g = _group_values(group)
        # FusedAdam refuses amsgrad when built; DeepSpeedCPUAdam when a group is added.
        _refuse_flag(g, index, class_name, "amsgrad")
        if getattr(optimizer, "fp32_optimizer_states", True) is False:
            dtypes = sorted({str(p.dtype) for p in group.get("params", ())} - {"torch.float32"})
            if dtypes:
                raise ValueError(
                    f"{class_name}(fp32_optimizer_states=False) over {', '.join(dtypes)} parameters "
                    f"(param_groups[{index}]) is not supported by from_torch: its moments are kept "
                    "in the parameters' dtype, rounded at every step"
                )
        b1, b2 = (scalar(b) for b in g["betas"])
        return GroupOptimizer(ds_engine.fused_adam, dict(
            b1=b1, b2=b2, eps=g["eps"], weight_decay=g["weight_decay"],
            bias_correction=bool(g["bias_correction"]), adam_w_mode=bool(optimizer.adam_w_mode),
        ), "b1")

    return read


def _read_fused_lamb(optimizer: Any, group: Mapping[str, Any], index: int) -> GroupOptimizer:
    """A group of DeepSpeed's ``FusedLamb`` as :func:`optax_bertadam.deepspeed_lamb`
    (``eps_inside_sqrt`` is kept on the object as ``eps_mode``, 0 for inside)."""
    g = _group_values(group)
    if g["max_grad_norm"] > 0:
        raise ValueError(
            f"FusedLamb(param_groups[{index}]['max_grad_norm']={g['max_grad_norm']!r}) is not "
            "supported: its step() divides by a norm its caller passes (grad_norms=), which a "
            "plain optimizer.step() does not (it fails), and DeepSpeed's engine refuses the key: "
            "clip with gradient_clipping"
        )
    b1, b2 = (scalar(b) for b in g["betas"])
    return GroupOptimizer(lamb.deepspeed_lamb, dict(
        b1=b1, b2=b2, eps=g["eps"], eps_inside_sqrt=optimizer.eps_mode == 0,
        weight_decay=g["weight_decay"], max_coeff=g["max_coeff"], min_coeff=g["min_coeff"],
        bias_correction=bool(g["bias_correction"]),
    ), "b1")


@dataclasses.dataclass(frozen=True)
class ConfiguredOptimizer:
    """What a configuration builds, read as a live optimizer is: ``defaults``, ``param_groups``
    and the attributes its constructor keeps on the object (``optimizer.adam_w_mode``)."""

    defaults: Mapping[str, Any]
    param_groups: list[Mapping[str, Any]]
    attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # only for names that are not fields
        try:
            return self.__dict__["attributes"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclasses.dataclass(frozen=True)
class Constructor:
    """A class's ``__init__(params, **kwargs)`` as a configuration runs it, without the class.

    Attributes:
      class_name: the class, as errors name it.
      defaults: every keyword argument ``__init__`` takes, with its default.
      group_keys: those the parameter group holds (``defaults`` in PyTorch's terms).
      attributes: ``values -> {name: value}``: what ``__init__`` keeps on the object instead
        (``FusedAdam.adam_w_mode``, ``FusedLamb.eps_mode``), read by the class's reader.
      refuses: keyword arguments ``__init__`` raises on: ``{name: (bad value test, why)}``.
    """

    class_name: str
    defaults: Mapping[str, Any]
    group_keys: tuple[str, ...]
    attributes: Callable[[Mapping[str, Any]], dict[str, Any]] = lambda values: {}
    refuses: Mapping[str, tuple[Callable[[Any], bool], str]] = dataclasses.field(default_factory=dict)

    def __call__(self, kwargs: Mapping[str, Any], where: str) -> ConfiguredOptimizer:
        """The optimizer ``kwargs`` build: its one group (without ``params``) and attributes.

        Raises:
          ValueError: naming ``where.key`` (e.g. ``optimizer.params.amsgrad``), for a keyword
            the class does not take or raises on.
        """
        for key, value in kwargs.items():
            if key not in self.defaults:
                raise ValueError(f"{where}.{key}={value!r} is invalid: {self.class_name} takes "
                                 f"{', '.join(sorted(self.defaults))}")
            if key in self.refuses and self.refuses[key][0](value):
                raise ValueError(f"{where}.{key}={value!r} is invalid: {self.class_name} "
                                 f"{self.refuses[key][1]}")
        values = {**self.defaults, **kwargs}
        group = {key: values[key] for key in self.group_keys}
        return ConfiguredOptimizer(group, [group], self.attributes(values))


_TORCH_FLAGS = dict(maximize=False, foreach=None, capturable=False, differentiable=False, fused=None)
_ADAM_DEFAULTS = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
_AMSGRAD = {"amsgrad": (bool, "does not support the AMSGrad variant (it raises)")}


def _torch_constructor(class_name: str, defaults: Mapping[str, Any]) -> Constructor:
    return Constructor(class_name, defaults, tuple(defaults))


_FUSED_ADAM = Constructor(
    "FusedAdam", dict(**_ADAM_DEFAULTS, bias_correction=True, adam_w_mode=True, weight_decay=0.0,
                      amsgrad=False, set_grad_none=True),
    ("lr", "bias_correction", "betas", "eps", "weight_decay"),
    lambda v: dict(adam_w_mode=1 if v["adam_w_mode"] else 0, set_grad_none=v["set_grad_none"]),
    _AMSGRAD,
)
_CPU_ADAM = Constructor(
    "DeepSpeedCPUAdam", dict(**_ADAM_DEFAULTS, bias_correction=True, weight_decay=0.0, amsgrad=False,
                             adamw_mode=True, fp32_optimizer_states=True),
    ("lr", "betas", "eps", "weight_decay", "bias_correction", "amsgrad"),
    lambda v: dict(adam_w_mode=v["adamw_mode"], fp32_optimizer_states=v["fp32_optimizer_states"]),
    _AMSGRAD,
)
_FUSED_LAMB = Constructor(
    "FusedLamb", dict(**_ADAM_DEFAULTS, bias_correction=True, eps_inside_sqrt=False, weight_decay=0.0,
                      max_grad_norm=0.0, max_coeff=10.0, min_coeff=0.01, amsgrad=False),
    ("lr", "bias_correction", "betas", "eps", "weight_decay", "max_grad_norm", "max_coeff",
     "min_coeff"),
    lambda v: dict(eps_mode=0 if v["eps_inside_sqrt"] else 1),
    _AMSGRAD,
)


@dataclasses.dataclass(frozen=True)
class _Exactly:
    """Recognises the class ``qualname`` of the package ``module`` (see :func:`is_instance_of`)."""

    module: str
    qualname: str

    def __call__(self, obj: Any) -> bool:
        return is_instance_of(obj, self.module, self.qualname)


_exactly = _Exactly


#: Every PyTorch-side optimizer the library reads, in the order they are tried.
OPTIMIZERS: tuple[OptimizerRecord, ...] = (
    OptimizerRecord(
        "torch.optim.AdamW", _exactly("torch.optim", "AdamW"), _read_adam(True, "AdamW"),
        (optimizers.adamw, optimizers.adam), ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        construct=_torch_constructor("torch.optim.AdamW", dict(
            **_ADAM_DEFAULTS, weight_decay=1e-2, amsgrad=False, **_TORCH_FLAGS)),
    ),
    OptimizerRecord(
        "torch.optim.Adam", _exactly("torch.optim", "Adam"), _read_adam(False, "Adam"),
        (optimizers.adam, optimizers.adamw), ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        construct=_torch_constructor("torch.optim.Adam", dict(
            **_ADAM_DEFAULTS, weight_decay=0.0, amsgrad=False, **_TORCH_FLAGS,
            decoupled_weight_decay=False)),
    ),
    OptimizerRecord(
        "torch.optim.SGD", _exactly("torch.optim", "SGD"), _read_sgd, (optimizers.sgd,),
        ("momentum_buffer",), writes_step=False,
        construct=_torch_constructor("torch.optim.SGD", dict(
            lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
            maximize=False, foreach=None, differentiable=False, fused=None)),
    ),
    OptimizerRecord(
        "torch.optim.Adagrad", _exactly("torch.optim", "Adagrad"), _read_adagrad,
        (optimizers.adagrad,), ("sum",),
    ),
    OptimizerRecord(
        "torch.optim.RMSprop", _exactly("torch.optim", "RMSprop"), _read_rmsprop,
        (optimizers.rmsprop,), ("square_avg", "momentum_buffer", "grad_avg"),
    ),
    OptimizerRecord(
        "transformers.Adafactor", _exactly("transformers", "Adafactor"), _read_adafactor,
        (optimizers.adafactor,), ("exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq"),
    ),
    OptimizerRecord(
        "BertAdam of DeepSpeedExamples (bing_bert optimization.py)", _is_deepspeed_bertadam,
        _read_deepspeed_bertadam, (optimizers.bertadam,), ("next_m", "next_v"),
    ),
    OptimizerRecord(
        "timm.optim.Lamb (apex FusedLAMB)", _is_timm_lamb, _read_timm_lamb, (lamb.nvidia_lamb,),
        ("exp_avg", "exp_avg_sq"), across_groups=_timm_lamb_prenormalisation,
    ),
    OptimizerRecord(
        "pytorch_pretrained_bert.BertAdam", _exactly("pytorch_pretrained_bert", "BertAdam"),
        _read_pretrained_bertadam, (optimizers.bertadam,), ("next_m", "next_v"),
    ),
    OptimizerRecord(
        "deepspeed.ops.adam.FusedAdam", _exactly("deepspeed.ops.adam", "FusedAdam"),
        _read_deepspeed_adam("FusedAdam"), (ds_engine.fused_adam,), ("exp_avg", "exp_avg_sq"),
        construct=_FUSED_ADAM,
    ),
    OptimizerRecord(
        "deepspeed.ops.adam.DeepSpeedCPUAdam", _exactly("deepspeed.ops.adam", "DeepSpeedCPUAdam"),
        _read_deepspeed_adam("DeepSpeedCPUAdam"), (ds_engine.fused_adam,),
        ("exp_avg", "exp_avg_sq"), construct=_CPU_ADAM,
    ),
    OptimizerRecord(
        "deepspeed.ops.lamb.FusedLamb", _exactly("deepspeed.ops.lamb", "FusedLamb"),
        _read_fused_lamb, (lamb.deepspeed_lamb,), ("exp_avg", "exp_avg_sq"), construct=_FUSED_LAMB,
    ),
)


def optimizer_record(optimizer: Any) -> OptimizerRecord:
    """The record of a live optimizer.

    Raises:
      ValueError: no record recognises it (the message lists what is supported).
    """
    for record in OPTIMIZERS:
        if record.recognises(optimizer):
            return record
    raise ValueError(
        f"optimizer {class_of(optimizer)} is not supported by from_torch; supported: "
        f"{_validation.listing((r.name for r in OPTIMIZERS), None)}"
    )


def torch_state_keys() -> tuple[str, ...]:
    """Every per-parameter state key of a catalogued optimizer, each once."""
    return tuple(dict.fromkeys(key for record in OPTIMIZERS for key in record.state_keys))


def deepspeed_adam_class(param_groups: Sequence[Mapping[str, Any]]) -> str | None:
    """``"FusedAdam"`` or ``"DeepSpeedCPUAdam"`` when these parameter groups (a ``state_dict()``'s
    or a live optimizer's) are that class's, else ``None``; told by the groups' keys.

    Both keep what ``torch_state`` must write differently from ``torch.optim.Adam``: an int
    ``step`` per parameter (their kernels take an integer), and ``FusedAdam`` one count per group
    (``group['step']`` set to 0, the group's last parameter's ``state['step']`` advanced; see
    :func:`optax_bertadam.fused_adam`). A group's keys that some catalogued constructor writes
    (other keys: a scheduler's ``initial_lr``, a user's own) must be exactly one class's:
    ``FusedAdam``'s ``lr, bias_correction, betas, eps, weight_decay`` (and ``step`` once it has
    stepped), ``DeepSpeedCPUAdam``'s the same with ``amsgrad`` and no ``step``; every group must
    say the same. ``torch.optim.Adam`` (``amsgrad``, ``foreach``...), ``FusedLamb``
    (``max_coeff``...) and timm's ``Lamb`` (``max_grad_norm``) are told apart by their keys.
    """
    constructors = [record.construct for record in OPTIMIZERS if record.construct is not None]
    known = {key for construct in constructors for key in construct.group_keys} | {"step"}
    classes = {_FUSED_ADAM.class_name: (set(_FUSED_ADAM.group_keys), {"step"}),
               _CPU_ADAM.class_name: (set(_CPU_ADAM.group_keys), set())}
    found = set()
    for group in param_groups:
        keys = set(group) & known
        matches = [name for name, (own, optional) in classes.items()
                   if own <= keys <= own | optional]
        if len(matches) != 1:
            return None
        found.add(matches[0])
    return found.pop() if len(found) == 1 else None


# ---------------------------------------------------------------------------------- schedulers


@dataclasses.dataclass(frozen=True)
class SchedulerContext:
    """What a scheduler reader needs besides the scheduler.

    Attributes:
      optimizer: the live optimizer the scheduler drives.
      momentum_name: the argument a cycled momentum goes to (``None``: the optimizer has none).
      read: reads a member scheduler (of a ``SequentialLR`` or ``ChainedScheduler``) through
        its own record.
    """

    optimizer: Any
    momentum_name: str | None
    read: Callable[[Any], GroupRates]

    @property
    def groups(self) -> list[Mapping[str, Any]]:
        return list(self.optimizer.param_groups)

    def base_lrs(self, scheduler: Any) -> list[float]:
        """The groups' ``initial_lr`` as the scheduler recorded them."""
        if hasattr(scheduler, "base_lrs"):
            return [float(scalar(lr)) for lr in scheduler.base_lrs]
        return [float(scalar(g["initial_lr"])) for g in self.groups]


# (scheduler, group index) -> that group's keyword arguments of a record's factory.
Options = Callable[[Any, int], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class SchedulerRecord:
    """One PyTorch-side learning-rate scheduler class.

    A class whose hyperparameters a closed form or the replay reproduces is read once, by
    :attr:`options`; both readings derive from it: the closed form ``factory(**options)`` (its
    :attr:`read`, and its :attr:`multiplier` for a multiplicative class) and the step-by-step
    replay's ``TorchScheduler(short_name, options)`` (:func:`torch_scheduler`).

    Attributes:
      name: the name users know it by, e.g. ``"torch.optim.lr_scheduler.StepLR"``.
      recognises: ``scheduler -> bool``.
      read: ``(scheduler, context) -> per-group (rate, momentum)`` for a scheduler driven by
        the update count; for a loss-driven one ``(scheduler, context) -> (rule, initial rates)``
        (a :class:`~optax_bertadam.schedules.transformers.LossDrivenRule`).
      factory: the schedule (or loss-driven transform) of this package that reproduces it.
      loss_driven: ``scheduler.step(metric)`` takes a metric; the rate follows it.
      multiplier: for a multiplicative scheduler (each step multiplies the current rate), its
        factor as a :class:`~optax_bertadam.ScaledSchedule` at rate 1, read from the object:
        what a ``ChainedScheduler`` composes.
      options: ``(scheduler, group index) -> dict``: the group's hyperparameters read from the
        live object, exactly the keyword arguments of :attr:`factory` and the options of its
        :class:`~optax_bertadam.schedules.pytorch.TorchScheduler` (a ``learning_rate`` is the
        scheduler's ``base_lrs`` entry); a function of the user's own is refused
        (:func:`refuse_user_function`). ``None``: a class read otherwise.
      replay: :func:`~optax_bertadam.schedules.pytorch.replay_torch_schedulers` reproduces it,
        alone or inside a ``SequentialLR``/``ChainedScheduler``: by its :attr:`options`, or for
        a composite (a replayed record without options) by its members' (``_schedulers``).
    """

    name: str
    recognises: Callable[[Any], bool]
    read: Callable[[Any, SchedulerContext], Any]
    factory: Callable[..., Any] | None
    loss_driven: bool = False
    multiplier: Callable[[Any], transforms.ScaledSchedule] | None = None
    options: Options | None = None
    replay: bool = False

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def refuse_user_function(where: str, function: Any) -> ValueError:
    """The error for a scheduler built on a Python function of the user's, which cannot be read."""
    return ValueError(
        f"{where}={function!r} is a function of your own, which from_torch cannot read: write it "
        "with jax.numpy (jnp.where for branches) and pass it as from_torch(optimizer, "
        "scheduler=multiplier), a function count -> factor of each group's initial lr, as "
        "LambdaLR's lr_lambda; or build the optimizer with ob.param_groups(factory, groups, "
        "schedule=multiplier)"
    )


def _check_per_group_lists(scheduler: Any, context: SchedulerContext) -> None:
    groups = context.groups
    for attribute in ("base_lrs", "max_lrs", "base_momentums", "max_momentums", "min_lrs"):
        values = getattr(scheduler, attribute, None)
        if isinstance(values, (list, tuple)) and len(values) != len(groups):
            raise ValueError(
                f"{type(scheduler).__qualname__}.{attribute} has {len(values)} entries but the "
                f"optimizer has {len(groups)} param groups (a group added after the scheduler was "
                "built)"
            )


def _check_momentum(rates: GroupRates, context: SchedulerContext, scheduler_name: str) -> GroupRates:
    if context.momentum_name is None and any(m is not None for _, m in rates):
        raise ValueError(
            f"{scheduler_name}(cycle_momentum=True) cycles a momentum this optimizer does not have "
            "as momentum or betas[0]; pass cycle_momentum=False"
        )
    return rates


# ------------------------------------------------- each class's hyperparameters, read once


def scheduler_count(scheduler: Any) -> int:
    """How many times ``scheduler.step()`` has run since it was built: the count to resume at.

    A ``ChainedScheduler`` keeps no count of its own (its first member's); ``SWALR``'s is its
    ``_step_count - 1`` (what its rate depends on).

    Returns:
      The count (an int >= 0 for a scheduler built the usual way).
    """
    name = type(scheduler).__qualname__
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


def _base_lr(scheduler: Any, group: int) -> float:
    return float(scalar(scheduler.base_lrs[group]))


@dataclasses.dataclass(frozen=True)
class _Attributes:
    """Options that are attributes of the scheduler of the same name, with the group's base rate."""

    names: tuple[str, ...]

    def __call__(self, scheduler: Any, group: int) -> dict[str, Any]:
        return {"learning_rate": _base_lr(scheduler, group),
                **{name: getattr(scheduler, name) for name in self.names}}


def _attributes(*names: str) -> _Attributes:
    return _Attributes(names)


def _multi_step_lr_options(scheduler: Any, group: int) -> dict[str, Any]:
    return dict(learning_rate=_base_lr(scheduler, group),
                milestones=tuple(sorted(scheduler.milestones.elements())), gamma=scheduler.gamma)


def _constant_lr(learning_rate: float, factor: float = 1.0 / 3, total_iters: int = 5):
    """:func:`~optax_bertadam.schedules.pytorch.constant_lr` as torch runs ``total_iters=0``.

    torch then applies the factor when built and never undoes it (its step-by-step form checks
    ``last_epoch == total_iters`` only after the first step); the replay reproduces that itself.
    """
    never = np.iinfo(np.int32).max
    return torch_schedules.constant_lr(learning_rate, factor, total_iters if total_iters > 0 else never)


# transformers' LambdaLR functions (functools.partial of these) -> our multipliers at rate 1.
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


def transformers_multiplier(function: Any, where: str) -> Schedule | None:
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
        f"supported: {_validation.listing(known)}"
    )


def _lambda_options(scheduler: Any, group: int) -> dict[str, Any]:
    """``LambdaLR``/``MultiplicativeLR``: a transformers function becomes its jnp multiplier."""
    function = scheduler.lr_lambdas[group]
    where = f"{type(scheduler).__qualname__}.lr_lambdas[{group}]"
    multiplier = transformers_multiplier(function, where)
    if multiplier is None:
        raise refuse_user_function(where, function)
    return dict(learning_rate=_base_lr(scheduler, group), lr_lambda=multiplier)


def _lambda_lr(learning_rate: float, lr_lambda: Schedule) -> transforms.ScaledSchedule:
    """``LambdaLR`` as a value: ``learning_rate * lr_lambda(count)`` (equal readings, equal states)."""
    return transforms.ScaledSchedule(learning_rate, lr_lambda, "LambdaLR")


def _cyclic_options(scheduler: Any, group: int) -> dict[str, Any]:
    # scale_mode follows mode when torch's own scale function is used (a user's is refused).
    if scheduler._scale_fn_custom is not None:
        raise refuse_user_function("CyclicLR.scale_fn", scheduler._scale_fn_custom)
    up = int(round(scheduler.total_size * scheduler.step_ratio))
    options = dict(
        base_lr=_base_lr(scheduler, group), max_lr=float(scalar(scheduler.max_lrs[group])),
        step_size_up=up, step_size_down=int(round(scheduler.total_size)) - up, mode=scheduler.mode,
        gamma=scheduler.gamma, cycle_momentum=bool(scheduler.cycle_momentum),
    )
    if scheduler.cycle_momentum:
        options.update(base_momentum=float(scalar(scheduler.base_momentums[group])),
                       max_momentum=float(scalar(scheduler.max_momentums[group])))
    return options


def _one_cycle_options(scheduler: Any, group: int) -> dict[str, Any]:
    # OneCycleLR keeps its per-group values in the groups (it replaces group['initial_lr']).
    g = _group_values(scheduler.optimizer.param_groups[group])
    if "max_lr" not in g:
        raise ValueError(
            f"OneCycleLR has no max_lr for param_groups[{group}] (a group added after the "
            "scheduler was built)"
        )
    phases = scheduler._schedule_phases
    total = scheduler.total_steps
    options = dict(
        max_lr=float(g["max_lr"]), total_steps=total, pct_start=(phases[0]["end_step"] + 1) / total,
        anneal_strategy=anneal_strategy(scheduler, "_anneal_func_type"),
        cycle_momentum=bool(scheduler.cycle_momentum),
        div_factor=g["max_lr"] / g["initial_lr"], final_div_factor=g["initial_lr"] / g["min_lr"],
        three_phase=len(phases) == 3,
    )
    if scheduler.cycle_momentum:
        options.update(base_momentum=float(g["base_momentum"]), max_momentum=float(g["max_momentum"]))
    return options


def _swalr_options(scheduler: Any, group: int) -> dict[str, Any]:
    # No learning_rate: SWALR starts from the group's lr when it takes over, which it recovers
    # from the current rate at every step (read_swalr; the replay does as PyTorch does).
    return dict(swa_lr=float(scalar(scheduler.optimizer.param_groups[group]["swa_lr"])),
                anneal_epochs=int(scheduler.anneal_epochs),
                anneal_strategy=anneal_strategy(scheduler, "_anneal_strategy"))


# ------------------------------------------------------ the closed forms, from the options


@dataclasses.dataclass(frozen=True)
class _ClosedForm:
    """Every group as ``factory(**options(scheduler, group))``: a rate or a :class:`CycleSchedules`."""

    factory: Callable[..., Any]
    options: Options

    def __call__(self, scheduler: Any, context: SchedulerContext) -> GroupRates:
        rates: GroupRates = []
        for group in range(len(context.groups)):
            made = self.factory(**self.options(scheduler, group))
            if isinstance(made, torch_schedules.CycleSchedules):
                rates.append((made.learning_rate, made.momentum))
            else:
                rates.append((made, None))
        return _check_momentum(rates, context, type(scheduler).__qualname__)


@dataclasses.dataclass(frozen=True)
class _MultiplierOf:
    """A multiplicative class's factor: ``factory(**options, learning_rate=1.0)``.

    Its options other than the rate are the scheduler's, the same for every group.
    """

    factory: Callable[..., transforms.ScaledSchedule]
    options: Options

    def __call__(self, scheduler: Any) -> transforms.ScaledSchedule:
        return self.factory(**{**self.options(scheduler, 0), "learning_rate": 1.0})


def _scaled_by_multiplier(record_multiplier: Callable[[Any], transforms.ScaledSchedule]):
    def read(scheduler: Any, context: SchedulerContext) -> GroupRates:
        multiplier = record_multiplier(scheduler).multiplier
        name = type(scheduler).__qualname__
        return [(transforms.ScaledSchedule(lr, multiplier, name), None)
                for lr in context.base_lrs(scheduler)]

    return read


def _record_of(scheduler: Any) -> SchedulerRecord | None:
    return next((record for record in SCHEDULERS if record.recognises(scheduler)), None)


def _is_multiplicative(scheduler: Any) -> bool:
    record = _record_of(scheduler)
    if record is None or record.multiplier is None:
        return False
    if record.short_name == "ChainedScheduler":
        return all(_is_multiplicative(member) for member in scheduler._schedulers)
    return True


def _multiplier_of_member(scheduler: Any) -> transforms.ScaledSchedule:
    record = scheduler_record(scheduler)
    if record.multiplier is None:
        raise ValueError(
            f"scheduler {class_of(scheduler)} cannot be a member of ChainedScheduler here: only the "
            "multiplicative schedulers compose ("
            f"{_validation.listing(r.short_name for r in SCHEDULERS if r.multiplier is not None)})"
        )
    return record.multiplier(scheduler)


def _chained_multiplier(scheduler: Any) -> transforms.ScaledSchedule:
    return torch_schedules.chained_scheduler([_multiplier_of_member(m) for m in scheduler._schedulers])


def _refuse_multiplicative_lr(scheduler: Any, context: SchedulerContext) -> GroupRates:
    # Its product of the user's factors has no closed form here (the replay multiplies them).
    raise refuse_user_function("MultiplicativeLR.lr_lambdas", scheduler.lr_lambdas)


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
    if not is_instance_of(scheduler, "torch.optim.swa_utils", "SWALR"):
        raise ValueError(f"scheduler is a {type(scheduler).__qualname__}, not a SWALR")
    groups = scheduler.optimizer.param_groups
    options = [_swalr_options(scheduler, group) for group in range(len(groups))]
    if base_lrs is None:
        epochs = int(scheduler.anneal_epochs)
        step = scheduler_count(scheduler)
        if epochs == 0:
            step = max(1, step)
        strategy = anneal_strategy(scheduler, "_anneal_strategy")
        alpha = torch_schedules._swa_alpha_cos if strategy == "cos" else torch_schedules._swa_alpha_linear
        a = alpha(max(0, min(1, step / max(1, epochs))))
        base_lrs = [
            o["swa_lr"] if a == 1 else (float(scalar(g["lr"])) - a * o["swa_lr"]) / (1 - a)
            for o, g in zip(options, groups, strict=True)
        ]
    if len(base_lrs) != len(groups):
        raise ValueError(f"base_lrs has {len(base_lrs)} entries but the optimizer has {len(groups)} groups")
    return [torch_schedules.swa_lr(float(lr), **o) for lr, o in zip(base_lrs, options, strict=True)]


def _read_swalr(scheduler: Any, context: SchedulerContext) -> GroupRates:
    return [(rate, None) for rate in read_swalr(scheduler)]


# -------------------------------------------------------------- the replay, from the options


def torch_scheduler(scheduler: Any, group: int, *, where: str = "scheduler") -> TorchScheduler:
    """Group ``group``'s values of a live scheduler (members included), as a :class:`TorchScheduler`.

    A leaf is ``TorchScheduler(record.short_name, record.options(scheduler, group))``; a
    ``SequentialLR``/``ChainedScheduler`` holds its members' (and its milestones).

    Args:
      scheduler: a live scheduler whose record has ``replay``.
      group: the parameter group's index.
      where: how errors name the scheduler.

    Returns:
      The :class:`~optax_bertadam.schedules.pytorch.TorchScheduler`.

    Raises:
      ValueError: for a class that cannot be replayed or a function of the user's own.
    """
    record = _record_of(scheduler)
    if record is None or not record.replay:
        raise ValueError(
            f"{where} is a {class_of(scheduler)}, which cannot be replayed; supported: "
            f"{_validation.listing((r.short_name for r in SCHEDULERS if r.replay), None)}"
        )
    if record.options is not None:
        return TorchScheduler(record.short_name, record.options(scheduler, group))
    members = tuple(torch_scheduler(member, group, where=f"{where}._schedulers[{index}]")
                    for index, member in enumerate(scheduler._schedulers))
    milestones = tuple(int(m) for m in getattr(scheduler, "_milestones", ()))
    return TorchScheduler(record.short_name, members=members, milestones=milestones)


def _first_leaf(spec: TorchScheduler) -> TorchScheduler:
    return _first_leaf(spec.members[0]) if spec.members else spec


# Counts a step-by-step replay tabulates when it is built (0.8 s for 100k); later counts are
# replayed on the host, exactly but a callback per update.
REPLAY_STEPS = 100_000


def replay_scheduler(
    scheduler: Any, base_lrs: Sequence[float], *, num_steps: int = REPLAY_STEPS
) -> list[torch_schedules.CycleSchedules]:
    """Per group, the rate (and cycled momentum) a live scheduler sets at each count, replayed.

    For what no closed form of the count reproduces: a ``ChainedScheduler`` of any members
    (``CosineAnnealingLR`` in its recursive form anneals whatever rate the others left), a
    ``SequentialLR`` whose nested ``SequentialLR``/``ChainedScheduler`` members run one step
    ahead of their parts, whose ``CyclicLR``/``OneCycleLR`` members cycle the momentum (each sets
    it while active) or whose ``MultiplicativeLR`` after the first position multiplies the
    previous member's last rate. Each group's :func:`torch_scheduler` goes to
    :func:`~optax_bertadam.schedules.pytorch.replay_torch_schedulers`.

    Args:
      scheduler: the live scheduler (a record with ``replay``).
      base_lrs: each group's ``initial_lr`` (the rate a ``SequentialLR`` resets to when built),
        used where the first scheduler records no base rate of the group.
      num_steps: counts tabulated on the device (later ones are replayed on the host).

    Returns:
      One :class:`~optax_bertadam.schedules.pytorch.CycleSchedules` per group (``momentum``
      ``None`` unless a member cycles it), functions of :func:`scheduler_count`.
    """
    schedules = []
    for group, base_lr in enumerate(base_lrs):
        spec = torch_scheduler(scheduler, group)
        # The group's lr before the first scheduler was built: what that one recorded as its
        # base (OneCycleLR may have replaced group['initial_lr'] since).
        first = _first_leaf(spec).option("learning_rate")
        learning_rate = float(base_lr) if first is None else first
        schedules.append(torch_schedules.replay_torch_schedulers(learning_rate, spec, num_steps))
    return schedules


def _replayed(scheduler: Any, context: SchedulerContext) -> GroupRates:
    """A composite that no closed form of the count reproduces, replayed as PyTorch steps it."""
    cycles = replay_scheduler(scheduler, context.base_lrs(scheduler))
    return _check_momentum([(cycle.learning_rate, cycle.momentum) for cycle in cycles], context,
                           type(scheduler).__qualname__)


def _read_sequential(scheduler: Any, context: SchedulerContext) -> GroupRates:
    members = scheduler._schedulers
    # One restart per milestone, every member a closed form of its own count: optax's
    # join_schedules. A nested sequence or chain (PyTorch steps it one update ahead of its
    # parts), a MultiplicativeLR after the first (it continues from the previous rate) or a
    # member that cycles the momentum: the replay.
    # A OneCycleLR member replaces group['initial_lr'] when built, which members built before it
    # do not see: the replay builds them in PyTorch's order.
    # A SWALR member anneals from the rate the group has when its turn comes, which its closed
    # form can only recover from the group's current lr once SWALR is running: the replay.
    names = [type(m).__qualname__ for m in members]
    closed_form = not {"SequentialLR", "ChainedScheduler", "OneCycleLR", "SWALR"} & set(names) and (
        "MultiplicativeLR" not in names[1:])
    if closed_form:
        rates = [context.read(member) for member in members]
        if all(momentum is None for member in rates for _, momentum in member):
            return [(sequential_lr([member[g][0] for member in rates], list(scheduler._milestones)), None)
                    for g in range(len(context.groups))]
    return _replayed(scheduler, context)


def _read_chained(scheduler: Any, context: SchedulerContext) -> GroupRates:
    if all(_is_multiplicative(member) for member in scheduler._schedulers):
        return _scaled_by_multiplier(_chained_multiplier)(scheduler, context)
    # CosineAnnealingLR (its recursive form anneals whatever rate the others left), cyclic or
    # sequential members: the replay.
    return _replayed(scheduler, context)


# ------------------------------------------------------------------- the other schedulers


def _read_adafactor_schedule(scheduler: Any, context: SchedulerContext) -> GroupRates:
    # A reporting scheduler: Adafactor with relative_step ignores group['lr'].
    if any(g.get("relative_step") is False for g in context.groups):
        raise ValueError(
            "scheduler AdafactorSchedule is supported with relative_step=True only (it reports "
            "Adafactor's own rate); with relative_step=False use a LambdaLR"
        )
    return [(None, None)] * len(context.groups)


def _per_group(scheduler: Any, values: Sequence[Any], attribute: str, count: int) -> list[float]:
    values = [float(scalar(v)) for v in values]
    if len(values) != count:
        raise ValueError(
            f"{type(scheduler).__qualname__}.{attribute} has {len(values)} entries but the "
            f"optimizer has {count} param groups (a group added after the scheduler was built)"
        )
    return values


def _plateau_common(scheduler: Any) -> dict[str, Any]:
    return dict(mode=scheduler.mode, factor=float(scheduler.factor), patience=scheduler.patience,
                threshold=float(scheduler.threshold), threshold_mode=scheduler.threshold_mode,
                cooldown=scheduler.cooldown, eps=float(scheduler.eps))


def _read_plateau(scheduler: Any, context: SchedulerContext):
    groups = context.groups
    min_lrs = scheduler.min_lrs
    if getattr(scheduler, "default_min_lr", None) is not None:
        min_lrs = [scheduler.default_min_lr] * len(groups)  # what PyTorch does for new groups
    # The rates start from the groups' current lr (a plateau scheduler keeps no initial rates).
    initial = [float(scalar(g["lr"])) for g in groups]
    rule = loss_driven.plateau_rule(
        initial, min_lr=_per_group(scheduler, min_lrs, "min_lrs", len(groups)),
        **_plateau_common(scheduler),
    )
    return rule, initial


def _read_greedy(scheduler: Any, context: SchedulerContext):
    count = len(context.groups)
    # GreedyLR's reset goes back to the rates it was built with, which may not be today's.
    initial = _per_group(scheduler, scheduler._init_lrs, "_init_lrs", count)
    # `verbose` only prints; it changes no number.
    rule = loss_driven.greedy_rule(
        initial, min_lr=_per_group(scheduler, scheduler.min_lrs, "min_lrs", count),
        max_lr=_per_group(scheduler, scheduler.max_lrs, "max_lrs", count), warmup=scheduler.warmup,
        smooth=bool(scheduler.smooth), window_size=scheduler.window_size, verbose=False,
        reset_start=scheduler.reset_start_original, **_plateau_common(scheduler),
    )
    return rule, initial


def _read_deepspeed_scheduler(scheduler: Any, context: SchedulerContext) -> GroupRates:
    # deepspeed.py builds the schedules of a config; a live scheduler is read into its config.
    from optax_bertadam import deepspeed as ds_config

    name, params, base_lrs = ds_config.scheduler_settings(scheduler)
    lrs = base_lrs if base_lrs is not None else [float(scalar(g["lr"])) for g in context.groups]
    rates = ds_config.group_schedules(name, params, lrs, cycles_momentum=context.momentum_name == "b1")
    return _check_momentum(rates, context, name)


def _deepspeed_scheduler(name: str) -> SchedulerRecord:
    return SchedulerRecord(f"deepspeed.runtime.lr_schedules.{name}",
                           _exactly("deepspeed.runtime.lr_schedules", name),
                           _read_deepspeed_scheduler, ds_schedules.DEEPSPEED_SCHEDULERS[name])


def _torch_scheduler(name: str, read, factory, **kwargs) -> SchedulerRecord:
    return SchedulerRecord(f"torch.optim.lr_scheduler.{name}",
                           _exactly("torch.optim.lr_scheduler", name), read, factory, **kwargs)


def _replayed_leaf(name: str, factory, options: Options, *, module: str = "torch.optim.lr_scheduler",
                   read=None, multiplier=None) -> SchedulerRecord:
    """A class read by its ``options``: the closed form ``factory(**options)`` unless ``read``
    says otherwise, and the replay."""
    return SchedulerRecord(f"{module}.{name}", _exactly(module, name),
                           _ClosedForm(factory, options) if read is None else read, factory,
                           multiplier=multiplier, options=options, replay=True)


def _multiplicative(name: str, factory, options: Options) -> SchedulerRecord:
    """A class whose steps multiply the rate: its factor at rate 1 is what a chain composes."""
    return _replayed_leaf(name, factory, options, multiplier=_MultiplierOf(factory, options))


#: Every PyTorch-side scheduler the library reads.
SCHEDULERS: tuple[SchedulerRecord, ...] = (
    _multiplicative("StepLR", torch_schedules.step_lr, _attributes("step_size", "gamma")),
    _multiplicative("MultiStepLR", torch_schedules.multi_step_lr, _multi_step_lr_options),
    _multiplicative("ConstantLR", _constant_lr, _attributes("factor", "total_iters")),
    _multiplicative("LinearLR", torch_schedules.linear_lr,
                    _attributes("start_factor", "end_factor", "total_iters")),
    _multiplicative("ExponentialLR", torch_schedules.exponential_lr, _attributes("gamma")),
    _multiplicative("PolynomialLR", torch_schedules.polynomial_lr, _attributes("total_iters", "power")),
    _torch_scheduler("ChainedScheduler", _read_chained, torch_schedules.chained_scheduler,
                     multiplier=_chained_multiplier, replay=True),
    _replayed_leaf("MultiplicativeLR", torch_schedules.multiplicative_lr, _lambda_options,
                   read=_refuse_multiplicative_lr),
    _replayed_leaf("LambdaLR", _lambda_lr, _lambda_options),
    _replayed_leaf("CosineAnnealingLR", torch_schedules.cosine_annealing_lr, _attributes("T_max", "eta_min")),
    _replayed_leaf("CosineAnnealingWarmRestarts", torch_schedules.cosine_annealing_warm_restarts,
                   _attributes("T_0", "T_mult", "eta_min")),
    _replayed_leaf("CyclicLR", torch_schedules.cyclic_lr, _cyclic_options),
    _replayed_leaf("OneCycleLR", torch_schedules.one_cycle_lr, _one_cycle_options),
    _torch_scheduler("SequentialLR", _read_sequential, sequential_lr, replay=True),
    _replayed_leaf("SWALR", torch_schedules.swa_lr, _swalr_options, module="torch.optim.swa_utils",
                   read=_read_swalr),
    _torch_scheduler("ReduceLROnPlateau", _read_plateau, loss_driven.reduce_lr_on_plateau,
                     loss_driven=True),
    SchedulerRecord("transformers.AdafactorSchedule", _exactly("transformers", "AdafactorSchedule"),
                    _read_adafactor_schedule, None),
    *(_deepspeed_scheduler(name) for name in ds_schedules.DEEPSPEED_SCHEDULERS),
    SchedulerRecord("transformers.GreedyLR", _exactly("transformers", "GreedyLR"), _read_greedy,
                    loss_driven.greedy_lr, loss_driven=True),
)


def scheduler_record(scheduler: Any) -> SchedulerRecord:
    """The record of a live scheduler.

    Raises:
      ValueError: no record recognises it (the message lists what is supported).
    """
    record = _record_of(scheduler)
    if record is not None:
        return record
    raise ValueError(
        f"scheduler {class_of(scheduler)} is not supported; supported: "
        f"{_validation.listing((r.name for r in SCHEDULERS), None)}, or a jnp function count -> factor "
        "of each group's initial lr"
    )


def scheduler_record_by_name(name: str) -> SchedulerRecord:
    """The record whose name ends with ``name`` (``"StepLR"`` or its full name)."""
    for record in SCHEDULERS:
        if name in (record.name, record.short_name):
            return record
    raise ValueError(
        f"name={name!r} is invalid: expected one of {_validation.listing((r.name for r in SCHEDULERS), None)}"
    )


def is_loss_driven(scheduler: Any) -> bool:
    """Whether ``scheduler.step`` takes a metric (a catalogued loss-driven scheduler)."""
    return any(record.loss_driven and record.recognises(scheduler) for record in SCHEDULERS)


def read_scheduler(scheduler: Any, optimizer: Any, momentum_name: str | None) -> GroupRates:
    """Per group, the rate and cycled momentum of a live scheduler driven by the update count."""
    record = scheduler_record(scheduler)
    if record.loss_driven:
        raise ValueError(f"scheduler {record.name} is loss-driven: read it with read_loss_driven")
    if getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("scheduler is invalid: it drives another optimizer than optimizer")
    context = SchedulerContext(
        optimizer, momentum_name, lambda member: read_scheduler(member, optimizer, momentum_name)
    )
    _check_per_group_lists(scheduler, context)
    return record.read(scheduler, context)


def read_loss_driven(scheduler: Any, optimizer: Any) -> tuple[loss_driven.LossDrivenRule, list[float]]:
    """``(rule, initial rates)`` of a live loss-driven scheduler (``ReduceLROnPlateau``, ``GreedyLR``)."""
    record = scheduler_record(scheduler)
    if not record.loss_driven:
        raise ValueError(f"scheduler {record.name} is not loss-driven")
    if scheduler.optimizer is not optimizer:
        raise ValueError("scheduler is invalid: it drives another optimizer than optimizer")
    return record.read(scheduler, SchedulerContext(optimizer, None, lambda member: []))


# ------------------------------------------------------------- the transformers Trainer's optim


@dataclasses.dataclass(frozen=True)
class TrainerOptimRecord:
    """One ``TrainingArguments.optim`` name whose optimizer runs from plain torch/transformers.

    A configuration becomes what a live optimizer would hold: :attr:`group` gives the parameter
    group the Trainer's optimizer would have, which the record of that optimizer class
    (:attr:`optimizer`) reads as it reads a live one. One path, two front doors.

    Attributes:
      name: the ``optim`` value, e.g. ``"adamw_torch"``.
      optimizer: the name of the :class:`OptimizerRecord` of the class the Trainer builds.
      group: ``(args, optim_args) -> group dict`` (without ``params``): the hyperparameters of a
        group of that optimizer as the Trainer constructs it (``args.learning_rate``,
        ``adam_beta1/2``, ``adam_epsilon``, the class's defaults, ``optim_args``).
      optim_args: the ``args.optim_args`` keys the Trainer reads for it (others are ignored).
    """

    name: str
    optimizer: str
    group: Callable[[Any, Mapping[str, Any]], dict[str, Any]]
    optim_args: tuple[str, ...] = ()

    def read(self, args: Any, optim_args: Mapping[str, Any], weight_decay: float) -> GroupOptimizer:
        """The :class:`GroupOptimizer` of a group with ``weight_decay`` (the decayed group)."""
        group = {**self.group(args, optim_args), "weight_decay": weight_decay}
        record = optimizer_record_by_name(self.optimizer)
        # The readers take (optimizer, group, index); a configured optimizer's defaults are its
        # group's values.
        live = ConfiguredOptimizer(group, [group])
        return record.read_group(live, group, 0)


def _adam_group(args: Any, optim_args: Mapping[str, Any]) -> dict[str, Any]:
    del optim_args  # the Trainer passes none to AdamW
    return dict(lr=float(args.learning_rate), betas=(float(args.adam_beta1), float(args.adam_beta2)),
                eps=float(args.adam_epsilon), amsgrad=False, maximize=False)


def _adafactor_group(args: Any, optim_args: Mapping[str, Any]) -> dict[str, Any]:
    del optim_args
    # The Trainer's own Adafactor arguments: an external rate, no parameter scaling.
    return dict(lr=float(args.learning_rate), eps=(1e-30, 1e-3), clip_threshold=1.0,
                decay_rate=-0.8, beta1=None, scale_parameter=False, relative_step=False,
                warmup_init=False)


def _sgd_group(args: Any, optim_args: Mapping[str, Any]) -> dict[str, Any]:
    return {**dict(lr=float(args.learning_rate), momentum=0.0, dampening=0.0, nesterov=False,
                   maximize=False), **optim_args}


def _adagrad_group(args: Any, optim_args: Mapping[str, Any]) -> dict[str, Any]:
    return {**dict(lr=float(args.learning_rate), lr_decay=0.0, eps=1e-10,
                   initial_accumulator_value=0.0, maximize=False), **optim_args}


def _rmsprop_group(args: Any, optim_args: Mapping[str, Any]) -> dict[str, Any]:
    return {**dict(lr=float(args.learning_rate), alpha=0.99, eps=1e-8, momentum=0.0,
                   centered=False, maximize=False), **optim_args}


#: Every ``TrainingArguments.optim`` the library reproduces.
TRAINER_OPTIMS: tuple[TrainerOptimRecord, ...] = (
    TrainerOptimRecord("adamw_torch", "torch.optim.AdamW", _adam_group),
    TrainerOptimRecord("adamw_torch_fused", "torch.optim.AdamW", _adam_group),
    TrainerOptimRecord("adafactor", "transformers.Adafactor", _adafactor_group),
    TrainerOptimRecord("sgd", "torch.optim.SGD", _sgd_group,
                       ("momentum", "dampening", "weight_decay", "nesterov")),
    TrainerOptimRecord("adagrad", "torch.optim.Adagrad", _adagrad_group,
                       ("lr_decay", "weight_decay", "eps")),
    TrainerOptimRecord("rmsprop", "torch.optim.RMSprop", _rmsprop_group,
                       ("momentum", "alpha", "eps", "weight_decay", "centered")),
)


def optimizer_record_by_name(name: str) -> OptimizerRecord:
    """The :class:`OptimizerRecord` called ``name``, e.g. ``"torch.optim.AdamW"``."""
    for record in OPTIMIZERS:
        if record.name == name:
            return record
    raise ValueError(
        f"name={name!r} is invalid: expected one of {_validation.listing((r.name for r in OPTIMIZERS), None)}"
    )


def trainer_optim_record(optim: str) -> TrainerOptimRecord:
    """The record of ``TrainingArguments.optim``.

    Raises:
      ValueError: naming ``args.optim`` and listing the supported names.
    """
    for record in TRAINER_OPTIMS:
        if record.name == optim:
            return record
    raise ValueError(
        f"args.optim={optim!r} is not supported: its optimizer needs a package other than "
        f"torch/transformers or has no reproduction here; supported: "
        f"{_validation.listing((r.name for r in TRAINER_OPTIMS), None)}"
    )


# ------------------------------------------------------------ DeepSpeed's config optimizer types


@dataclasses.dataclass(frozen=True)
class DeepSpeedOptimizerType:
    """One ``optimizer.type`` of a DeepSpeed config: the class the engine builds from it.

    As for :class:`TrainerOptimRecord`, a configuration becomes what a live optimizer would
    hold: :attr:`builds` picks the class ``deepspeed.initialize`` builds and the keyword
    arguments it passes, that class's :attr:`OptimizerRecord.construct` makes its group, and the
    class's reader reads it as it reads a live one.

    Attributes:
      name: the type as DeepSpeed documents it, e.g. ``"Adam"``.
      builds: ``(params, offload) -> (class record name, keyword arguments)``: what the engine
        does with ``optimizer.params`` (a copy, its own keys such as ``torch_adam`` taken out),
        ``offload`` whether ``zero_optimization.offload_optimizer`` puts the optimizer on the CPU.
      exact_case: ``torch.optim`` classes are found by their exact name; DeepSpeed's own types
        (``adam``, ``lamb``, ...) in any case.
    """

    name: str
    builds: Callable[[dict[str, Any], bool], tuple[str, dict[str, Any]]]
    exact_case: bool = False

    def configure(self, params: Mapping[str, Any],
                  offload: bool) -> tuple[OptimizerRecord, ConfiguredOptimizer]:
        """The record of the class the engine builds and the optimizer it builds (one group)."""
        name, kwargs = self.builds(dict(params), offload)
        record = optimizer_record_by_name(name)
        return record, record.construct(kwargs, "optimizer.params")


def _flag(params: dict[str, Any], key: str, default: bool) -> bool:
    value = params.pop(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"optimizer.params.{key}={value!r} is invalid: expected true or false")
    return value


def _builds_adam(always_adamw: bool):
    """DeepSpeed's ``adam``/``adamw``: ``adam_w_mode`` (default true; ``adamw`` is always
    AdamW) picks the decay; ``torch_adam`` torch's classes, ZeRO-Offload ``DeepSpeedCPUAdam``,
    otherwise ``FusedAdam`` (the engine's ``get_optimizer_configuration``)."""

    def builds(params: dict[str, Any], offload: bool) -> tuple[str, dict[str, Any]]:
        adam_w_mode = _flag(params, "adam_w_mode", True) or always_adamw
        torch_adam = _flag(params, "torch_adam", False)
        fp32_states = params.pop("fp32_optimizer_states", None)
        if torch_adam:
            return ("torch.optim.AdamW" if adam_w_mode else "torch.optim.Adam"), params
        if offload:
            own = dict(adamw_mode=adam_w_mode,
                       fp32_optimizer_states=True if fp32_states is None else fp32_states)
            name = "deepspeed.ops.adam.DeepSpeedCPUAdam"
        else:
            own, name = dict(adam_w_mode=adam_w_mode), "deepspeed.ops.adam.FusedAdam"
        for key in own:
            if key in params:  # the engine passes it itself: a TypeError in DeepSpeed
                raise ValueError(f"optimizer.params.{key}={params[key]!r} is invalid: the engine "
                                 "sets it (use adam_w_mode)")
        return name, {**params, **own}

    return builds


#: Every DeepSpeed ``optimizer.type`` the library reproduces.
DEEPSPEED_OPTIMIZER_TYPES: tuple[DeepSpeedOptimizerType, ...] = (
    DeepSpeedOptimizerType("Adam", _builds_adam(False)),
    DeepSpeedOptimizerType("AdamW", _builds_adam(True)),
    DeepSpeedOptimizerType("Lamb", lambda params, offload: ("deepspeed.ops.lamb.FusedLamb", params)),
    DeepSpeedOptimizerType("SGD", lambda params, offload: ("torch.optim.SGD", params), exact_case=True),
)


def deepspeed_optimizer_type(name: Any) -> DeepSpeedOptimizerType:
    """The record of a DeepSpeed config's ``optimizer.type``.

    Raises:
      ValueError: naming ``optimizer.type`` and listing the supported types.
    """
    for record in DEEPSPEED_OPTIMIZER_TYPES:
        if name == record.name or (not record.exact_case and isinstance(name, str)
                                   and name.lower() == record.name.lower()):
            return record
    raise ValueError(
        f"optimizer.type={name!r} is invalid: expected one of "
        f"{', '.join(r.name for r in DEEPSPEED_OPTIMIZER_TYPES)} (1-bit Adam/LAMB, 0/1 Adam, Lion, "
        "Adagrad, Muon, MuP and other torch.optim classes are not reproduced)"
    )
