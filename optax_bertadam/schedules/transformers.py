"""Every ``transformers.get_scheduler`` schedule as an optax schedule ``count -> learning rate``.

transformers builds its schedules as ``torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)``:
the optimizer's initial rate ``lr`` times a multiplier of the scheduler step. Driven the usual way
(``optimizer.step()`` then ``scheduler.step()``), update ``k`` runs at ``lr * lr_lambda(k)``, so
here ``schedule(count) = learning_rate * lr_lambda(count)`` with ``count`` the number of updates
already applied (optax's convention). Every function below names the transformers function it
reproduces; :func:`get_scheduler` dispatches by the same names as ``transformers.SchedulerType``.

Quirks of transformers (5.x) reproduced on purpose, because parity is the point:

* ``cosine`` and ``cosine_with_min_lr`` keep following the cosine after ``num_training_steps``:
  with the default half wave the rate rises again past the end of training (only clipped at 0).
* ``cosine_warmup_with_min_lr`` warms up to ``(k + 1) / num_warmup_steps`` (full rate at the last
  warmup step) and its cosine starts one step in (``progress = (k - w + 1) / (T - w)``).
* ``polynomial`` divides by the optimizer's initial rate inside the lambda (``LambdaLR`` multiplies
  it back), so ``lr_end`` is an absolute rate, and it must be below ``learning_rate``.
* ``inverse_sqrt`` with ``num_warmup_steps=0`` and no ``timescale`` uses ``timescale=10_000``.
* ``constant`` ignores every other argument; ``constant_with_warmup`` ignores
  ``scheduler_specific_kwargs``, as ``transformers.get_scheduler`` does.

Not ported: ``last_epoch`` (resuming is restoring the optax state, whose ``count`` drives the
schedule). ``reduce_lr_on_plateau`` and ``greedy`` (``GreedyLR``, which can also raise the rate)
are loss-driven, so they are gradient transformations, :func:`reduce_lr_on_plateau` and
:func:`greedy_lr`, not schedules; :func:`get_scheduler` returns them for those names.

Arguments are checked when a schedule is built: bad values raise ``ValueError``/``TypeError``
naming the argument, never an error from inside jit. Branches on the step (``k < w``, the end of
a restart cycle, ...) are decided on the integer count against boundaries computed in Python, so
float32 takes the same branch as PyTorch's double precision; the rest is computed in the default
float dtype (float32, or float64 under ``jax.enable_x64(True)``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import _validation
from optax_bertadam.schedules._common import as_float as _as_float
from optax_bertadam.schedules._common import linear_warmup
from optax_bertadam.schedules.loss_driven import greedy_lr, reduce_lr_on_plateau

Array = Any
Schedule = Callable[[Array], Array]

WARMUP_TYPES = ("linear", "cosine", "1-sqrt")
DECAY_TYPES = ("linear", "cosine", "1-sqrt")


def _check_steps(name: str, value: Any) -> int:
    return _validation.check_int(name, value, low=0)


def _check_ratio(name: str, value: Any) -> float:
    return _validation.check_range(name, value, low=0.0, high=1.0)


def _check_num_cycles(value: Any) -> float:
    _validation.check_finite("num_cycles", value)
    return _validation.check_range("num_cycles", value, low=0.0)


def _split_num_cycles(num_cycles: float) -> tuple[float, float]:
    """``num_cycles`` as ``head + tail``, ``head`` with 12 significant bits.

    ``steps * head`` is then exact in float32 for ``steps < 4096``, and ``steps * tail`` is tiny.
    A float32 ``num_cycles`` alone is off by up to 3e-8 relative: multiplied by the step, that
    becomes a phase error visible at 1e-6 within a few training lengths.
    """
    mantissa, exponent = math.frexp(num_cycles)
    head = math.ldexp(round(mantissa * 4096), exponent - 12)
    return head, num_cycles - head


def _cosine_wave(steps: Array, length: int, num_cycles: float) -> Array:
    """``0.5 * (1 + cos(2 pi * num_cycles * steps / length))``.

    The number of turns is reduced modulo 1 before the cosine, with the exact part of the product
    (see :func:`_split_num_cycles`) reduced exactly, so float32 stays within a few ulps of
    PyTorch's double far past the end of training.
    """
    head, tail = _split_num_cycles(num_cycles)
    steps = _as_float(steps)
    turns = (jnp.fmod(steps * head, length) + steps * tail) / length
    return 0.5 * (1.0 + jnp.cos((2.0 * math.pi) * turns))


def _min_lr_rate(learning_rate: float, min_lr: Any, min_lr_rate: Any) -> float:
    """transformers' ``min_lr`` / ``min_lr_rate`` resolution: exactly one of them, as a ratio."""
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError(
            f"min_lr={min_lr!r} and min_lr_rate={min_lr_rate!r}: only one of min_lr or "
            "min_lr_rate should be set"
        )
    if min_lr is None and min_lr_rate is None:
        raise ValueError(
            "min_lr=None and min_lr_rate=None: one of min_lr or min_lr_rate should be set "
            "(through `scheduler_specific_kwargs` in get_scheduler)"
        )
    if min_lr_rate is not None:
        return _check_ratio("min_lr_rate", min_lr_rate)
    min_lr = _validation.check_range("min_lr", min_lr, low=0.0, high=learning_rate)
    if learning_rate == 0.0:
        raise ValueError(
            f"min_lr={min_lr!r} is invalid with learning_rate=0.0: min_lr is turned into the "
            "ratio min_lr / learning_rate; pass min_lr_rate instead"
        )
    return min_lr / learning_rate


