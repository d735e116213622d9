"""The registry of schedules: every schedule of the package, declared once.

Each :class:`ScheduleRecord` names its factory, how to build a representative example of it
over ``t_total`` updates with ``warmup_steps`` of warmup and a peak of about ``learning_rate``,
its PyTorch/transformers counterpart (a dotted path, imported only by the parity tests, never
here), and how the example's arguments translate to the counterpart's.

Every cross-cutting schedule test runs over :data:`SCHEDULES`: parity with the counterpart
(``parity_tests/test_schedule_registry_parity.py``, through the one comparator of the harness),
every schedule as the ``learning_rate`` of every optimizer (``tests/``), the demo's plot. A new
schedule is one function in its module and one record here; a public schedule factory without a
record fails ``tests/test_schedule_registry.py``. The registry is an immutable tuple, built once;
nothing appends to it.

Names are ``family/name``, the family being the module and the name the one its users know:
``bert/<schedule>`` (:data:`~optax_bertadam.schedules.bert.SCHEDULE_NAMES`),
``transformers/<get_scheduler name>``, ``pytorch/<torch.optim.lr_scheduler class>``,
``classic/<function>``, ``deepspeed/<DeepSpeed class>``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from optax_bertadam.schedules import bert, classic, loss_driven, pytorch
from optax_bertadam.schedules import deepspeed as ds
from optax_bertadam.schedules import transformers as hf

#: The example every record builds by default: peak rate, total updates and warmup updates.
EXAMPLE_LEARNING_RATE = 0.01
EXAMPLE_T_TOTAL = 30
EXAMPLE_WARMUP_STEPS = 6


@dataclasses.dataclass(frozen=True)
class Part:
    """A member schedule inside a composite example (``SequentialLR``, ``ChainedScheduler``).

    It names the record of the member and its keyword arguments, so that the member can be built
    here and its own counterpart built on the PyTorch side.

    Attributes:
      name: the member's record name, e.g. ``"pytorch/LinearLR"``.
      arguments: the member factory's keyword arguments.
    """

    name: str
    arguments: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ScheduleRecord:
    """One schedule of the package.

    Attributes:
      name: ``family/name``, e.g. ``"transformers/linear"`` or ``"pytorch/StepLR"``.
      factory: the function returning the schedule (``count -> learning rate``), a
        :class:`~optax_bertadam.schedules.pytorch.CycleSchedules`, or, for a loss-driven record,
        an ``optax.GradientTransformationExtraArgs`` whose ``update`` takes ``value=``.
      arguments: ``(learning_rate, t_total, warmup_steps) -> keyword arguments`` of ``factory``
        for a representative schedule: warmup over ``warmup_steps`` updates where it has one, the
        decay over ``t_total``, a peak of about ``learning_rate``. Valid for
        ``0 <= warmup_steps < t_total``. Members of composite schedules are :class:`Part`.
      torch_counterpart: dotted path of the PyTorch/transformers/DeepSpeed class it reproduces,
        or ``None`` where the counterpart is a twin of the tests (``parity_tests/schedule_twins.py``:
        the BertAdam and tutorial schedules, Noam, the replay's live schedulers), or
        ``None``.
      torch_arguments: factory argument -> counterpart argument where the name differs; ``None``
        drops the argument. ``learning_rate_argument`` is the optimizer's ``lr`` and is dropped
        unless listed here.
      learning_rate_argument: the argument that is the PyTorch optimizer's ``lr`` (``None``:
        the counterpart sets the rate itself).
      loss_driven: the rate follows a loss passed as ``value=``, not the update count.
      aliases: other ``family/name`` names this schedule has in a dispatch table (e.g.
        ``transformers/reduce_lr_on_plateau`` for ``pytorch/ReduceLROnPlateau``).

    Example:
      >>> from optax_bertadam.schedules.registry import schedule_record
      >>> record = schedule_record("transformers/linear")
      >>> record.factory.__name__, record.torch_counterpart
      ('get_linear_schedule_with_warmup', 'transformers.get_linear_schedule_with_warmup')
      >>> rate = record.schedule(learning_rate=1.0, t_total=6, warmup_steps=2)
      >>> [round(float(rate(k)), 6) for k in range(7)]
      [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]
    """

    name: str
    factory: Callable[..., Any]
    arguments: Callable[[float, int, int], Mapping[str, Any]]
    torch_counterpart: str | None = None
    torch_arguments: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    learning_rate_argument: str | None = "learning_rate"
    loss_driven: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        """The part of :attr:`name` before the slash: ``bert``, ``transformers``, ..."""
        return self.name.split("/", 1)[0]

    @property
    def example(self) -> Mapping[str, Any]:
        """The keyword arguments of the default example (members still as :class:`Part`)."""
        return MappingProxyType(dict(
            self.arguments(EXAMPLE_LEARNING_RATE, EXAMPLE_T_TOTAL, EXAMPLE_WARMUP_STEPS)
        ))

    def build(
        self,
        learning_rate: float = EXAMPLE_LEARNING_RATE,
        t_total: int = EXAMPLE_T_TOTAL,
        warmup_steps: int = EXAMPLE_WARMUP_STEPS,
    ) -> Any:
        """``factory(**arguments(learning_rate, t_total, warmup_steps))``, members built.

        Returns:
          What ``factory`` returns: a schedule, a ``CycleSchedules`` or a loss-driven transform.
        """
        kwargs = self.arguments(learning_rate, t_total, warmup_steps)
        return self.factory(**{name: _build_parts(value) for name, value in kwargs.items()})

    def schedule(
        self,
        learning_rate: float = EXAMPLE_LEARNING_RATE,
        t_total: int = EXAMPLE_T_TOTAL,
        warmup_steps: int = EXAMPLE_WARMUP_STEPS,
    ) -> Callable[[Any], Any]:
        """The example as a function ``count -> learning rate`` (a cycle's rate schedule).

        Returns:
          A pure, jittable function of the update count.

        Raises:
          TypeError: for a loss-driven record, whose rate is no function of the count.
        """
        if self.loss_driven:
            raise TypeError(
                f"{self.name} is loss-driven: its rate follows the values passed to update(..., "
                "value=loss), not the update count; build() it and chain it after an optimizer"
            )
        built = self.build(learning_rate, t_total, warmup_steps)
        return built.learning_rate if isinstance(built, pytorch.CycleSchedules) else built

    def torch_kwargs(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Translate factory keyword arguments to the counterpart's (see :attr:`torch_arguments`).

        Returns:
          The counterpart's keyword arguments; :class:`Part` members are left as they are.
        """
        out = {}
        for name, value in kwargs.items():
            if name == self.learning_rate_argument and name not in self.torch_arguments:
                continue
            target = self.torch_arguments.get(name, name)
            if target is not None:
                out[target] = value
        return out


def _build_parts(value: Any) -> Any:
    if isinstance(value, Part):
        return schedule_record(value.name).factory(**value.arguments)
    if isinstance(value, tuple) and any(isinstance(item, Part) for item in value):
        return tuple(_build_parts(item) for item in value)
    return value


# ---------------------------------------------------------------------------------- bert


def _bert_schedule_kwargs(name: str, t_total: int) -> dict[str, float] | None:
    # The two *_decay_exp schedules need a decay; halving every quarter of training reaches
    # about a tenth of the peak at t_total.
    if name in ("warmup_linear_decay_exp", "warmup_exp_decay_exp"):
        return {"decay_rate": 0.5, "decay_steps": t_total / 4}
    return None


def _bert_record(name: str) -> ScheduleRecord:
    return ScheduleRecord(
        name=f"bert/{name}",
        factory=bert.bert_schedule,
        arguments=lambda lr, t, w: dict(
            schedule=name, learning_rate=lr, t_total=t, warmup=w / t,
            schedule_kwargs=_bert_schedule_kwargs(name, t),
        ),
    )


# -------------------------------------------------------------------------- transformers


def _warmup_and_total(**extra: Any) -> Callable[[float, int, int], dict[str, Any]]:
    return lambda lr, t, w: dict(
        learning_rate=lr, num_warmup_steps=w, num_training_steps=t, **extra
    )


def _transformers_record(name: str, factory: Callable[..., Any], arguments, **fields: Any):
    return ScheduleRecord(
        name=f"transformers/{name}",
        factory=factory,
        arguments=arguments,
        torch_counterpart=f"transformers.{factory.__name__}",
        **fields,
    )


_TRANSFORMERS = (
    _transformers_record("linear", hf.get_linear_schedule_with_warmup, _warmup_and_total()),
    _transformers_record("cosine", hf.get_cosine_schedule_with_warmup, _warmup_and_total()),
    _transformers_record(
        "cosine_with_restarts",
        hf.get_cosine_with_hard_restarts_schedule_with_warmup,
        _warmup_and_total(num_cycles=2),
    ),
    _transformers_record(
        "polynomial",
        hf.get_polynomial_decay_schedule_with_warmup,
        lambda lr, t, w: dict(
            learning_rate=lr, num_warmup_steps=w, num_training_steps=t, lr_end=lr / 100, power=2.0
        ),
    ),
    _transformers_record(
        "constant", hf.get_constant_schedule, lambda lr, t, w: dict(learning_rate=lr)
    ),
    _transformers_record(
        "constant_with_warmup",
        hf.get_constant_schedule_with_warmup,
        lambda lr, t, w: dict(learning_rate=lr, num_warmup_steps=w),
    ),
    _transformers_record(
        "inverse_sqrt",
        hf.get_inverse_sqrt_schedule,
        lambda lr, t, w: dict(learning_rate=lr, num_warmup_steps=w, timescale=max(1, t // 6)),
    ),
    _transformers_record(
        "cosine_with_min_lr",
        hf.get_cosine_with_min_lr_schedule_with_warmup,
        _warmup_and_total(min_lr_rate=0.1),
    ),
    _transformers_record(
        "cosine_warmup_with_min_lr",
        hf.get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
        _warmup_and_total(min_lr_rate=0.1),
    ),
    _transformers_record(
        "warmup_stable_decay",
        hf.get_wsd_schedule,
        lambda lr, t, w: dict(
            learning_rate=lr, num_warmup_steps=w, num_decay_steps=(t - w) // 2,
            num_training_steps=t, min_lr_ratio=0.1,
        ),
    ),
    ScheduleRecord(
        name="transformers/greedy",
        factory=loss_driven.greedy_lr,
        arguments=lambda lr, t, w: dict(
            learning_rate=lr, patience=1, factor=0.8, cooldown=1, min_lr=lr / 10, max_lr=2 * lr
        ),
        torch_counterpart="transformers.optimization.GreedyLR",
        loss_driven=True,
    ),
)


# ------------------------------------------------------------------------------- classic


def _lambda_lr_twin(name: str) -> Mapping[str, Any]:
    # The tutorial's table: a multiplier of the same arguments, for LambdaLR (its twin is test-side).
    del name
    return dict(learning_rate_argument="base_lr")


_CLASSIC = (
    ScheduleRecord(
        name="classic/cosine_warmup",
        factory=classic.cosine_warmup,
        arguments=lambda lr, t, w: dict(base_lr=lr, warmup_steps=w, max_steps=t, min_lr_ratio=0.1),
        torch_arguments=MappingProxyType({"base_lr": "base_lr"}),
        learning_rate_argument="base_lr",
    ),
    ScheduleRecord(
        name="classic/linear_decay",
        factory=classic.linear_decay,
        arguments=lambda lr, t, w: dict(base_lr=lr, max_steps=t),
        **_lambda_lr_twin("linear_decay"),
    ),
    ScheduleRecord(
        name="classic/polynomial_decay",
        factory=classic.polynomial_decay,
        arguments=lambda lr, t, w: dict(base_lr=lr, max_steps=t, power=2.0),
        **_lambda_lr_twin("polynomial_decay"),
    ),
    ScheduleRecord(
        name="classic/inverse_sqrt",
        factory=classic.inverse_sqrt,
        arguments=lambda lr, t, w: dict(base_lr=lr, warmup_steps=max(1, w)),
        **_lambda_lr_twin("inverse_sqrt"),
    ),
    ScheduleRecord(
        name="classic/constant_with_linear_cooldown",
        factory=classic.constant_with_linear_cooldown,
        arguments=lambda lr, t, w: dict(base_lr=lr, max_steps=t, cooldown_steps=t // 3),
        **_lambda_lr_twin("constant_with_linear_cooldown"),
    ),
    ScheduleRecord(
        name="classic/noam",
        factory=classic.noam,
        # factor chosen so that the peak, factor / sqrt(model_size * warmup), is learning_rate.
        arguments=lambda lr, t, w: dict(
            model_size=64, warmup=max(1, w), factor=lr * math.sqrt(64 * max(1, w))
        ),
        learning_rate_argument=None,
    ),
)


# ------------------------------------------------------------------------------- pytorch

_TORCH = "torch.optim.lr_scheduler."


def _inverse_time(t_total: int) -> Callable[[Any], Any]:
    # One function for both sides: Python ints on PyTorch's, jnp integer arrays here.
    return lambda k: 1.0 / (1.0 + 4.0 * k / t_total)


def _constant_factor(k: Any) -> float:
    return 0.95


def _torch_record(scheduler: str, factory: Callable[..., Any], arguments, **fields: Any):
    return ScheduleRecord(
        name=f"pytorch/{scheduler}",
        factory=factory,
        arguments=arguments,
        torch_counterpart=_TORCH + scheduler,
        **fields,
    )


_PYTORCH = (
    _torch_record(
        "LambdaLR",
        classic.lambda_lr,
        lambda lr, t, w: dict(learning_rate=lr, lr_lambda=_inverse_time(t)),
    ),
    _torch_record(
        "MultiplicativeLR",
        pytorch.multiplicative_lr,
        lambda lr, t, w: dict(learning_rate=lr, lr_lambda=_constant_factor, num_steps=t),
        torch_arguments=MappingProxyType({"num_steps": None}),
    ),
    _torch_record(
        "StepLR",
        pytorch.step_lr,
        lambda lr, t, w: dict(learning_rate=lr, step_size=max(1, t // 4), gamma=0.5),
    ),
    _torch_record(
        "MultiStepLR",
        pytorch.multi_step_lr,
        lambda lr, t, w: dict(learning_rate=lr, milestones=(t // 3, 2 * t // 3), gamma=0.3),
    ),
    _torch_record(
        "ConstantLR",
        pytorch.constant_lr,
        lambda lr, t, w: dict(learning_rate=lr, factor=0.5, total_iters=max(1, w)),
    ),
    _torch_record(
        "LinearLR",
        pytorch.linear_lr,
        lambda lr, t, w: dict(learning_rate=lr, start_factor=0.1, end_factor=1.0,
                              total_iters=max(1, w)),
    ),
    _torch_record(
        "ExponentialLR",
        pytorch.exponential_lr,
        # A tenth of the peak at t_total.
        lambda lr, t, w: dict(learning_rate=lr, gamma=0.1 ** (1 / t)),
    ),
    _torch_record(
        "SequentialLR",
        classic.sequential_lr,
        lambda lr, t, w: dict(
            schedules=(
                Part("pytorch/LinearLR", dict(learning_rate=lr, start_factor=0.1,
                                              total_iters=max(1, w))),
                Part("pytorch/CosineAnnealingLR", dict(learning_rate=lr, T_max=t - w,
                                                       eta_min=lr / 10)),
            ),
            milestones=(w,),
        ),
        torch_arguments=MappingProxyType({"schedules": "schedulers"}),
    ),
    _torch_record(
        "PolynomialLR",
        pytorch.polynomial_lr,
        lambda lr, t, w: dict(learning_rate=lr, total_iters=t, power=2.0),
    ),
    _torch_record(
        "CosineAnnealingLR",
        pytorch.cosine_annealing_lr,
        lambda lr, t, w: dict(learning_rate=lr, T_max=t, eta_min=lr / 10),
    ),
    _torch_record(
        "ChainedScheduler",
        pytorch.chained_scheduler,
        lambda lr, t, w: dict(schedulers=(
            Part("pytorch/ConstantLR", dict(learning_rate=lr, factor=0.5, total_iters=max(1, w))),
            Part("pytorch/ExponentialLR", dict(learning_rate=lr, gamma=0.1 ** (1 / t))),
        )),
    ),
    _torch_record(
        "ReduceLROnPlateau",
        loss_driven.reduce_lr_on_plateau,
        lambda lr, t, w: dict(learning_rate=lr, patience=2, factor=0.5, cooldown=1),
        loss_driven=True,
        aliases=("transformers/reduce_lr_on_plateau",),
    ),
    _torch_record(
        "CyclicLR",
        pytorch.cyclic_lr,
        lambda lr, t, w: dict(base_lr=lr / 10, max_lr=lr, step_size_up=max(1, t // 6),
                              mode="triangular2"),
        torch_arguments=MappingProxyType({"base_lr": "base_lr"}),
        learning_rate_argument="base_lr",
    ),
    _torch_record(
        "CosineAnnealingWarmRestarts",
        pytorch.cosine_annealing_warm_restarts,
        lambda lr, t, w: dict(learning_rate=lr, T_0=max(1, t // 4), T_mult=2, eta_min=lr / 100),
    ),
    ScheduleRecord(
        name="pytorch/SWALR",
        factory=pytorch.swa_lr,
        arguments=lambda lr, t, w: dict(learning_rate=lr, swa_lr=lr / 10, anneal_epochs=max(1, w),
                                        anneal_strategy="cos"),
        torch_counterpart="torch.optim.swa_utils.SWALR",
    ),
    ScheduleRecord(
        # A nested SequentialLR whose first member chains a warmup with the recursive cosine.
        name="pytorch/replay",
        factory=pytorch.replay_torch_schedulers,
        arguments=lambda lr, t, w: dict(
            learning_rate=lr,
            scheduler=pytorch.TorchScheduler("SequentialLR", members=(
                pytorch.TorchScheduler("ChainedScheduler", members=(
                    pytorch.TorchScheduler("LinearLR", dict(start_factor=0.1, total_iters=max(1, w))),
                    pytorch.TorchScheduler("CosineAnnealingLR", dict(T_max=max(1, t - w),
                                                                     eta_min=lr / 10)),
                )),
                pytorch.TorchScheduler("ExponentialLR", dict(gamma=0.9)),
            ), milestones=(t,)),
            num_steps=t + t // 2,
        ),
        torch_arguments=MappingProxyType({"num_steps": None}),
    ),
    _torch_record(
        "OneCycleLR",
        pytorch.one_cycle_lr,
        lambda lr, t, w: dict(max_lr=lr, total_steps=t),
        torch_arguments=MappingProxyType({"max_lr": "max_lr"}),
        learning_rate_argument="max_lr",
    ),
)


# ----------------------------------------------------------------------------- deepspeed

_DEEPSPEED = "deepspeed.runtime.lr_schedules."


def _deepspeed_record(scheduler: str, arguments, **fields: Any) -> ScheduleRecord:
    return ScheduleRecord(
        name=f"deepspeed/{scheduler}",
        factory=ds.DEEPSPEED_SCHEDULERS[scheduler],
        arguments=arguments,
        torch_counterpart=_DEEPSPEED + scheduler,
        **fields,
    )


_DEEPSPEED_RECORDS = (
    # WarmupLR, WarmupDecayLR, OneCycle and LRRangeTest set the rate themselves: the optimizer's
    # lr is no argument of theirs.
    _deepspeed_record(
        "WarmupLR",
        lambda lr, t, w: dict(warmup_min_lr=lr / 10, warmup_max_lr=lr,
                              warmup_num_steps=max(1, w), warmup_type="log"),
        learning_rate_argument=None,
    ),
    _deepspeed_record(
        "WarmupDecayLR",
        lambda lr, t, w: dict(total_num_steps=t, warmup_min_lr=lr / 10, warmup_max_lr=lr,
                              warmup_num_steps=max(1, w), warmup_type="linear"),
        learning_rate_argument=None,
    ),
    _deepspeed_record(
        "WarmupCosineLR",
        lambda lr, t, w: dict(learning_rate=lr, total_num_steps=t, warmup_min_ratio=0.1,
                              warmup_num_steps=max(1, w), cos_min_ratio=0.01, warmup_type="log"),
    ),
    _deepspeed_record(
        "OneCycle",
        lambda lr, t, w: dict(cycle_min_lr=lr / 10, cycle_max_lr=lr,
                              cycle_first_step_size=max(1, t // 3),
                              cycle_second_step_size=max(1, t // 4),
                              decay_lr_rate=0.5, decay_step_size=max(1, t // 6)),
        learning_rate_argument=None,
    ),
    _deepspeed_record(
        "LRRangeTest",
        lambda lr, t, w: dict(lr_range_test_min_lr=lr / 10,
                              lr_range_test_step_size=max(1, t // 5),
                              lr_range_test_step_rate=0.5),
        learning_rate_argument=None,
    ),
)


#: Every schedule of the package, one record each.
SCHEDULES: tuple[ScheduleRecord, ...] = (
    *(_bert_record(name) for name in bert.SCHEDULE_NAMES),
    *_TRANSFORMERS,
    *_CLASSIC,
    *_PYTORCH,
    *_DEEPSPEED_RECORDS,
)


def schedule_record(name: str) -> ScheduleRecord:
    """The record of :data:`SCHEDULES` called ``name`` (or with ``name`` among its aliases).

    Returns:
      The :class:`ScheduleRecord`.

    Raises:
      ValueError: if no record has that name.

    Example:
      >>> schedule_record("transformers/reduce_lr_on_plateau").name
      'pytorch/ReduceLROnPlateau'
    """
    for record in SCHEDULES:
        if name == record.name or name in record.aliases:
            return record
    known = ", ".join(record.name for record in SCHEDULES)
    raise ValueError(f"name={name!r} is invalid: expected one of {known}")
