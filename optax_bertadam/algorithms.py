"""The registry of algorithms: every optimizer and transform of the package, declared once.

Each :class:`Algorithm` names its factory, how its arguments translate to PyTorch's (what
:func:`optax_bertadam.param_groups` reads a group's ``lr``/``betas`` with), the per-parameter
torch state keys its state holds, and which of its arguments decide the structure of the
computation (``static_args`` for ``optax.inject_hyperparams``) or are float hyperparameters that
can be injected. What the tests need besides (an example to build it with, the PyTorch twin to
compare it with) is test-side: ``parity_tests/twins.py``.

Every cross-cutting test (parity, the optax contract, sharding, checkpoints, torch-state
migration, schedules as ``learning_rate``) runs over :data:`ALGORITHMS` and :data:`TRANSFORMS`:
adding an optimizer is one function, one entry here, and its twin and example on the test side.
The registry is an immutable tuple, built once; nothing appends to it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import optax

from optax_bertadam import lamb, mixed_precision, optimizers, transforms
from optax_bertadam.schedules import loss_driven

_INDEXED = re.compile(r"^(\w+)\[(\d+)\]$")


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One optimizer or transform of the package.

    Attributes:
      name: the factory's name in ``optax_bertadam``.
      factory: the function returning the ``optax.GradientTransformation``.
      static_args: arguments that decide the structure of the computation: with
        ``optax.inject_hyperparams`` they go in ``static_args`` (strings, bools and ``None`` are
        static there anyway).
      injectable: float hyperparameters that ``optax.inject_hyperparams`` can inject and change.
      torch_arguments: factory argument -> the PyTorch optimizer's argument (and parameter group
        key); ``"betas[0]"`` is an entry of a tuple argument. Factory arguments not listed have
        no PyTorch counterpart.
      torch_state_keys: per-parameter keys of the PyTorch optimizer's ``state`` that this state
        holds (empty: no PyTorch state migrates to it).
      mask_argument: the argument taking a full-tree bool mask of decayed parameters, if any.
      needs_value: ``update`` takes the loss as ``value=`` (loss-driven transforms).
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    static_args: tuple[str, ...] = ()
    injectable: tuple[str, ...] = ()
    torch_arguments: Mapping[str, str] = dataclasses.field(default_factory=dict)
    torch_state_keys: tuple[str, ...] = ()
    mask_argument: str | None = None
    needs_value: bool = False

    def torch_kwargs(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Translate factory keyword arguments to the twin's (tuple entries gathered)."""
        out: dict[str, Any] = {}
        tuples: dict[str, dict[int, Any]] = {}
        for name, value in kwargs.items():
            if name not in self.torch_arguments:
                continue
            target = self.torch_arguments[name]
            indexed = _INDEXED.match(target)
            if indexed:
                tuples.setdefault(indexed.group(1), {})[int(indexed.group(2))] = value
            else:
                out[target] = value
        for name, entries in tuples.items():
            out[name] = tuple(entries[i] for i in sorted(entries))
        return out


_BERTADAM_ARGUMENTS = ("warmup", "t_total", "schedule", "b1", "b2", "e", "weight_decay",
                       "max_grad_norm")
_ADAFACTOR_ARGUMENTS = ("eps", "clip_threshold", "decay_rate", "beta1", "weight_decay",
                        "scale_parameter", "relative_step", "warmup_init")
_KERAS_ARGUMENTS = ("learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad", "weight_decay_rate",
                    "include_in_weight_decay", "exclude_from_weight_decay")