@_validation.explains_torch_habits
def get_constant_schedule(learning_rate: float) -> Schedule:
    """A constant rate: ``transformers.get_constant_schedule(optimizer)``.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.get_constant_schedule(0.1)
      >>> [round(float(schedule(k)), 6) for k in range(3)]
      [0.1, 0.1, 0.1]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)

    def schedule(count: Array) -> Array:
        return jnp.full(jnp.shape(count), learning_rate, dtype=float)

    return schedule


@_validation.explains_torch_habits
def get_constant_schedule_with_warmup(learning_rate: float, num_warmup_steps: int) -> Schedule:
    r"""Linear warmup from 0, then constant.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot
        \begin{cases} k / \max(1, w) & k < w \\ 1 & \text{otherwise} \end{cases}

    Reproduces ``transformers.get_constant_schedule_with_warmup(optimizer, num_warmup_steps)``.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      num_warmup_steps: ``w``, the number of warmup updates (>= 0).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.get_constant_schedule_with_warmup(1.0, num_warmup_steps=4)
      >>> [round(float(schedule(k)), 6) for k in range(6)]
      [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    num_warmup_steps = _check_steps("num_warmup_steps", num_warmup_steps)

    def schedule(count: Array) -> Array:
        count = jnp.asarray(count)
        multiplier = jnp.where(count < num_warmup_steps, linear_warmup(count, max(1, num_warmup_steps)), 1.0)
        return learning_rate * multiplier

    return schedule


@_validation.explains_torch_habits
def get_linear_schedule_with_warmup(
    learning_rate: float, num_warmup_steps: int, num_training_steps: int
) -> Schedule:
    r"""Linear warmup from 0, then linear decay to 0 at ``num_training_steps``, then 0.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot
        \begin{cases} k / \max(1, w) & k < w \\
        \max\left(0, \frac{T - k}{\max(1, T - w)}\right) & \text{otherwise} \end{cases}

    Reproduces ``transformers.get_linear_schedule_with_warmup(optimizer, w, T)``.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      num_warmup_steps: ``w``, the number of warmup updates (>= 0).
      num_training_steps: ``T``, the total number of updates (>= 0).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.get_linear_schedule_with_warmup(1.0, num_warmup_steps=2,
      ...                                               num_training_steps=6)
      >>> [round(float(schedule(k)), 6) for k in range(8)]
      [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    num_warmup_steps = _check_steps("num_warmup_steps", num_warmup_steps)
    num_training_steps = _check_steps("num_training_steps", num_training_steps)
    decay_length = max(1, num_training_steps - num_warmup_steps)

    def schedule(count: Array) -> Array:
        count = jnp.asarray(count)
        # T - k is an exact integer; dividing once keeps float32 within an ulp of torch.
        decay = jnp.maximum(0.0, _as_float(num_training_steps - count) / decay_length)
        warmup = linear_warmup(count, max(1, num_warmup_steps))
        return learning_rate * jnp.where(count < num_warmup_steps, warmup, decay)

    return schedule


@_validation.explains_torch_habits
def get_cosine_schedule_with_warmup(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
) -> Schedule:
    r"""Linear warmup from 0, then a cosine wave (by default half a wave, down to 0 at ``T``).

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot
        \begin{cases} k / \max(1, w) & k < w \\
        \max\left(0, \tfrac12 (1 + \cos(2 \pi c \, p_k))\right) & \text{otherwise} \end{cases}
      \qquad p_k = \frac{k - w}{\max(1, T - w)}

    Reproduces ``transformers.get_cosine_schedule_with_warmup(optimizer, w, T, num_cycles)``,
    including what it does after ``T``: the wave goes on, so with ``c = 0.5`` the rate rises again.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      num_warmup_steps: ``w``, the number of warmup updates (>= 0).
      num_training_steps: ``T``, the total number of updates (>= 0).
      num_cycles: ``c``, the number of cosine waves between ``w`` and ``T`` (>= 0; 0.5 decays
        from ``lr`` to 0).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.get_cosine_schedule_with_warmup(1.0, num_warmup_steps=2,
      ...                                               num_training_steps=6)
      >>> [round(float(schedule(k)), 6) for k in range(7)]
      [0.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 0.0]
    """
    return get_cosine_with_min_lr_schedule_with_warmup(
        learning_rate, num_warmup_steps, num_training_steps, num_cycles, min_lr_rate=0.0
    )


def _restart_boundaries(num_cycles: float, decay_length: int) -> np.ndarray:
    """Steps ``j`` (since the end of warmup) at which a new cosine cycle starts, as torch sees it.

    transformers computes ``(num_cycles * (j / decay_length)) % 1.0`` in double precision: a
    cycle starts where that product first reaches an integer. Each boundary is located exactly
    with rationals, then nudged to agree with the double-precision product, so the jitted schedule
    can pick the cycle with integer comparisons in any float dtype.
    """

    def turns(j: int) -> float:
        return float(num_cycles) * (float(j) / float(decay_length))

    boundaries = []
    cycle = 1
    while cycle <= turns(decay_length - 1):
        exact = math.ceil(Fraction(cycle) * decay_length / Fraction(num_cycles))
        step = min(decay_length - 1, max(0, exact))
        while step > 0 and turns(step - 1) >= cycle:
            step -= 1
        while turns(step) < cycle:
            step += 1
        boundaries.append(step)
        cycle += 1
    return np.asarray(boundaries, dtype=np.int32)


@_validation.explains_torch_habits
def get_cosine_with_hard_restarts_schedule_with_warmup(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 1,
) -> Schedule:
    r"""Linear warmup from 0, then ``c`` cosine decays from ``lr`` to 0, each restarting at ``lr``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot
        \begin{cases} k / \max(1, w) & k < w \\
        0 & p_k \ge 1 \\
        \max\left(0, \tfrac12 (1 + \cos(\pi \, ((c \, p_k) \bmod 1)))\right) & \text{otherwise}
        \end{cases}
      \qquad p_k = \frac{k - w}{\max(1, T - w)}

    Reproduces
    ``transformers.get_cosine_with_hard_restarts_schedule_with_warmup(optimizer, w, T, c)``.
    The cycle a step falls in is decided as PyTorch's double precision decides it.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      num_warmup_steps: ``w``, the number of warmup updates (>= 0).
      num_training_steps: ``T``, the total number of updates (>= 0); the rate is 0 from there.
      num_cycles: ``c``, the number of hard restarts (>= 0; transformers types it ``int`` but
        computes in floats, and so does this).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.get_cosine_with_hard_restarts_schedule_with_warmup(
      ...     1.0, num_warmup_steps=2, num_training_steps=10, num_cycles=2)
      >>> [round(float(schedule(k)), 6) for k in range(11)]
      [0.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0, 0.853553, 0.5, 0.146447, 0.0]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    num_warmup_steps = _check_steps("num_warmup_steps", num_warmup_steps)
    num_training_steps = _check_steps("num_training_steps", num_training_steps)
    num_cycles = _check_num_cycles(num_cycles)
    decay_length = max(1, num_training_steps - num_warmup_steps)
    boundaries = _restart_boundaries(num_cycles, decay_length)
    head, tail = _split_num_cycles(num_cycles)

    def schedule(count: Array) -> Array:
        count = jnp.asarray(count)
        steps = count - num_warmup_steps
        # Few boundaries (about num_cycles): counting them beats a search, and vmaps cheaply.
        cycles_done = jnp.sum(jnp.expand_dims(steps, -1) >= boundaries, axis=-1)
        # (c * j - cycles_done * length) / length, the position in the cycle, with c * j split so
        # that the subtraction of the whole cycles is exact (see _split_num_cycles).
        whole = _as_float(steps) * head - cycles_done * decay_length
        position = (whole + _as_float(steps) * tail) / decay_length
        wave = jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(math.pi * position)))
        decay = jnp.where(steps >= decay_length, 0.0, wave)
        warmup = linear_warmup(count, max(1, num_warmup_steps))
        return learning_rate * jnp.where(count < num_warmup_steps, warmup, decay)

    return schedule


