"""The test side of the algorithm registry: what the tests build each entry with and compare it to.

The library's :data:`optax_bertadam.algorithms.ALGORITHMS` says what an optimizer *is* (factory,
static and injectable arguments, PyTorch argument names, state keys); this module adds what only
the tests need: an example (hyperparameters that are not the defaults) and the PyTorch twin (a
dotted path: torch_ref's twins, the real torch/transformers class, or timm's Lamb through its
loader). :data:`ALGORITHMS` and :data:`TRANSFORMS` here are the library's entries with these
added; every cross-cutting test runs over them, and ``test_every_entry_has_a_twin`` fails when a
library entry has none here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import optax

from optax_bertadam import algorithms


@dataclasses.dataclass(frozen=True)
class Twin:
    """What the tests build an entry with and compare it to.

    Attributes:
      example: hyperparameters (not all defaults) that the cross-cutting tests build it with.
      torch_class: dotted path of the PyTorch twin (``None``: no twin, e.g. a pure transform).
      torch_named_parameters: the twin takes ``model.named_parameters()`` (its decay rule reads
        names) rather than parameters or parameter groups.
    """

    example: Mapping[str, Any]
    torch_class: str | None = None
    torch_named_parameters: bool = False


TWINS: Mapping[str, Twin] = MappingProxyType(
    {
        "bertadam": Twin(
            example=MappingProxyType(
                dict(
                    learning_rate=0.02,
                    warmup=0.2,
                    t_total=10,
                    schedule="warmup_linear",
                    b1=0.85,
                    b2=0.99,
                    e=1e-06,
                    weight_decay=0.01,
                    max_grad_norm=0.5,
                )
            ),
            torch_class="torch_ref.BertAdam",
        ),
        "adamw": Twin(
            example=MappingProxyType(
                dict(learning_rate=0.01, b1=0.85, b2=0.99, eps=1e-06, weight_decay=0.05, correct_bias=True)
            ),
            torch_class="torch_ref.AdamW",
        ),
        "adafactor": Twin(
            example=MappingProxyType(
                dict(
                    learning_rate=0.01,
                    relative_step=False,
                    scale_parameter=True,
                    beta1=0.9,
                    weight_decay=0.01,
                    clip_threshold=1.0,
                    decay_rate=-0.8,
                )
            ),
            torch_class="transformers.Adafactor",
        ),
        "adam_weight_decay": Twin(
            example=MappingProxyType(
                dict(
                    learning_rate=0.01,
                    beta_1=0.85,
                    beta_2=0.99,
                    epsilon=1e-07,
                    weight_decay_rate=0.05,
                    exclude_from_weight_decay=["LayerNorm", "bias"],
                )
            ),
            torch_class="torch_ref.AdamWeightDecay",
            torch_named_parameters=True,
        ),
        "adam": Twin(
            example=MappingProxyType(
                dict(learning_rate=0.01, b1=0.85, b2=0.99, eps=0.0001, weight_decay=0.05, amsgrad=True)
            ),
            torch_class="torch.optim.Adam",
        ),
        # L2 mode without bias correction: the combination neither adam nor adamw has (the
        # family tests, parity_tests/test_deepspeed_compiled.py, cover the other three).
        "fused_adam": Twin(
            example=MappingProxyType(
                dict(learning_rate=0.01, b1=0.85, b2=0.99, eps=1e-06, weight_decay=0.05,
                     bias_correction=False, adam_w_mode=False)
            ),
            torch_class="torch_ref.FusedAdam",
        ),
        "sgd": Twin(
            example=MappingProxyType(
                dict(learning_rate=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)
            ),
            torch_class="torch.optim.SGD",
        ),
        # bing_bert's clamp (max_coeff 0.3) binds on the tiny harness tensors; max_grad_norm needs
        # FusedLamb's grad_norms, which a plain step() does not pass (parity_tests/test_lamb.py).
        "deepspeed_lamb": Twin(
            example=MappingProxyType(
                dict(
                    learning_rate=0.02,
                    b1=0.85,
                    b2=0.99,
                    eps=1e-06,
                    weight_decay=0.05,
                    max_coeff=0.3,
                    min_coeff=0.05,
                )
            ),
            torch_class="torch_ref.FusedLamb",
        ),
        # The global pre-normalisation binds on the parity harness's gradients (norms of up to ~60),
        # not on the contract test's (< 2.1): there, two copies over a partition must equal the
        # whole, which holds for per-tensor updates only. timm.optim.lamb.Lamb is loaded without
        # importing timm (which needs torchvision).
        "nvidia_lamb": Twin(
            example=MappingProxyType(
                dict(
                    learning_rate=0.02,
                    b1=0.85,
                    b2=0.99,
                    eps=1e-05,
                    weight_decay=0.05,
                    max_grad_norm=3.0,
                    trust_clip=True,
                )
            ),
            torch_class="parity_tests.timm_lamb.Lamb",
        ),
        "adagrad": Twin(
            example=MappingProxyType(
                dict(
                    learning_rate=0.05,
                    lr_decay=0.01,
                    weight_decay=0.01,
                    initial_accumulator_value=0.1,
                    eps=1e-08,
                )
            ),
            torch_class="torch.optim.Adagrad",
        ),
        "rmsprop": Twin(
            example=MappingProxyType(
                dict(learning_rate=0.01, alpha=0.9, eps=1e-06, weight_decay=0.01, momentum=0.8, centered=True)
            ),
            torch_class="torch.optim.RMSprop",
        ),
        "clip_grad_norm": Twin(example=MappingProxyType(dict(max_norm=0.5, per_tensor=True))),
        "scale_by_bias_free_adam": Twin(example=MappingProxyType(dict(b1=0.85, b2=0.99, e=1e-06))),
        "scale_by_adam": Twin(example=MappingProxyType(dict(b1=0.85, b2=0.99, eps=1e-06, flavour="torch"))),
        "add_decayed_weights": Twin(example=MappingProxyType(dict(weight_decay=0.05))),
        "scale_by_scheduled_learning_rate": Twin(example=MappingProxyType(dict(learning_rate=0.02))),
        # eps1 large enough for a change of it to show in the contract tests' updates.
        "scale_by_factored_rms": Twin(
            example=MappingProxyType(dict(decay_rate=-0.6, eps1=1e-3, clip_threshold=0.8))
        ),
        "scale_by_adafactor_step_size": Twin(
            example=MappingProxyType(dict(learning_rate=0.02, scale_parameter=True, eps2=1e-3))
        ),
        "ema_of_updates": Twin(example=MappingProxyType(dict(beta1=0.85))),
        "add_decayed_weights_at_adafactor_step_size": Twin(
            example=MappingProxyType(
                dict(weight_decay=0.05, learning_rate=0.02, scale_parameter=True, eps2=1e-3)
            )
        ),
        "compute_in_float32": Twin(example=MappingProxyType(dict(learning_rate=0.02))),
        "gradient_accumulation": Twin(example=MappingProxyType(dict(learning_rate=0.02, every_k_steps=2))),
        "skip_nonfinite": Twin(example=MappingProxyType(dict(learning_rate=0.02))),
        "dynamic_loss_scale": Twin(example=MappingProxyType(dict(learning_rate=0.02, growth_interval=3))),
        "deepspeed_loss_scale": Twin(example=MappingProxyType(dict(learning_rate=0.02, scale_window=3))),
    "reduce_lr_on_plateau": Twin(
            example=MappingProxyType(dict(learning_rate=0.02, patience=1, factor=0.5))
        ),
        "greedy_lr": Twin(
            example=MappingProxyType(
                dict(learning_rate=0.02, patience=1, factor=0.5, min_lr=0.001, smooth=True, window_size=3)
            )
        ),
    }
)


@dataclasses.dataclass(frozen=True)
class TestedAlgorithm:
    """A library :class:`~optax_bertadam.algorithms.Algorithm` with its :class:`Twin`."""

    entry: algorithms.Algorithm
    twin: Twin

    def __getattr__(self, name: str) -> Any:
        if name in ("example", "torch_class", "torch_named_parameters"):
            return getattr(self.twin, name)
        return getattr(self.entry, name)

    def build(self, **overrides: Any) -> optax.GradientTransformation:
        """``factory(**example, **overrides)``."""
        return self.entry.factory(**{**self.twin.example, **overrides})

    def inject(self, **overrides: Any) -> optax.GradientTransformation:
        """The same through ``optax.inject_hyperparams`` with the entry's ``static_args``."""
        return optax.inject_hyperparams(self.entry.factory, static_args=self.entry.static_args)(
            **{**self.twin.example, **overrides}
        )


def _tested(entries: tuple[algorithms.Algorithm, ...]) -> tuple[TestedAlgorithm, ...]:
    missing = [entry.name for entry in entries if entry.name not in TWINS]
    if missing:  # a registry entry the tests cannot build: add its Twin above
        raise KeyError(f"no Twin in parity_tests/twins.py for {missing}")
    return tuple(TestedAlgorithm(entry, TWINS[entry.name]) for entry in entries)


ALGORITHMS = _tested(algorithms.ALGORITHMS)
TRANSFORMS = _tested(algorithms.TRANSFORMS)


def algorithm(name: str) -> TestedAlgorithm:
    """The tested entry called ``name``."""
    for entry in ALGORITHMS + TRANSFORMS:
        if entry.name == name:
            return entry
    raise ValueError(f"name={name!r} is invalid: expected one of {[e.name for e in ALGORITHMS + TRANSFORMS]}")