#: Every optimizer of the package.
ALGORITHMS: tuple[Algorithm, ...] = (
    Algorithm(
        name="bertadam",
        factory=optimizers.bertadam,
        static_args=("warmup", "t_total", "schedule", "clip_mode", "schedule_kwargs",
                     "clamp_lr_at_zero", "moment_dtype"),
        injectable=("learning_rate", "b1", "b2", "e", "weight_decay", "max_grad_norm"),
        torch_arguments=MappingProxyType(
            {"learning_rate": "lr", **{name: name for name in _BERTADAM_ARGUMENTS}}
        ),
        torch_state_keys=("next_m", "next_v"),
        mask_argument="mask",
    ),
    Algorithm(
        name="adamw",
        factory=optimizers.adamw,
        static_args=("correct_bias",),
        injectable=("learning_rate", "b1", "b2", "eps", "weight_decay"),
        torch_arguments=MappingProxyType({
            "learning_rate": "lr", "b1": "betas[0]", "b2": "betas[1]", "eps": "eps",
            "weight_decay": "weight_decay", "correct_bias": "correct_bias",
        }),
        torch_state_keys=("exp_avg", "exp_avg_sq"),
        mask_argument="mask",
    ),
    Algorithm(
        name="adafactor",
        factory=optimizers.adafactor,
        static_args=("scale_parameter", "relative_step", "warmup_init"),
        injectable=("learning_rate", "clip_threshold", "decay_rate", "beta1", "weight_decay"),
        torch_arguments=MappingProxyType(
            {"learning_rate": "lr", **{name: name for name in _ADAFACTOR_ARGUMENTS}}
        ),
        # Row/column factors for tensors of rank >= 2, the full moment for the others; the
        # derived "RMS" is recomputed by every step and not carried over.
        torch_state_keys=("exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq"),
        mask_argument="mask",
    ),
    Algorithm(
        name="adam_weight_decay",
        factory=optimizers.adam_weight_decay,
        static_args=("amsgrad",),
        injectable=("learning_rate", "beta_1", "beta_2", "epsilon", "weight_decay_rate"),
        torch_arguments=MappingProxyType({name: name for name in _KERAS_ARGUMENTS}),
        # A TensorFlow optimizer: there is no PyTorch optimizer state to migrate.
    ),
    Algorithm(
        name="adam",
        factory=optimizers.adam,
        static_args=("amsgrad", "decoupled_weight_decay"),
        injectable=("learning_rate", "b1", "b2", "eps", "weight_decay"),
        torch_arguments=MappingProxyType({
            "learning_rate": "lr", "b1": "betas[0]", "b2": "betas[1]", "eps": "eps",
            "weight_decay": "weight_decay", "amsgrad": "amsgrad",
            "decoupled_weight_decay": "decoupled_weight_decay",
        }),
        torch_state_keys=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        mask_argument="mask",
    ),
    Algorithm(
        name="fused_adam",
        factory=optimizers.fused_adam,
        static_args=("bias_correction", "adam_w_mode"),
        injectable=("learning_rate", "b1", "b2", "eps", "weight_decay"),
        # deepspeed.ops.adam.FusedAdam's names (DeepSpeedCPUAdam calls adam_w_mode adamw_mode).
        torch_arguments=MappingProxyType({
            "learning_rate": "lr", "b1": "betas[0]", "b2": "betas[1]", "eps": "eps",
            "weight_decay": "weight_decay", "bias_correction": "bias_correction",
            "adam_w_mode": "adam_w_mode",
        }),
        torch_state_keys=("exp_avg", "exp_avg_sq"),
        mask_argument="mask",
    ),
    Algorithm(
        name="sgd",
        factory=optimizers.sgd,
        static_args=("nesterov",),
        injectable=("learning_rate", "momentum", "dampening", "weight_decay"),
        torch_arguments=MappingProxyType({
            "learning_rate": "lr", "momentum": "momentum", "dampening": "dampening",
            "weight_decay": "weight_decay", "nesterov": "nesterov",
        }),
        torch_state_keys=("momentum_buffer",),
        mask_argument="mask",
    ),
    Algorithm(
        name="deepspeed_lamb",
        factory=lamb.deepspeed_lamb,
        static_args=("eps_inside_sqrt", "bias_correction"),
        injectable=("learning_rate", "b1", "b2", "eps", "weight_decay", "max_coeff", "min_coeff"),
        torch_arguments=MappingProxyType({
            "learning_rate": "lr", "b1": "betas[0]", "b2": "betas[1]", "eps": "eps",
            "eps_inside_sqrt": "eps_inside_sqrt", "weight_decay": "weight_decay",
            "max_grad_norm": "max_grad_norm", "max_coeff": "max_coeff", "min_coeff": "min_coeff",
            "bias_correction": "bias_correction",
        }),
        torch_state_keys=("exp_avg", "exp_avg_sq"),
        mask_argument="mask",
    ),
    Algorithm(
        name="nvidia_lamb",
        factory=lamb.nvidia_lamb,
        static_args=("grad_averaging", "bias_correction", "trust_clip", "always_adapt", "caution",
                     "decoupled_decay"),
        injectable=("learning_rate", "b1", "b2", "eps", "weight_decay", "max_grad_norm"),
        # timm.optim.lamb.Lamb, loaded without importing timm (which needs torchvision).
        torch_arguments=MappingProxyType({
            "learning_rate": "lr", "b1": "betas[0]", "b2": "betas[1]", "eps": "eps",
            "weight_decay": "weight_decay", "grad_averaging": "grad_averaging",
            "max_grad_norm": "max_grad_norm", "bias_correction": "bias_correction",
            "trust_clip": "trust_clip", "always_adapt": "always_adapt", "caution": "caution",
            "decoupled_decay": "decoupled_decay",
        }),
        torch_state_keys=("exp_avg", "exp_avg_sq"),
        mask_argument="mask",
    ),
    Algorithm(
        name="adagrad",
        factory=optimizers.adagrad,
        # initial_accumulator_value is read by init only: changing it mid-run changes nothing.
        injectable=("learning_rate", "lr_decay", "weight_decay", "eps"),
        torch_arguments=MappingProxyType({
            "learning_rate": "lr", "lr_decay": "lr_decay", "weight_decay": "weight_decay",
            "initial_accumulator_value": "initial_accumulator_value", "eps": "eps",
        }),
        torch_state_keys=("sum",),
        # torch's L2 term applies to every parameter of a group: the mask is the set of
        # parameters in groups with weight_decay, the others a group with weight_decay=0.
        mask_argument="mask",
    ),
    Algorithm(
        name="rmsprop",
        factory=optimizers.rmsprop,
        static_args=("centered",),
        injectable=("learning_rate", "alpha", "eps", "weight_decay", "momentum"),
        torch_arguments=MappingProxyType({
            "learning_rate": "lr", "alpha": "alpha", "eps": "eps", "weight_decay": "weight_decay",
            "momentum": "momentum", "centered": "centered",
        }),
        torch_state_keys=("square_avg", "momentum_buffer", "grad_avg"),
        mask_argument="mask",
    ),
)

