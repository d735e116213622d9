"""The PyTorch side of a schedule record: its counterpart built and driven the usual way.

:func:`torch_rates` turns any :class:`optax_bertadam.schedules.registry.ScheduleRecord` with a
``torch_counterpart`` into the rate each update ran at under that counterpart, in Python
doubles, for :func:`parity_tests.harness.check_schedule`. The counterpart kinds:

* a scheduler class or function taking ``optimizer=`` (``torch.optim.lr_scheduler.*``,
  ``transformers.get_*``, ``torch_ref.schedules.CosineWarmupScheduler``,
  ``transformers.optimization.GreedyLR``), over ``torch.optim.SGD`` with momentum (the
  cyclical schedulers move it) whose ``lr`` is the record's ``learning_rate_argument``: read
  ``param_groups[0]['lr']``, ``optimizer.step()``, ``scheduler.step()`` (``step(loss)`` for a
  loss-driven one);
* ``torch_ref.schedules.*_lambda``: a multiplier factory, driven through ``LambdaLR``;
* ``torch_ref.NoamOpt``, whose ``step()`` sets the rate before it steps the optimizer;
* ``torch_ref.schedule_multiplier``: BertAdam's multiplier of the step, times ``lr``.

Members of composite schedules (:class:`~optax_bertadam.schedules.registry.Part`) are built with
their own record's counterpart on the same optimizer.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

import torch_ref
from optax_bertadam.schedules.bert import SCHEDULE_NAMES
from optax_bertadam.schedules.registry import (
    EXAMPLE_LEARNING_RATE,
    EXAMPLE_T_TOTAL,
    EXAMPLE_WARMUP_STEPS,
    Part,
    ScheduleRecord,
    schedule_record,
)

# Improvements, plateaus, small improvements and a NaN: several rate changes for the examples'
# patience of 1-2, in both directions for GreedyLR.
LOSS_VALUES = (
    [1.0, 0.9, 0.8, 0.7, 0.6, 0.5] + [0.5] * 8 + [0.49999, 0.4, 0.3, 0.2, 0.1]
    + [0.15] * 6 + [float("nan"), 0.05, 0.04, 0.03] + [0.06] * 10
)


# The counterparts that are twins of the tests (torch_ref), by record name; the other records
# name the real class they reproduce (ScheduleRecord.torch_counterpart).
TORCH_REF_COUNTERPARTS = MappingProxyType({
    **{f"bert/{name}": "torch_ref.schedule_multiplier" for name in SCHEDULE_NAMES},
    **{f"classic/{name}": f"torch_ref.schedules.{name}_lambda" for name in (
        "linear_decay", "polynomial_decay", "inverse_sqrt", "constant_with_linear_cooldown")},
    "classic/cosine_warmup": "torch_ref.schedules.CosineWarmupScheduler",
    "classic/noam": "torch_ref.NoamOpt",
    "pytorch/replay": "torch_ref.schedules.live_schedulers",
})


def counterpart_path(record: ScheduleRecord) -> str | None:
    """The dotted path of ``record``'s counterpart: a torch_ref twin, or the real class."""
    return TORCH_REF_COUNTERPARTS.get(record.name, record.torch_counterpart)


def counterpart(record: ScheduleRecord) -> Any:
    """The object :func:`counterpart_path` names, imported."""
    module, _, attribute = counterpart_path(record).rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def torch_rates(
    record: ScheduleRecord,
    num_updates: int,
    learning_rate: float = EXAMPLE_LEARNING_RATE,
    t_total: int = EXAMPLE_T_TOTAL,
    warmup_steps: int = EXAMPLE_WARMUP_STEPS,
    values: Sequence[float] | None = None,
) -> np.ndarray:
    """The rate of updates ``0 .. num_updates-1`` of ``record``'s example under its counterpart.

    For a loss-driven record, ``values`` are passed to ``scheduler.step`` one per update and
    ``num_updates`` is ``len(values) + 1`` (the last rate is the one after the last value).
    ``OneCycleLR`` refuses to step past ``total_steps``: fewer rates come back then.

    Returns:
      The rates as float64.
    """
    kwargs = dict(record.arguments(learning_rate, t_total, warmup_steps))
    twin = counterpart(record)
    if twin is torch_ref.schedule_multiplier:
        options = record.torch_kwargs(kwargs)
        return np.array([kwargs["learning_rate"] * twin(step=k, **options)
                         for k in range(num_updates)])
    parameter = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=_optimizer_lr(record, kwargs), momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the "scheduler.step() before optimizer.step()" one
        scheduler = _scheduler(record, kwargs, optimizer)
        if isinstance(scheduler, torch_ref.NoamOpt):
            rates = []
            for _ in range(num_updates):
                scheduler.step()  # sets the rate of this update, then runs it
                rates.append(optimizer.param_groups[0]["lr"])
            return np.asarray(rates, dtype=np.float64)
        if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
            num_updates = min(num_updates, scheduler.total_steps + 1)
        rates = []
        for update in range(num_updates):
            rates.append(float(optimizer.param_groups[0]["lr"]))
            if update == num_updates - 1:
                break
            optimizer.step()
            scheduler.step(values[update]) if record.loss_driven else scheduler.step()
    return np.asarray(rates, dtype=np.float64)


def _optimizer_lr(record: ScheduleRecord, kwargs: dict[str, Any]) -> float:
    """The optimizer's ``lr``: the record's ``learning_rate_argument``, or its first member's."""
    if record.learning_rate_argument in kwargs:
        return kwargs[record.learning_rate_argument]
    for value in kwargs.values():
        if isinstance(value, tuple) and value and isinstance(value[0], Part):
            return _optimizer_lr(schedule_record(value[0].name), dict(value[0].arguments))
    return 0.0  # NoamOpt sets the rate itself


def _scheduler(record: ScheduleRecord, kwargs: dict[str, Any], optimizer: torch.optim.Optimizer):
    """``record``'s counterpart built over ``optimizer``, members included."""
    options = record.torch_kwargs(kwargs)
    for name, value in options.items():
        if isinstance(value, tuple) and value and isinstance(value[0], Part):
            options[name] = [
                _scheduler(schedule_record(part.name), dict(part.arguments), optimizer)
                for part in value
            ]
    twin = counterpart(record)
    if counterpart_path(record).endswith("_lambda"):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, twin(**options))
    return twin(optimizer=optimizer, **options)