@_validation.explains_torch_habits
def get_polynomial_decay_schedule_with_warmup(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_end: float = 1e-7,
    power: float = 1.0,
) -> Schedule:
    r"""Linear warmup from 0, then polynomial decay from ``lr`` to ``lr_end`` at ``T``, then ``lr_end``.

    .. math::
      \mathrm{lr}_k =
        \begin{cases} \mathrm{lr} \cdot k / \max(1, w) & k < w \\
        \mathrm{lr}_\mathrm{end} & k > T \\
        (\mathrm{lr} - \mathrm{lr}_\mathrm{end}) \left(\frac{T - k}{T - w}\right)^{\mathrm{power}}
          + \mathrm{lr}_\mathrm{end} & \text{otherwise} \end{cases}

    Reproduces ``transformers.get_polynomial_decay_schedule_with_warmup(optimizer, w, T, lr_end,
    power)``, whose lambda divides by the optimizer's initial ``lr`` for ``LambdaLR`` to multiply
    it back: ``lr_end`` is an absolute rate.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      num_warmup_steps: ``w``, the number of warmup updates (>= 0).
      num_training_steps: ``T``, the total number of updates (>= 0, != ``w``: transformers divides
        by ``T - w`` at update ``T``).
      lr_end: the final rate, in ``[0, learning_rate)`` (transformers requires
        ``lr_end < lr``).
      power: the exponent of the decay (>= 0; 1 is linear).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.get_polynomial_decay_schedule_with_warmup(
      ...     1.0, num_warmup_steps=2, num_training_steps=6, lr_end=0.1, power=2.0)
      >>> [round(float(schedule(k)), 6) for k in range(8)]
      [0.0, 0.5, 1.0, 0.60625, 0.325, 0.15625, 0.1, 0.1]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    num_warmup_steps = _check_steps("num_warmup_steps", num_warmup_steps)
    num_training_steps = _check_steps("num_training_steps", num_training_steps)
    lr_end = _validation.check_finite("lr_end", lr_end)
    power = _validation.check_finite("power", power)
    power = _validation.check_range("power", power, low=0.0)
    if not 0.0 <= lr_end < learning_rate:
        raise ValueError(
            f"lr_end={lr_end!r} is invalid: expected a value in [0, learning_rate={learning_rate!r})"
            f" (transformers: lr_end ({lr_end}) must be smaller than initial lr ({learning_rate}))"
        )
    if num_training_steps == num_warmup_steps:
        raise ValueError(
            f"num_training_steps={num_training_steps!r} is invalid: expected a value different from "
            f"num_warmup_steps={num_warmup_steps!r} (the decay divides by their difference)"
        )
    decay_length = num_training_steps - num_warmup_steps

    def schedule(count: Array) -> Array:
        count = jnp.asarray(count)
        # 1 - (k - w) / (T - w) written as (T - k) / (T - w): one rounding in float32. Before w or
        # after T the base may be negative; where() discards those lanes.
        remaining = _as_float(num_training_steps - count) / decay_length
        # 0 ** power at k == T spelled out: a tiny power rounds to 0 in float32, and 0 ** 0 is 1.
        shape = jnp.where(remaining == 0.0, 0.0 if power > 0.0 else 1.0, remaining**power)
        decay = (learning_rate - lr_end) * shape + lr_end
        warmup = learning_rate * linear_warmup(count, max(1, num_warmup_steps))
        after_end = jnp.where(count > num_training_steps, lr_end, decay)
        return jnp.where(count < num_warmup_steps, warmup, after_end)

    return schedule


@_validation.explains_torch_habits
def get_inverse_sqrt_schedule(
    learning_rate: float, num_warmup_steps: int, timescale: float | None = None
) -> Schedule:
    r"""Linear warmup from 0, then decay as the inverse square root of the step.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot
        \begin{cases} k / \max(1, w) & k < w \\
        \left(\frac{k - w + \tau}{\tau}\right)^{-1/2} & \text{otherwise} \end{cases}

    Reproduces ``transformers.get_inverse_sqrt_schedule(optimizer, w, timescale)`` (after
    big_vision).

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      num_warmup_steps: ``w``, the number of warmup updates (>= 0).
      timescale: ``tau`` (> 0); ``None`` means ``num_warmup_steps``, or 10 000 if that is 0.

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.get_inverse_sqrt_schedule(1.0, num_warmup_steps=2)
      >>> [round(float(schedule(k)), 6) for k in (0, 1, 2, 3, 8)]
      [0.0, 0.5, 1.0, 0.816497, 0.5]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    num_warmup_steps = _check_steps("num_warmup_steps", num_warmup_steps)
    if timescale is None:
        timescale = num_warmup_steps or 10_000
    _validation.check_finite("timescale", timescale)
    timescale = _validation.check_range("timescale", timescale, low=0.0, low_inclusive=False)

    def schedule(count: Array) -> Array:
        count = jnp.asarray(count)
        decay = jax.lax.rsqrt((_as_float(count - num_warmup_steps) + timescale) / timescale)
        warmup = linear_warmup(count, max(1, num_warmup_steps))
        return learning_rate * jnp.where(count < num_warmup_steps, warmup, decay)

    return schedule