#: The building blocks and wrappers of the package (no PyTorch twin of their own: the
#: optimizers above are their parity tests).
TRANSFORMS: tuple[Algorithm, ...] = (
    Algorithm(
        name="clip_grad_norm",
        factory=transforms.clip_grad_norm,
        static_args=("per_tensor",),
        injectable=("max_norm",),
    ),
    Algorithm(
        name="scale_by_bias_free_adam",
        factory=transforms.scale_by_bias_free_adam,
        static_args=("moment_dtype",),
        injectable=("b1", "b2", "e"),
    ),
    Algorithm(
        name="scale_by_adam",
        factory=transforms.scale_by_adam,
        static_args=("flavour", "bias_correction", "amsgrad"),
        injectable=("b1", "b2", "eps"),
    ),
    Algorithm(
        name="add_decayed_weights",
        factory=transforms.add_decayed_weights,
        injectable=("weight_decay",),
        mask_argument="mask",
    ),
    Algorithm(
        name="scale_by_scheduled_learning_rate",
        factory=transforms.scale_by_scheduled_learning_rate,
        injectable=("learning_rate",),
    ),
    Algorithm(
        name="scale_by_factored_rms",
        factory=transforms.scale_by_factored_rms,
        injectable=("decay_rate", "eps1", "clip_threshold"),
    ),
    Algorithm(
        name="scale_by_adafactor_step_size",
        factory=transforms.scale_by_adafactor_step_size,
        static_args=("warmup_init", "scale_parameter"),
        injectable=("learning_rate", "eps2"),
    ),
    Algorithm(
        name="ema_of_updates",
        factory=transforms.ema_of_updates,
        injectable=("beta1",),
    ),
    Algorithm(
        name="add_decayed_weights_at_adafactor_step_size",
        factory=transforms.add_decayed_weights_at_adafactor_step_size,
        static_args=("warmup_init", "scale_parameter"),
        injectable=("weight_decay", "learning_rate", "eps2"),
        mask_argument="mask",
    ),
    Algorithm(
        name="compute_in_float32",
        factory=lambda learning_rate=0.02: transforms.compute_in_float32(
            optimizers.bertadam(learning_rate)
        ),
        injectable=("learning_rate",),
    ),
    Algorithm(
        name="gradient_accumulation",
        factory=lambda learning_rate=0.02, every_k_steps=2: optimizers.gradient_accumulation(
            optimizers.bertadam(learning_rate), every_k_steps
        ),
        static_args=("every_k_steps",),
        injectable=("learning_rate",),
    ),
    Algorithm(
        name="skip_nonfinite",
        factory=lambda learning_rate=0.02: mixed_precision.skip_nonfinite(
            optimizers.bertadam(learning_rate)
        ),
        injectable=("learning_rate",),
    ),
    Algorithm(
        name="dynamic_loss_scale",
        factory=lambda learning_rate=0.02, growth_interval=3: mixed_precision.dynamic_loss_scale(
            optimizers.bertadam(learning_rate), growth_interval=growth_interval
        ),
        static_args=("growth_interval",),
        injectable=("learning_rate",),
    ),
    Algorithm(
        name="deepspeed_loss_scale",
        factory=lambda learning_rate=0.02, scale_window=3: mixed_precision.deepspeed_loss_scale(
            optimizers.bertadam(learning_rate), scale_window=scale_window
        ),
        static_args=("scale_window",),
        injectable=("learning_rate",),
    ),
    Algorithm(
        name="reduce_lr_on_plateau",
        factory=loss_driven.reduce_lr_on_plateau,
        static_args=("mode", "threshold_mode", "patience", "cooldown"),
        needs_value=True,
    ),
    Algorithm(
        name="greedy_lr",
        factory=loss_driven.greedy_lr,
        static_args=("mode", "threshold_mode", "patience", "cooldown", "warmup", "smooth",
                     "window_size", "reset_start", "verbose"),
        needs_value=True,
    ),
)


def algorithm(name: str) -> Algorithm:
    """The entry of :data:`ALGORITHMS` or :data:`TRANSFORMS` called ``name``."""
    for entry in ALGORITHMS + TRANSFORMS:
        if entry.name == name:
            return entry
    known = ", ".join(entry.name for entry in ALGORITHMS + TRANSFORMS)
    raise ValueError(f"name={name!r} is invalid: expected one of {known}")
