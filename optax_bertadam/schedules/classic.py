"""Classic hand-written schedules: the tutorial's cosine warmup and table, Noam, LambdaLR/SequentialLR.

Each is an optax schedule ``count -> learning rate`` (``count`` = updates already applied) that
reproduces a PyTorch pattern driven the way its source drives it:

* :func:`cosine_warmup`: the tutorial's ``CosineWarmupScheduler`` (``scheduler.step()`` after
  every update, optimizer built with ``lr=base_lr``).
* :func:`linear_decay`, :func:`polynomial_decay`, :func:`inverse_sqrt`,
  :func:`constant_with_linear_cooldown`: the tutorial's table of other schedules, as
  ``LambdaLR`` multipliers of ``base_lr`` (update ``k`` at ``step = k``). The table gives formulas
  only; where they break down (past ``max_steps``, at step 0) each docstring says what is done.
* :func:`noam`: ``NoamOpt`` of "The Annotated Transformer", whose ``step()`` increments its step
  before computing the rate: update ``k`` runs at ``rate(k + 1)``.
* :func:`lambda_lr`, :func:`sequential_lr`: ``torch.optim.lr_scheduler.LambdaLR`` and
  ``SequentialLR``.

The tests compare them with PyTorch twins written from the tutorial. Branches on the step are decided on the
integer count; the rest is computed in the default float dtype (float32, or float64 under
``jax.enable_x64(True)``). Arguments are checked when the schedule is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_bertadam import _validation
from optax_bertadam.schedules._common import as_float as _as_float
from optax_bertadam.schedules._common import linear_warmup

Array = Any
Schedule = Callable[[Array], Array]


@_validation.explains_torch_habits
def cosine_warmup(base_lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.1) -> Schedule:
    r"""Linear warmup, then cosine decay from ``base_lr`` to ``min_lr_ratio * base_lr``.

    With ``s = k`` for update ``k >= 1`` and ``m = min_lr_ratio * base_lr``:

    .. math::
      \mathrm{lr}_0 = \mathrm{base}, \qquad
      \mathrm{lr}_k = \begin{cases} \mathrm{base} \cdot s / w & s < w \\
        m + (\mathrm{base} - m) \, \tfrac12 \left(1 + \cos\left(\pi \frac{s - w}{M - w}\right)\right)
        & \text{otherwise} \end{cases}

    Reproduces the tutorial's ``CosineWarmupScheduler(optimizer, warmup_steps, max_steps, base_lr,
    min_lr_ratio)`` used as in its example: the optimizer is built with ``lr=base_lr`` and
    ``scheduler.step()`` (which increments ``current_step`` *before* computing the rate) runs
    after each update. So update 0 runs at ``base_lr``, not at the warmup's 0, and update ``k``
    at the value for ``current_step = k``. As there, the cosine goes on past ``max_steps`` (the
    rate climbs back towards ``base_lr``).

    Args:
      base_lr: peak rate, also the optimizer's initial ``lr`` (>= 0).
      warmup_steps: ``w`` (>= 0).
      max_steps: ``M`` (> ``warmup_steps``: the decay divides by ``M - w``).
      min_lr_ratio: the floor as a ratio of ``base_lr``, in ``[0, 1]``.

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.cosine_warmup(1.0, warmup_steps=2, max_steps=10)
      >>> [round(float(schedule(k)), 6) for k in (0, 1, 2, 6, 10, 12)]  # update 0 at base_lr
      [1.0, 0.5, 1.0, 0.55, 0.1, 0.231802]
    """
    base_lr = _validation.check_learning_rate("base_lr", base_lr)
    warmup_steps = _validation.check_int("warmup_steps", warmup_steps, low=0)
    max_steps = _validation.check_int("max_steps", max_steps, low=1)
    if max_steps <= warmup_steps:
        raise ValueError(
            f"max_steps={max_steps!r} is invalid: expected an integer > "
            f"warmup_steps={warmup_steps!r} (the cosine divides by max_steps - warmup_steps)"
        )
    min_lr_ratio = _validation.check_range("min_lr_ratio", min_lr_ratio, low=0.0, high=1.0)
    min_lr = base_lr * min_lr_ratio
    decay_length = max_steps - warmup_steps

    def schedule(count: Array) -> Array:
        count = jnp.asarray(count)
        warmup = base_lr * linear_warmup(count, max(1, warmup_steps))
        # cos(pi x) has period 2 in x: reducing the integer numerator keeps float32 accurate
        # arbitrarily far past max_steps.
        half_turns = jnp.fmod(_as_float(count - warmup_steps), 2 * decay_length) / decay_length
        decay = min_lr + (base_lr - min_lr) * 0.5 * (1.0 + jnp.cos(math.pi * half_turns))
        rate = jnp.where(count < warmup_steps, warmup, decay)
        # Update 0 runs before the first scheduler.step(): at the optimizer's own lr.
        return jnp.where(count == 0, _as_float(base_lr), rate)

    return schedule


@_validation.explains_torch_habits
def linear_decay(base_lr: float, max_steps: int) -> Schedule:
    r"""``base_lr * (1 - step / max_steps)``, held at 0 from ``max_steps`` on.

    .. math::
      \mathrm{lr}_k = \mathrm{base} \cdot \max\left(0, \frac{M - k}{M}\right)

    The tutorial's "Linear Decay" row as ``LambdaLR(optimizer, lambda k: max(0, 1 - k / M))``.
    The table's formula turns negative (gradient *ascent*) past ``max_steps``; the rate is
    clipped at 0 there, as ``transformers``' linear schedule does.

    Args:
      base_lr: the optimizer's ``lr`` (>= 0).
      max_steps: ``M``, the update at which the rate reaches 0 (>= 1).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.linear_decay(1.0, max_steps=4)
      >>> [round(float(schedule(k)), 6) for k in range(6)]
      [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    base_lr = _validation.check_learning_rate("base_lr", base_lr)
    max_steps = _validation.check_int("max_steps", max_steps, low=1)

    def schedule(count: Array) -> Array:
        return base_lr * jnp.maximum(0.0, _as_float(max_steps - jnp.asarray(count)) / max_steps)

    return schedule


@_validation.explains_torch_habits
def polynomial_decay(base_lr: float, max_steps: int, power: float) -> Schedule:
    r"""``base_lr * (1 - step / max_steps) ** power``, held at 0 from ``max_steps`` on.

    .. math::
      \mathrm{lr}_k = \mathrm{base} \cdot \max\left(0, \frac{M - k}{M}\right)^{p}

    The tutorial's "Polynomial" row as ``LambdaLR(optimizer, lambda k: max(0, 1 - k / M) ** p)``.
    Past ``max_steps`` the table's base is negative (a complex number or NaN for fractional
    ``p``); it is clipped at 0 before the power.

    Args:
      base_lr: the optimizer's ``lr`` (>= 0).
      max_steps: ``M`` (>= 1).
      power: ``p`` (>= 0; 1 is :func:`linear_decay`).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.polynomial_decay(1.0, max_steps=4, power=2.0)
      >>> [round(float(schedule(k)), 6) for k in range(6)]
      [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    base_lr = _validation.check_learning_rate("base_lr", base_lr)
    max_steps = _validation.check_int("max_steps", max_steps, low=1)
    _validation.check_finite("power", power)
    power = _validation.check_range("power", power, low=0.0)

    def schedule(count: Array) -> Array:
        remaining = jnp.maximum(0.0, _as_float(max_steps - jnp.asarray(count)) / max_steps)
        # 0 ** power spelled out: a tiny power rounds to 0 in float32, and 0 ** 0 is 1.
        return base_lr * jnp.where(remaining == 0.0, 0.0 if power > 0.0 else 1.0, remaining**power)

    return schedule


@_validation.explains_torch_habits
def inverse_sqrt(base_lr: float, warmup_steps: int) -> Schedule:
    r"""``base_lr * sqrt(warmup_steps / step)``, held at ``base_lr`` until ``warmup_steps``.

    .. math::
      \mathrm{lr}_k = \mathrm{base} \cdot \sqrt{\frac{w}{\max(k, w)}}

    The tutorial's "Inverse Sqrt" row as ``LambdaLR(optimizer, lambda k: sqrt(w / max(k, w)))``.
    The table's formula is infinite at step 0 and above ``base_lr`` for every step before ``w``,
    so the rate is held at ``base_lr`` for updates ``0 .. w`` (T5's "rsqrt with constant
    warmup"); for the Transformer's linear warmup use :func:`noam` or
    ``get_inverse_sqrt_schedule``.

    Args:
      base_lr: the optimizer's ``lr`` (>= 0), the rate up to update ``w``.
      warmup_steps: ``w``, where the decay starts (>= 1).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.inverse_sqrt(1.0, warmup_steps=4)
      >>> [round(float(schedule(k)), 6) for k in (0, 1, 4, 16, 64)]
      [1.0, 1.0, 1.0, 0.5, 0.25]
    """
    base_lr = _validation.check_learning_rate("base_lr", base_lr)
    warmup_steps = _validation.check_int("warmup_steps", warmup_steps, low=1)

    def schedule(count: Array) -> Array:
        steps = jnp.maximum(jnp.asarray(count), warmup_steps)
        return base_lr * jax.lax.rsqrt(_as_float(steps) / warmup_steps)

    return schedule


@_validation.explains_torch_habits
def constant_with_linear_cooldown(base_lr: float, max_steps: int, cooldown_steps: int) -> Schedule:
    r"""``base_lr`` until the last ``cooldown_steps`` updates, then linearly to 0 at ``max_steps``.

    .. math::
      \mathrm{lr}_k = \mathrm{base} \cdot
        \begin{cases} 1 & k < M - C \\ (M - k) / C & M - C \le k < M \\ 0 & k \ge M \end{cases}

    The tutorial's "Constant + Cooldown" row ("flat then linear drop") as a ``LambdaLR``
    multiplier: the last update at ``base_lr`` is ``M - C - 1``, the rate reaches 0 at update
    ``M`` and stays there.

    Args:
      base_lr: the optimizer's ``lr`` (>= 0).
      max_steps: ``M``, the update at which the rate reaches 0 (>= 1).
      cooldown_steps: ``C``, the length of the linear drop, in ``[0, max_steps]`` (0: the rate
        falls straight to 0 at ``M``).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.constant_with_linear_cooldown(1.0, max_steps=10, cooldown_steps=4)
      >>> [round(float(schedule(k)), 6) for k in (0, 6, 7, 8, 10, 11)]
      [1.0, 1.0, 0.75, 0.5, 0.0, 0.0]
    """
    base_lr = _validation.check_learning_rate("base_lr", base_lr)
    max_steps = _validation.check_int("max_steps", max_steps, low=1)
    cooldown_steps = _validation.check_int("cooldown_steps", cooldown_steps, low=0)
    if cooldown_steps > max_steps:
        raise ValueError(
            f"cooldown_steps={cooldown_steps!r} is invalid: expected an integer in [0, max_steps={max_steps}]"
        )
    cooldown_start = max_steps - cooldown_steps

    def schedule(count: Array) -> Array:
        count = jnp.asarray(count)
        cooldown = _as_float(max_steps - count) / max(1, cooldown_steps)
        multiplier = jnp.where(count < cooldown_start, 1.0, jnp.where(count < max_steps, cooldown, 0.0))
        return base_lr * multiplier

    return schedule


@_validation.explains_torch_habits
def noam(model_size: float, warmup: int, factor: float = 1.0) -> Schedule:
    r"""The Transformer's rate: linear warmup, then inverse square root ("Attention is all you need").

    With ``s = k + 1`` for update ``k``:

    .. math::
      \mathrm{lr}_k = f \cdot d^{-1/2} \cdot \min\left(s^{-1/2},\ s \cdot w^{-3/2}\right)

    Reproduces ``NoamOpt(model_size, factor, warmup, optimizer)`` of "The Annotated Transformer":
    its ``step()`` increments ``_step`` before setting the rate, so update ``k`` runs at
    ``rate(k + 1)``. The peak, at ``s = w``, is ``f / sqrt(d * w)``. ``NoamOpt``'s saved state
    (``_step``) is the optax ``count``: restoring the optax state resumes the schedule.

    Args:
      model_size: ``d``, the model width (> 0).
      warmup: ``w``, the number of warmup updates (>= 1).
      factor: ``f``, a multiplier of the whole rate (>= 0).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.noam(16, warmup=4, factor=2.0)
      >>> [round(float(schedule(k)), 6) for k in (0, 1, 3, 4, 16)]  # peak 2 / sqrt(16 * 4) at k = 3
      [0.0625, 0.125, 0.25, 0.223607, 0.121268]
    """
    _validation.check_finite("model_size", model_size)
    model_size = _validation.check_range("model_size", model_size, low=0.0, low_inclusive=False)
    warmup = _validation.check_int("warmup", warmup, low=1)
    factor = _validation.check_learning_rate("factor", factor)
    scale = factor * model_size**-0.5
    warmup_slope = warmup**-1.5

    def schedule(count: Array) -> Array:
        step = jnp.asarray(count) + 1
        # s * w^-1.5 < s^-0.5 exactly when s < w: decide the min on the integer step.
        rising = _as_float(step) * warmup_slope
        falling = jax.lax.rsqrt(_as_float(step))
        return scale * jnp.where(step < warmup, rising, falling)

    return schedule


@_validation.explains_torch_habits
def lambda_lr(learning_rate: float, lr_lambda: Callable[[Array], Array]) -> Schedule:
    r"""``learning_rate * lr_lambda(count)``: ``torch.optim.lr_scheduler.LambdaLR``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot \lambda(k)

    With ``optimizer.step()`` then ``scheduler.step()``, ``LambdaLR(optimizer, lr_lambda)`` runs
    update ``k`` at ``initial lr * lr_lambda(k)``: the same count as optax's.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      lr_lambda: the multiplier as a function of the integer update count (an integer array of
        the default dtype: int32, or int64 under x64), written with ``jax.numpy`` (``jnp.where``
        for branches, not ``if``) so that it jits and vmaps; it must return a scalar. It is
        traced once here so that a function that cannot be traced fails now rather than inside
        the training step.

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.lambda_lr(0.1, lambda k: 0.5**k)
      >>> [round(float(schedule(k)), 6) for k in range(4)]
      [0.1, 0.05, 0.025, 0.0125]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    if not callable(lr_lambda):
        raise TypeError(f"lr_lambda={lr_lambda!r} is invalid: expected a function of the update count")
    try:
        count = jax.ShapeDtypeStruct((), jnp.asarray(0, dtype=int).dtype)
        result = jax.eval_shape(lr_lambda, count)
    except Exception as error:  # any failure to trace is the caller's function's fault
        raise TypeError(
            f"lr_lambda={lr_lambda!r} is invalid: expected a function of the update count written "
            f"with jax.numpy (tracing it failed with {type(error).__name__}: {error})"
        ) from error
    if getattr(result, "shape", None) != ():
        raise ValueError(
            f"lr_lambda={lr_lambda!r} is invalid: expected a scalar multiplier, got "
            f"{getattr(result, 'shape', result)!r}"
        )

    def schedule(count: Array) -> Array:
        # The default integer dtype (int64 under x64) so that e.g. count / 3 is float64 there.
        return learning_rate * _as_float(lr_lambda(jnp.asarray(count, dtype=int)))

    return schedule


@_validation.explains_torch_habits
def sequential_lr(schedules: Sequence[Schedule], milestones: Sequence[int]) -> Schedule:
    r"""One schedule after another, each restarting from its own count 0 at its milestone.

    .. math::
      \mathrm{lr}_k = \mathrm{schedule}_i(k - m_i) \quad \text{for } m_i \le k < m_{i+1},
      \quad m_0 = 0

    Reproduces ``torch.optim.lr_scheduler.SequentialLR(optimizer, schedulers, milestones)``: at
    update ``m_i`` it calls ``schedulers[i]._update_lr(0)``, so that update runs at that
    scheduler's step-0 rate, and update ``k`` at its rate for step ``k - m_i``. This is
    :func:`optax.join_schedules`, which this returns. Each schedule is a full rate, e.g.
    ``lambda_lr(lr, f)`` for ``LambdaLR(optimizer, f)``, or a schedule of
    :mod:`optax_bertadam.schedules.pytorch`. PyTorch restarts a scheduler from its closed form;
    ``MultiplicativeLR`` and ``ChainedScheduler`` have none (the first continues from the previous
    scheduler's rate, the second raises), so they are refused after the first position here;
    :func:`optax_bertadam.schedules.pytorch.replay_torch_schedulers` reproduces the first, and
    nested ``SequentialLR``/``ChainedScheduler`` members, as PyTorch steps them.

    Args:
      schedules: one or more schedules ``count -> learning rate``.
      milestones: ``len(schedules) - 1`` strictly increasing update counts (>= 0).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> warmup = ob.lambda_lr(1.0, lambda k: (k + 1) / 2)
      >>> schedule = ob.sequential_lr([warmup, ob.linear_decay(1.0, max_steps=4)], milestones=[2])
      >>> [round(float(schedule(k)), 6) for k in range(7)]
      [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    """
    schedules = list(schedules)
    milestones = list(milestones)
    if not schedules:
        raise ValueError("schedules=[] is invalid: expected at least one schedule")
    for index, schedule in enumerate(schedules):
        if not callable(schedule):
            raise TypeError(
                f"schedules[{index}]={schedule!r} is invalid: expected a schedule (a function of "
                "the update count)"
            )
        # At a milestone PyTorch restarts a scheduler through its closed form; these have none.
        if index > 0 and getattr(schedule, "scheduler", None) in ("MultiplicativeLR", "ChainedScheduler"):
            raise ValueError(
                f"schedules[{index}] is a {schedule.scheduler}, which SequentialLR cannot restart at "
                "its milestone (PyTorch multiplies the previous scheduler's rate by lr_lambda(0) for "
                "MultiplicativeLR, and raises for ChainedScheduler); it may only come first"
            )
    if len(milestones) != len(schedules) - 1:
        raise ValueError(
            f"milestones={milestones!r} is invalid: expected {len(schedules) - 1} milestone(s), "
            f"one fewer than the {len(schedules)} schedules"
        )
    milestones = [
        _validation.check_int(f"milestones[{index}]", milestone, low=0)
        for index, milestone in enumerate(milestones)
    ]
    if any(later <= earlier for earlier, later in zip(milestones, milestones[1:], strict=False)):
        raise ValueError(f"milestones={milestones!r} is invalid: expected strictly increasing update counts")
    return optax.join_schedules(schedules, milestones)