@_validation.explains_torch_habits
def get_cosine_with_min_lr_schedule_with_warmup(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
) -> Schedule:
    r"""Linear warmup from 0, then a cosine wave between ``lr`` and a floor ``r * lr``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot
        \begin{cases} k / \max(1, w) & k < w \\
        \max\left(0, \tfrac12 (1 + \cos(2 \pi c \, p_k)) (1 - r) + r\right) & \text{otherwise}
        \end{cases}
      \qquad p_k = \frac{k - w}{\max(1, T - w)}

    Reproduces ``transformers.get_cosine_with_min_lr_schedule_with_warmup(optimizer, w, T,
    num_cycles, min_lr=..., min_lr_rate=...)``; like ``cosine``, the wave goes on after ``T``.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      num_warmup_steps: ``w``, the number of warmup updates (>= 0).
      num_training_steps: ``T``, the total number of updates (>= 0).
      num_cycles: ``c``, the number of cosine waves between ``w`` and ``T`` (>= 0).
      min_lr: the floor as a rate, in ``[0, learning_rate]`` (``r = min_lr / learning_rate``).
      min_lr_rate: the floor as a ratio ``r`` of ``learning_rate``, in ``[0, 1]``. Give exactly
        one of ``min_lr`` and ``min_lr_rate``.

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.get_cosine_with_min_lr_schedule_with_warmup(
      ...     1.0, num_warmup_steps=2, num_training_steps=6, min_lr=0.1)
      >>> [round(float(schedule(k)), 6) for k in range(7)]
      [0.0, 0.5, 1.0, 0.868198, 0.55, 0.231802, 0.1]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    num_warmup_steps = _check_steps("num_warmup_steps", num_warmup_steps)
    num_training_steps = _check_steps("num_training_steps", num_training_steps)
    num_cycles = _check_num_cycles(num_cycles)
    floor = _min_lr_rate(learning_rate, min_lr, min_lr_rate)
    decay_length = max(1, num_training_steps - num_warmup_steps)

    def schedule(count: Array) -> Array:
        count = jnp.asarray(count)
        wave = _cosine_wave(count - num_warmup_steps, decay_length, num_cycles)
        decay = jnp.maximum(0.0, wave * (1.0 - floor) + floor)
        warmup = linear_warmup(count, max(1, num_warmup_steps))
        return learning_rate * jnp.where(count < num_warmup_steps, warmup, decay)

    return schedule


@_validation.explains_torch_habits
def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
) -> Schedule:
    r"""The ``cosine_warmup_with_min_lr`` schedule: warmup that ends at ``lr``, then cosine to a floor.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot
        \begin{cases} (k + 1) / \max(1, w) & k < w,\ \text{no warmup\_lr\_rate} \\
        a + (1 - a) \, k / \max(1, w - 1) & k < w,\ \text{warmup\_lr\_rate} = a \\
        \max\left(0, \tfrac12 (1 + \cos(2 \pi c \, p_k)) (1 - r) + r\right) & \text{otherwise}
        \end{cases}
      \qquad p_k = \frac{k - w + 1}{\max(1, T - w)}

    Reproduces ``transformers.get_cosine_with_min_lr_schedule_with_warmup_lr_rate(optimizer, w, T,
    num_cycles, min_lr, min_lr_rate, warmup_lr_rate)``, including its one-step shift: the last
    warmup update already runs at ``lr`` and the cosine starts one step in.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      num_warmup_steps: ``w``, the number of warmup updates (>= 0).
      num_training_steps: ``T``, the total number of updates (>= 0).
      num_cycles: ``c``, the number of cosine waves between ``w`` and ``T`` (>= 0).
      min_lr: the floor as a rate, in ``[0, learning_rate]`` (``r = min_lr / learning_rate``).
      min_lr_rate: the floor as a ratio ``r`` of ``learning_rate``, in ``[0, 1]``. Give exactly
        one of ``min_lr`` and ``min_lr_rate``.
      warmup_lr_rate: ``a``, the multiplier of update 0, in ``[0, 1]``; ``None`` (default) warms
        up from ``1 / w``.

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
      ...     1.0, num_warmup_steps=2, num_training_steps=6, min_lr_rate=0.1)
      >>> [round(float(schedule(k)), 6) for k in range(7)]
      [0.5, 1.0, 0.868198, 0.55, 0.231802, 0.1, 0.231802]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    num_warmup_steps = _check_steps("num_warmup_steps", num_warmup_steps)
    num_training_steps = _check_steps("num_training_steps", num_training_steps)
    num_cycles = _check_num_cycles(num_cycles)
    floor = _min_lr_rate(learning_rate, min_lr, min_lr_rate)
    if warmup_lr_rate is not None:
        warmup_lr_rate = _check_ratio("warmup_lr_rate", warmup_lr_rate)
    decay_length = max(1, num_training_steps - num_warmup_steps)

    def schedule(count: Array) -> Array:
        count = jnp.asarray(count)
        if warmup_lr_rate is None:
            warmup = linear_warmup(count + 1, max(1, num_warmup_steps))
        else:
            ramp = linear_warmup(count, max(1, num_warmup_steps - 1))
            warmup = warmup_lr_rate + (1.0 - warmup_lr_rate) * ramp
        wave = _cosine_wave(count - num_warmup_steps + 1, decay_length, num_cycles)
        decay = jnp.maximum(0.0, wave * (1.0 - floor) + floor)
        return learning_rate * jnp.where(count < num_warmup_steps, warmup, decay)

    return schedule


