"""PyTorch twins of the classic schedules that no installed package ships.

* :class:`CosineWarmupScheduler`: the tutorial's cosine-with-linear-warmup scheduler (seed 002),
  stepped after every update.
* :class:`NoamOpt`: the optimizer wrapper of "The Annotated Transformer" (seed 003), with the
  ``state_dict``/``load_state_dict`` pair a Stack Overflow answer added so it can be checkpointed.
* ``*_lambda`` factories: the tutorial's table of other schedules (linear decay, polynomial,
  inverse sqrt, constant then linear cooldown) as multipliers for
  ``torch.optim.lr_scheduler.LambdaLR``. The table states formulas only; these fix what happens
  where a formula breaks down (see each factory), and ``optax_bertadam.schedules.classic`` does
  the same.
* :func:`learning_rates_used`: the rate each update of a PyTorch optimizer ran at.

Used only as the reference of the parity tests; imports nothing from ``optax_bertadam``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


class CosineWarmupScheduler:
    """Linear warmup to ``base_lr``, then cosine decay to ``min_lr_ratio * base_lr``.

    ``step()`` first advances ``current_step``, then sets every parameter group's ``lr`` to
    ``base_lr * current_step / warmup_steps`` while ``current_step < warmup_steps``, else to
    ``min_lr + (base_lr - min_lr) * (1 + cos(pi * progress)) / 2`` with
    ``progress = (current_step - warmup_steps) / (max_steps - warmup_steps)``. It is called after
    each ``optimizer.step()``, so the first update runs at the optimizer's own ``lr``.
    """

    def __init__(self, optimizer, warmup_steps, max_steps, base_lr=1e-4, min_lr_ratio=0.1):
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.max_steps = max_steps
        self.base_lr = base_lr
        self.min_lr = base_lr * min_lr_ratio
        self.current_step = 0

    def _rate(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step / self.warmup_steps)
        progress = (step - self.warmup_steps) / (self.max_steps - self.warmup_steps)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    def step(self) -> float:
        self.current_step += 1
        lr = self._rate(self.current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def get_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


class NoamOpt:
    """Wraps an optimizer and sets its rate to ``factor * d**-0.5 * min(s**-0.5, s * w**-1.5)``.

    ``step()`` increments ``_step`` (``s``), sets the rate for it, then steps the optimizer: the
    first update runs at ``rate(1)``.
    """

    def __init__(self, model_size, factor, warmup, optimizer):
        self.optimizer = optimizer
        self._step = 0
        self.warmup = warmup
        self.factor = factor
        self.model_size = model_size
        self._rate = 0

    def state_dict(self) -> dict[str, Any]:
        """Everything but the wrapped optimizer (which saves its own state)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)

    def step(self) -> None:
        self._step += 1
        rate = self.rate()
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self._rate = rate
        self.optimizer.step()

    def rate(self, step: int | None = None) -> float:
        if step is None:
            step = self._step
        return self.factor * (self.model_size ** (-0.5) * min(step ** (-0.5), step * self.warmup ** (-1.5)))

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()


def linear_decay_lambda(max_steps: int) -> Callable[[int], float]:
    """``1 - step / max_steps``, clipped at 0 past ``max_steps`` (the table's formula goes negative)."""
    return lambda step: max(0.0, 1.0 - step / max_steps)


def polynomial_decay_lambda(max_steps: int, power: float) -> Callable[[int], float]:
    """``(1 - step / max_steps) ** power`` with the base clipped at 0 (else complex past the end)."""
    return lambda step: max(0.0, 1.0 - step / max_steps) ** power


def inverse_sqrt_lambda(warmup_steps: int) -> Callable[[int], float]:
    """``sqrt(warmup_steps / step)``, held at 1 until ``warmup_steps`` (infinite at step 0 else)."""
    return lambda step: math.sqrt(warmup_steps / max(step, warmup_steps))


def constant_with_linear_cooldown_lambda(max_steps: int, cooldown_steps: int) -> Callable[[int], float]:
    """1 until ``max_steps - cooldown_steps``, then linearly to 0 at ``max_steps``, then 0."""

    def multiplier(step: int) -> float:
        if step < max_steps - cooldown_steps:
            return 1.0
        if step >= max_steps:
            return 0.0
        return (max_steps - step) / cooldown_steps

    return multiplier


def learning_rates_used(
    optimizer: torch.optim.Optimizer,
    num_updates: int,
    step_scheduler: Callable[[], Any] | None = None,
) -> list[float]:
    """Run ``num_updates`` updates; return ``param_groups[0]['lr']`` as each update applied it.

    The usual loop: read the rate, ``optimizer.step()``, then ``step_scheduler()`` (e.g. a
    scheduler's ``step``). Parameters without gradients are left alone by every torch optimizer,
    so a dummy parameter suffices.
    """
    rates = []
    for _ in range(num_updates):
        rates.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        if step_scheduler is not None:
            step_scheduler()
    return rates


def dummy_optimizer(lr: float, dtype: torch.dtype = torch.float64) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` over one zero parameter: something for a scheduler to drive."""
    return torch.optim.SGD([torch.zeros(1, dtype=dtype, requires_grad=True)], lr=lr)


def live_schedulers(optimizer: torch.optim.Optimizer, scheduler: Any) -> Any:
    """The live PyTorch schedulers a ``TorchScheduler`` tree describes, built over ``optimizer``.

    ``scheduler`` is read by its attributes (``kind``, ``option(name)``, ``options``, ``members``,
    ``milestones``): members are built in order before their composite, as a user builds them.
    ``lr_lambda`` options are jax functions, called here on Python ints (as ``float``).
    """
    from torch.optim import lr_scheduler, swa_utils

    if scheduler.kind in ("SequentialLR", "ChainedScheduler"):
        members = [live_schedulers(optimizer, member) for member in scheduler.members]
        if scheduler.kind == "ChainedScheduler":
            return lr_scheduler.ChainedScheduler(members, optimizer=optimizer)
        return lr_scheduler.SequentialLR(optimizer, members, list(scheduler.milestones))
    options = {name: value for name, value in scheduler.options if name != "learning_rate"}
    if "lr_lambda" in options:
        function = options["lr_lambda"]
        options["lr_lambda"] = lambda k: float(function(k))
    cls = swa_utils.SWALR if scheduler.kind == "SWALR" else getattr(lr_scheduler, scheduler.kind)
    return cls(optimizer, **options)