@_validation.explains_torch_habits
def get_wsd_schedule(
    learning_rate: float,
    num_warmup_steps: int,
    num_decay_steps: int,
    num_training_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0.0,
    num_cycles: float = 0.5,
) -> Schedule:
    r"""Warmup-stable-decay: warm up from ``m * lr`` to ``lr``, hold, decay to ``m * lr``, hold.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot
        \begin{cases} \max(0, f_\mathrm{warmup}(k / \max(1, w)) (1 - m) + m) & k < w \\
        1 & k < w + S \\
        \max(0, f_\mathrm{decay}((k - w - S) / \max(1, D)) (1 - m) + m) & k < w + S + D \\
        m & \text{otherwise} \end{cases}

    with ``f_warmup(p)`` = ``p`` (linear), ``(1 - cos(pi p)) / 2`` (cosine), ``1 - sqrt(1 - p)``
    (1-sqrt) and ``f_decay(p)`` = ``1 - p`` (linear), ``(1 + cos(2 pi c p)) / 2`` (cosine),
    ``1 - sqrt(p)`` (1-sqrt).

    Reproduces ``transformers.get_wsd_schedule(optimizer, w, D, T, S, warmup_type, decay_type,
    min_lr_ratio, num_cycles)``: ``S = T - w - D`` unless ``num_stable_steps`` is given, which wins
    (with transformers' warning) when both are.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      num_warmup_steps: ``w``, the number of warmup updates (>= 0).
      num_decay_steps: ``D``, the number of decay updates (>= 0).
      num_training_steps: ``T`` (>= ``w + D``), used when ``num_stable_steps`` is not given.
      num_stable_steps: ``S``, the number of updates at ``lr`` (>= 0).
      warmup_type: ``'linear'``, ``'cosine'`` or ``'1-sqrt'``.
      decay_type: ``'linear'``, ``'cosine'`` or ``'1-sqrt'``.
      min_lr_ratio: ``m``, the start and end rate as a ratio of ``lr``, in ``[0, 1]``.
      num_cycles: ``c``, cosine waves over the decay phase (>= 0; 0.5 decays once to ``m``).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.get_wsd_schedule(1.0, num_warmup_steps=2, num_decay_steps=2, num_training_steps=8)
      >>> [round(float(schedule(k)), 6) for k in range(9)]
      [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    num_warmup_steps = _check_steps("num_warmup_steps", num_warmup_steps)
    num_decay_steps = _check_steps("num_decay_steps", num_decay_steps)
    if num_training_steps is None and num_stable_steps is None:
        raise ValueError(
            "num_training_steps=None and num_stable_steps=None: either num_training_steps or "
            "num_stable_steps must be specified."
        )
    if num_stable_steps is None:
        num_training_steps = _check_steps("num_training_steps", num_training_steps)
        num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps
        if num_stable_steps < 0:
            raise ValueError(
                f"num_training_steps={num_training_steps!r} is invalid: expected an integer >= "
                f"num_warmup_steps + num_decay_steps = {num_warmup_steps + num_decay_steps}"
            )
    else:
        if num_training_steps is not None:
            _check_steps("num_training_steps", num_training_steps)
            warnings.warn(
                "Both num_training_steps and num_stable_steps are specified. num_stable_steps will be used.",
                stacklevel=2,
            )
        num_stable_steps = _check_steps("num_stable_steps", num_stable_steps)
    warmup_type = _validation.check_choice("warmup_type", warmup_type, WARMUP_TYPES)
    decay_type = _validation.check_choice("decay_type", decay_type, DECAY_TYPES)
    min_lr_ratio = _check_ratio("min_lr_ratio", min_lr_ratio)
    num_cycles = _check_num_cycles(num_cycles)

    warmup_length = max(1, num_warmup_steps)
    decay_length = max(1, num_decay_steps)
    stable_end = num_warmup_steps + num_stable_steps
    decay_end = stable_end + num_decay_steps

    def warmup_shape(count: Array) -> Array:
        progress = linear_warmup(count, warmup_length)
        if warmup_type == "linear":
            return progress
        if warmup_type == "cosine":
            return 0.5 * (1.0 - jnp.cos(math.pi * progress))
        # 1 - progress as (w - k) / w: exact numerator, one rounding.
        return 1.0 - jnp.sqrt(_as_float(warmup_length - count) / warmup_length)

    def decay_shape(steps: Array) -> Array:
        if decay_type == "linear":
            return _as_float(decay_length - steps) / decay_length
        if decay_type == "cosine":
            return _cosine_wave(steps, decay_length, num_cycles)
        # Outside the decay phase steps may be negative; where() discards those lanes.
        return 1.0 - jnp.sqrt(_as_float(steps) / decay_length)

    def schedule(count: Array) -> Array:
        count = jnp.asarray(count)
        warmup = jnp.maximum(0.0, warmup_shape(count) * (1.0 - min_lr_ratio) + min_lr_ratio)
        decay = jnp.maximum(0.0, decay_shape(count - stable_end) * (1.0 - min_lr_ratio) + min_lr_ratio)
        multiplier = jnp.where(
            count < num_warmup_steps,
            warmup,
            jnp.where(count < stable_end, 1.0, jnp.where(count < decay_end, decay, min_lr_ratio)),
        )
        return learning_rate * multiplier

    return schedule


SCHEDULER_NAMES = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)

# Names that take (learning_rate, num_warmup_steps, num_training_steps, **kwargs).
_WARMUP_AND_TRAINING_SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "linear": get_linear_schedule_with_warmup,
    "cosine": get_cosine_schedule_with_warmup,
    "cosine_with_restarts": get_cosine_with_hard_restarts_schedule_with_warmup,
    "polynomial": get_polynomial_decay_schedule_with_warmup,
    "cosine_with_min_lr": get_cosine_with_min_lr_schedule_with_warmup,
    "cosine_warmup_with_min_lr": get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
}


def _scheduler_name(name: Any) -> str:
    # transformers.SchedulerType is a str Enum: accept it, or its value, without importing it.
    value = getattr(name, "value", name)
    if not isinstance(value, str):
        raise TypeError(
            f"name={name!r} is invalid: expected a scheduler name (str or "
            f"transformers.SchedulerType), got {type(name).__name__}"
        )
    if value not in SCHEDULER_NAMES:
        raise ValueError(
            f"name={value!r} is invalid: expected one of {', '.join(map(repr, SCHEDULER_NAMES))}"
        )
    return value


@_validation.explains_torch_habits
def get_scheduler(
    name: Any,
    learning_rate: float,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: Mapping[str, Any] | None = None,
) -> Schedule | optax.GradientTransformationExtraArgs:
    """Any transformers schedule by name: ``transformers.get_scheduler`` for optax.

    ``get_scheduler(name, lr, w, T, kwargs)`` here is the schedule that
    ``transformers.get_scheduler(name, torch.optim.X(params, lr=lr), w, T, kwargs)`` applies,
    argument handling included: ``constant`` ignores everything but ``learning_rate``;
    ``constant_with_warmup`` ignores ``scheduler_specific_kwargs``; ``inverse_sqrt`` and
    ``warmup_stable_decay`` do not need ``num_training_steps``; any other keyword a schedule does
    not take raises ``TypeError``.

    Args:
      name: a ``transformers.SchedulerType`` or its string value (see :data:`SCHEDULER_NAMES`).
      learning_rate: the optimizer's ``lr`` (>= 0).
      num_warmup_steps: number of warmup updates; required by every name except ``constant``,
        ``reduce_lr_on_plateau`` and ``greedy``.
      num_training_steps: total number of updates; required by every name except those three,
        ``constant_with_warmup``, ``inverse_sqrt`` and ``warmup_stable_decay``.
      scheduler_specific_kwargs: the other keyword arguments of the named function (e.g.
        ``num_cycles``, ``lr_end``, ``power``, ``timescale``, ``min_lr_rate``,
        ``num_decay_steps``, ``patience``).

    Returns:
      An optax schedule ``count -> learning rate``; for ``reduce_lr_on_plateau`` and ``greedy``,
      the loss-driven transform of :func:`reduce_lr_on_plateau` or :func:`greedy_lr`
      (transformers returns a ``ReduceLROnPlateau`` or a ``GreedyLR`` there too).

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.get_scheduler("linear", 1.0, num_warmup_steps=2, num_training_steps=6)
      >>> [round(float(schedule(k)), 6) for k in range(7)]
      [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]
    """
    name = _scheduler_name(name)
    if scheduler_specific_kwargs is None:
        scheduler_specific_kwargs = {}
    if not isinstance(scheduler_specific_kwargs, Mapping):
        raise TypeError(
            f"scheduler_specific_kwargs={scheduler_specific_kwargs!r} is invalid: expected a "
            "dict of keyword arguments or None"
        )
    kwargs = dict(scheduler_specific_kwargs)

    if name == "constant":
        return get_constant_schedule(learning_rate)
    if name == "reduce_lr_on_plateau":
        return reduce_lr_on_plateau(learning_rate, **kwargs)
    if name == "greedy":
        return greedy_lr(learning_rate, **kwargs)
    if num_warmup_steps is None:
        raise ValueError(f"{name} requires `num_warmup_steps`, please provide that argument.")
    if name == "constant_with_warmup":
        return get_constant_schedule_with_warmup(learning_rate, num_warmup_steps)
    if name == "inverse_sqrt":
        return get_inverse_sqrt_schedule(learning_rate, num_warmup_steps, **kwargs)
    if name == "warmup_stable_decay":
        if "num_decay_steps" not in kwargs:
            raise TypeError(
                "warmup_stable_decay requires `num_decay_steps` in scheduler_specific_kwargs, "
                "e.g. scheduler_specific_kwargs={'num_decay_steps': 100}"
            )
        return get_wsd_schedule(
            learning_rate, num_warmup_steps, num_training_steps=num_training_steps, **kwargs
        )
    if num_training_steps is None:
        raise ValueError(f"{name} requires `num_training_steps`, please provide that argument.")
    return _WARMUP_AND_TRAINING_SCHEDULES[name](learning_rate, num_warmup_steps, num_training_steps, **kwargs)
