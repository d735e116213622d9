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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import _validation
from optax_bertadam.schedules._common import as_float as _as_float
from optax_bertadam.schedules._common import linear_warmup

Array = Any
Schedule = Callable[[Array], Array]

WARMUP_TYPES = ("linear", "cosine", "1-sqrt")
DECAY_TYPES = ("linear", "cosine", "1-sqrt")


def _check_learning_rate(learning_rate: Any) -> float:
    _validation.check_finite("learning_rate", learning_rate)
    return _validation.check_range("learning_rate", learning_rate, low=0.0)


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
    learning_rate = _check_learning_rate(learning_rate)

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
    learning_rate = _check_learning_rate(learning_rate)
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
    learning_rate = _check_learning_rate(learning_rate)
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
    learning_rate = _check_learning_rate(learning_rate)
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
    learning_rate = _check_learning_rate(learning_rate)
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
    learning_rate = _check_learning_rate(learning_rate)
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
    learning_rate = _check_learning_rate(learning_rate)
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
    learning_rate = _check_learning_rate(learning_rate)
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
    learning_rate = _check_learning_rate(learning_rate)
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


def check_scalar_value(value: Any) -> None:
    """Refuse a ``value=`` that is not a scalar (the loss or metric of one update)."""
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"value with shape {jnp.shape(value)} is invalid: expected a scalar (the loss or "
            "metric of this update)"
        )


def _scale_by_earlier_values(updates: Any, scale: Array, value: Any) -> Any:
    """The updates of a loss-driven transform: ``scale`` (from earlier values) times ``updates``.

    The rate of this update comes from earlier values only (PyTorch's ``scheduler.step(loss)``
    runs after ``optimizer.step()``); ``value``, which must be a scalar, decides later rates.
    """
    check_scalar_value(value)
    return jax.tree.map(lambda u: u * scale.astype(jnp.result_type(u)), updates)


class LossDrivenRule(NamedTuple):
    """How a loss-driven scheduler moves its rates: ``init()`` and ``step(state, value)``.

    ``state.learning_rate`` and ``state.scale`` are 0-d for one parameter group, or 1-d with one
    entry per group; ``best`` and the counters are shared, as PyTorch's scheduler keeps one set
    for all of its optimizer's groups. ``step`` folds in one ``value`` (``scheduler.step(value)``).
    """

    init: Callable[[], Any]
    step: Callable[[Any, Array], Any]


def _loss_driven_transform(rule: LossDrivenRule) -> optax.GradientTransformationExtraArgs:
    """The one-group transform of ``rule``: update ``k`` scaled by the rate values ``< k`` chose."""

    def init_fn(params: Any) -> Any:
        del params
        return rule.init()

    def update_fn(updates: Any, state: Any, params: Any = None, *, value: Array, **extra_args: Any):
        del params, extra_args
        return _scale_by_earlier_values(updates, state.scale, value), rule.step(state, value)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_group_values(name: str, value: Any, check: Callable[[str, Any], float]) -> np.ndarray:
    """``value`` (a number, or one number per parameter group) checked, as a float64 array."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{name}={value!r} is invalid: expected a number or one per group")
        return np.asarray([check(f"{name}[{i}]", v) for i, v in enumerate(value)], np.float64)
    return np.asarray(check(name, value), np.float64)


def _check_rate(name: str, value: Any) -> float:
    _validation.check_finite(name, value)
    return _validation.check_range(name, value, low=0.0)


def _refuse_group_lists(**bounds: Any) -> None:
    for name, bound in bounds.items():
        if isinstance(bound, (list, tuple)):
            raise TypeError(
                f"{name}={bound!r} is invalid: expected one number (an optax transform has no "
                "parameter groups; optax_bertadam.from_torch reproduces per-group bounds)"
            )


def _new_scale(new_lr: Array, initial: np.ndarray, old_scale: Array) -> Array:
    """``new_lr / initial``; where the initial rate is 0 every update is 0 and the scale stays."""
    if np.all(initial > 0.0):
        return new_lr / _as_float(initial)
    return jnp.where(initial > 0.0, new_lr / _as_float(np.where(initial > 0.0, initial, 1.0)), old_scale)


def _check_group_bound(name: str, value: Any, initial: np.ndarray) -> np.ndarray:
    """A rate bound (``min_lr``, ``max_lr``): one number, or one per group of ``initial``."""
    bound = _check_group_values(name, value, _check_rate)
    if bound.ndim and bound.shape != initial.shape:
        raise ValueError(
            f"{name}={value!r} is invalid: expected one number or {initial.size} (one per group)"
        )
    return bound


def _is_better_rule(mode: Any, threshold: Any, threshold_mode: Any) -> Callable[[Array, Array], Array]:
    """``is_better(value, best)`` of PyTorch's plateau test, its three arguments checked."""
    mode = _validation.check_choice("mode", mode, ("min", "max"))
    _validation.check_finite("threshold", threshold)
    threshold = _validation.check_range("threshold", threshold, low=0.0)
    threshold_mode = _validation.check_choice("threshold_mode", threshold_mode, ("rel", "abs"))

    def is_better(value: Array, best: Array) -> Array:
        if mode == "min":
            return value < (best * (1.0 - threshold) if threshold_mode == "rel" else best - threshold)
        return value > (best * (1.0 + threshold) if threshold_mode == "rel" else best + threshold)

    return is_better


def _rates_from_scheduler_state(
    initial: Any, scheduler_state: Mapping[str, Any], class_name: str
) -> tuple[Array, Array]:
    """``(learning_rate, scale)`` of a loss-driven state from the scheduler's ``_last_lr``.

    ``initial`` is the fresh state's ``learning_rate``: the rates the transform was built with.
    """
    rates = np.asarray([float(r) for r in scheduler_state["_last_lr"]], np.float64)
    initial = np.asarray(initial, np.float64)
    if rates.size != max(initial.size, 1):
        raise ValueError(
            f"scheduler_state of {class_name} has {rates.size} groups' rates (_last_lr) but the "
            f"transform was built for {initial.size}"
        )
    rates = rates.reshape(initial.shape)
    scale = np.where(initial > 0.0, rates / np.where(initial > 0.0, initial, 1.0), 1.0)
    return _as_float(rates), _as_float(scale)


def _missing_keys(scheduler_state: Mapping[str, Any], keys: tuple[str, ...], class_name: str) -> None:
    missing = [key for key in keys if key not in scheduler_state]
    if missing:
        raise ValueError(
            f"scheduler_state is invalid for {class_name}: it lacks {', '.join(missing)} (pass "
            "scheduler.state_dict())"
        )


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`reduce_lr_on_plateau`; PyTorch's ``ReduceLROnPlateau`` attributes.

    Attributes:
      learning_rate: the rate the *next* update runs at (``optimizer.param_groups[0]['lr']``).
      scale: ``learning_rate / initial learning rate``: what the next updates are multiplied by.
      best: the best value seen so far (``scheduler.best``).
      num_bad_epochs: values in a row without improvement (``scheduler.num_bad_epochs``).
      cooldown_counter: values left to ignore after a reduction (``scheduler.cooldown_counter``).
    """

    learning_rate: Array
    scale: Array
    best: Array
    num_bad_epochs: Array
    cooldown_counter: Array

    def next_learning_rate(self) -> Array:
        """The rate of the next update (:func:`optax_bertadam.get_lr` calls this)."""
        return self.learning_rate

    def with_scheduler_state(self, scheduler_state: Mapping[str, Any]) -> ReduceLROnPlateauState:
        """This fresh state moved to where a ``ReduceLROnPlateau`` is (its ``state_dict()``).

        :func:`optax_bertadam.load_torch_state_dict` calls this with ``scheduler_state=``.

        Returns:
          The state whose next update runs at the scheduler's ``_last_lr``.
        """
        keys = ("best", "num_bad_epochs", "cooldown_counter", "_last_lr")
        _missing_keys(scheduler_state, keys, "ReduceLROnPlateau")
        learning_rate, scale = _rates_from_scheduler_state(
            self.learning_rate, scheduler_state, "ReduceLROnPlateau"
        )
        return self._replace(
            learning_rate=learning_rate,
            scale=scale,
            best=_as_float(float(scheduler_state["best"])),
            num_bad_epochs=jnp.asarray(int(scheduler_state["num_bad_epochs"]), jnp.int32),
            cooldown_counter=jnp.asarray(int(scheduler_state["cooldown_counter"]), jnp.int32),
        )


@_validation.explains_torch_habits
def reduce_lr_on_plateau(
    learning_rate: float,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    r"""PyTorch's ``ReduceLROnPlateau`` as a transform that scales updates, driven by ``value=``.

    Reproduces ``transformers.get_scheduler("reduce_lr_on_plateau", optimizer,
    scheduler_specific_kwargs=kwargs)``, i.e. ``torch.optim.lr_scheduler.ReduceLROnPlateau(
    optimizer, **kwargs)`` with its defaults, for an optimizer built with ``lr=learning_rate``.
    Chain it *after* an optimizer with the same constant ``learning_rate``::

      tx = optax.chain(optax.adamw(learning_rate), reduce_lr_on_plateau(learning_rate))
      updates, state = tx.update(grads, state, params, value=loss)

    Every update is linear in the rate (AdamW's decoupled decay included), so multiplying it by
    ``scale = lr_now / learning_rate`` is running it at ``lr_now``.

    Timing, exactly PyTorch's ``loss.backward(); optimizer.step(); scheduler.step(loss)``: update
    ``k`` is multiplied by the scale that the values of updates ``0 .. k-1`` produced, and only
    then is its own ``value`` folded in, which decides the rate of update ``k + 1``. So the state
    after update ``k`` holds the rate update ``k + 1`` will use (as ``param_groups[0]['lr']`` after
    ``scheduler.step``), and ``value`` may be the loss at the parameters being updated or any
    validation metric. One call of ``update`` is one ``scheduler.step(value)``.
    :func:`optax_bertadam.get_lr` finds the state's ``learning_rate`` inside any optax state.

    Given ``value`` ``v``: it improves on ``best`` if ``v < best * (1 - threshold)`` (mode
    ``'min'``, threshold_mode ``'rel'``; ``v < best - threshold`` for ``'abs'``; the mirror images
    for mode ``'max'``); then ``num_bad_epochs`` is reset or incremented; during a cooldown it is
    zeroed and the cooldown counter decremented; once ``num_bad_epochs > patience`` the rate
    becomes ``max(lr * factor, min_lr)`` unless that lowers it by ``eps`` or less, the cooldown
    restarts and ``num_bad_epochs`` is zeroed. NaN never improves.

    Differences from ``optax.contrib.reduce_on_plateau``: that one reduces after ``patience`` bad
    values (PyTorch: after ``patience + 1``), applies a value to the update it arrives with, has
    no ``eps`` and works on the scale rather than the absolute rate.

    Args:
      learning_rate: the optimizer's (constant) ``lr`` (>= 0); ``min_lr`` and ``eps`` are
        absolute rates, as in PyTorch.
      mode: ``'min'`` (the value should decrease) or ``'max'``.
      factor: multiplier of the rate at a reduction, in ``[0, 1)``.
      patience: bad values tolerated before a reduction (>= 0).
      threshold: how much better a value must be to count as an improvement (>= 0).
      threshold_mode: ``'rel'`` or ``'abs'``.
      cooldown: values ignored after a reduction (>= 0).
      min_lr: lower bound of the rate (>= 0; one number: an optax transform has no param groups).
      eps: reductions of ``eps`` or less are skipped (>= 0).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose ``update`` requires ``value=``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.reduce_lr_on_plateau(1.0, factor=0.5, patience=1)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> for loss in (1.0, 1.0, 1.0):  # no improvement after the first value
      ...     updates, state = tx.update({"w": jnp.ones(2)}, state, params, value=loss)
      >>> updates["w"].tolist(), float(ob.get_lr(state))  # the next update runs at 0.5
      ([1.0, 1.0], 0.5)
    """
    _refuse_group_lists(learning_rate=learning_rate, min_lr=min_lr)
    return _loss_driven_transform(plateau_rule(
        learning_rate, mode=mode, factor=factor, patience=patience, threshold=threshold,
        threshold_mode=threshold_mode, cooldown=cooldown, min_lr=min_lr, eps=eps,
    ))


def plateau_rule(
    learning_rate: float | list[float],
    *,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float | list[float] = 0.0,
    eps: float = 1e-8,
) -> LossDrivenRule:
    """The :class:`LossDrivenRule` of PyTorch's ``ReduceLROnPlateau`` (see :func:`reduce_lr_on_plateau`).

    ``learning_rate`` and ``min_lr`` may give one number per parameter group (``min_lr`` as
    PyTorch's list); a reduction lowers every group's rate at once, each to
    ``max(lr_i * factor, min_lr_i)`` unless that lowers it by ``eps`` or less.

    Returns:
      The rule; ``rule.init()`` is a :class:`ReduceLROnPlateauState`.
    """
    initial = _check_group_values("learning_rate", learning_rate, _check_rate)
    is_better = _is_better_rule(mode, threshold, threshold_mode)
    factor = _validation.check_range("factor", factor, low=0.0, high=1.0, high_inclusive=False)
    patience = _validation.check_int("patience", patience, low=0)
    cooldown = _validation.check_int("cooldown", cooldown, low=0)
    min_lrs = _check_group_bound("min_lr", min_lr, initial)
    _validation.check_finite("eps", eps)
    eps = _validation.check_range("eps", eps, low=0.0)

    def init() -> ReduceLROnPlateauState:
        return ReduceLROnPlateauState(
            learning_rate=_as_float(initial),
            scale=jnp.ones_like(_as_float(initial)),
            best=_as_float(math.inf if mode == "min" else -math.inf),
            num_bad_epochs=jnp.asarray(0, jnp.int32),
            cooldown_counter=jnp.asarray(0, jnp.int32),
        )

    def step(state: ReduceLROnPlateauState, value: Array) -> ReduceLROnPlateauState:
        current = jnp.asarray(value).astype(state.best.dtype)
        improved = is_better(current, state.best)
        best = jnp.where(improved, current, state.best)
        num_bad_epochs = jnp.where(improved, 0, state.num_bad_epochs + 1)
        in_cooldown = state.cooldown_counter > 0
        cooldown_counter = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
        num_bad_epochs = jnp.where(in_cooldown, 0, num_bad_epochs)

        reduce = num_bad_epochs > patience
        reduced_lr = jnp.maximum(state.learning_rate * factor, _as_float(min_lrs))
        # A reduction that barely changes the rate is skipped, but still restarts the cooldown.
        new_lr = jnp.where(reduce & (state.learning_rate - reduced_lr > eps), reduced_lr, state.learning_rate)
        return ReduceLROnPlateauState(
            learning_rate=new_lr,
            scale=_new_scale(new_lr, initial, state.scale),
            best=best,
            num_bad_epochs=jnp.where(reduce, 0, num_bad_epochs).astype(jnp.int32),
            cooldown_counter=jnp.where(reduce, cooldown, cooldown_counter).astype(jnp.int32),
        )

    return LossDrivenRule(init, step)


class GreedyLRState(NamedTuple):
    """State of :func:`greedy_lr`; transformers' ``GreedyLR`` attributes.

    Attributes:
      learning_rate: the rate the *next* update runs at (``optimizer.param_groups[0]['lr']``).
      scale: ``learning_rate / initial learning rate``: what the next updates are multiplied by.
      best: the best (smoothed) value seen since the last reset (``scheduler.best``).
      num_bad_epochs: values in a row without improvement.
      num_good_epochs: values in a row with improvement.
      cooldown_counter: values left to ignore after a decrease.
      warmup_counter: values left to ignore after an increase.
      reset_start: decreases at ``min_lr`` left before everything is reset.
      window: the last ``window_size`` values, a ring buffer (``smooth=True``; else empty).
      window_sum: their running sum, updated as transformers' ``StreamingAverage`` does.
      window_count: how many values the window holds.
      window_next: the slot the next value overwrites.
    """

    learning_rate: Array
    scale: Array
    best: Array
    num_bad_epochs: Array
    num_good_epochs: Array
    cooldown_counter: Array
    warmup_counter: Array
    reset_start: Array
    window: Array
    window_sum: Array
    window_count: Array
    window_next: Array

    def next_learning_rate(self) -> Array:
        """The rate of the next update (:func:`optax_bertadam.get_lr` calls this)."""
        return self.learning_rate

    def with_scheduler_state(self, scheduler_state: Mapping[str, Any]) -> GreedyLRState:
        """This fresh state moved to where a transformers ``GreedyLR`` is (its ``state_dict()``).

        :func:`optax_bertadam.load_torch_state_dict` calls this with ``scheduler_state=``. The
        smoothing window (``_streaming_avg``: its values, oldest first, and their running sum)
        goes into the ring buffer with the oldest value in slot 0.

        Returns:
          The state whose next update runs at the scheduler's ``_last_lr``.
        """
        keys = ("best", "num_bad_epochs", "num_good_epochs", "cooldown_counter", "warmup_counter",
                "reset_start", "_last_lr")
        _missing_keys(scheduler_state, keys, "GreedyLR")
        learning_rate, scale = _rates_from_scheduler_state(
            self.learning_rate, scheduler_state, "GreedyLR"
        )
        window_size = self.window.shape[0]
        average = scheduler_state.get("_streaming_avg")
        if bool(window_size) != (average is not None):
            raise ValueError(
                f"scheduler_state is invalid: GreedyLR(smooth={average is not None}) but the "
                f"transform was built with smooth={bool(window_size)}"
            )
        window, window_sum, count = self.window, self.window_sum, 0
        if average is not None:
            values = [float(v) for v in average["values"]]
            if len(values) > window_size:
                raise ValueError(
                    f"scheduler_state is invalid: its window holds {len(values)} values, the "
                    f"transform's window_size is {window_size}"
                )
            count = len(values)
            window = window.at[:count].set(jnp.asarray(values, window.dtype))
            window_sum = _as_float(float(average["sum"]))

        def counter(key: str) -> Array:
            return jnp.asarray(int(scheduler_state[key]), jnp.int32)

        return self._replace(
            learning_rate=learning_rate,
            scale=scale,
            best=_as_float(float(scheduler_state["best"])),
            num_bad_epochs=counter("num_bad_epochs"),
            num_good_epochs=counter("num_good_epochs"),
            cooldown_counter=counter("cooldown_counter"),
            warmup_counter=counter("warmup_counter"),
            reset_start=counter("reset_start"),
            window=window,
            window_sum=window_sum,
            window_count=jnp.asarray(count, jnp.int32),
            window_next=jnp.asarray(count % window_size if window_size else 0, jnp.int32),
        )


def _times_double(x: Array, value: float) -> Array:
    """``x * value`` with ``value`` split into two floats of ``x``'s dtype.

    A rate multiplied again and again by a float32 rounding of ``factor`` drifts by that
    rounding times the number of steps; with the split only the rounding of each product
    remains, which does not accumulate systematically.
    """
    high = np.asarray(value, dtype=x.dtype)
    low = np.asarray(value - float(high), dtype=x.dtype)
    return x * high + x * low


@_validation.explains_torch_habits
def greedy_lr(
    learning_rate: float,
    mode: str = "min",
    factor: float = 0.95,
    patience: int = 10,
    threshold: float = 1e-6,
    threshold_mode: str = "abs",
    cooldown: int = 0,
    warmup: int = 0,
    min_lr: float = 1e-3,
    max_lr: float = 1.0,
    eps: float = 1e-8,
    verbose: bool = False,
    smooth: bool = False,
    window_size: int = 50,
    reset_start: int = 500,
) -> optax.GradientTransformationExtraArgs:
    r"""transformers' ``GreedyLR``: raise the rate while the value improves, lower it on plateaus.

    Reproduces ``transformers.get_scheduler("greedy", optimizer, scheduler_specific_kwargs=kwargs)``,
    i.e. ``transformers.optimization.GreedyLR(optimizer, **kwargs)``, for an optimizer built with
    ``lr=learning_rate``, exactly as :func:`reduce_lr_on_plateau` does for PyTorch's plateau
    scheduler: chain it after an optimizer with the same constant ``learning_rate`` and pass the
    loss or metric as ``value=``; one ``update`` is one ``scheduler.step(value)``, and update ``k``
    runs at the rate that values ``0 .. k-1`` produced::

      tx = optax.chain(optax.adamw(learning_rate), greedy_lr(learning_rate))
      updates, state = tx.update(grads, state, params, value=loss)

    One step, given ``value`` (first averaged over the last ``window_size`` values when
    ``smooth``): during a cooldown or warmup the counters are zeroed and the counter decremented;
    otherwise an improvement on ``best`` (``v < best - threshold`` for mode ``'min'`` and
    threshold_mode ``'abs'``, ``v < best * (1 - threshold)`` for ``'rel'``, mirrored for
    ``'max'``) counts a good value, anything else a bad one. More than ``patience`` good values in
    a row: ``lr <- min(lr / factor, max_lr)`` (skipped if it rises by ``eps`` or less) and a warmup
    starts; more than ``patience`` bad ones: ``lr <- max(lr * factor, min_lr)`` (skipped if it
    falls by ``eps`` or less) and a cooldown starts. Each decrease that leaves the rate at
    ``min_lr`` counts ``reset_start`` down; at 0 the rate, ``best``, the counters and the window
    go back to their initial values (an increase restores the count).

    Args:
      learning_rate: the optimizer's (constant) ``lr`` (>= 0).
      mode: ``'min'`` or ``'max'``.
      factor: in ``(0, 1)``: the rate is divided by it on improvement, multiplied on plateaus.
      patience: good or bad values tolerated before the rate changes (>= 0).
      threshold: how much better a value must be to count as an improvement (>= 0).
      threshold_mode: ``'rel'`` or ``'abs'``.
      cooldown: values ignored after a decrease (>= 0).
      warmup: values ignored after an increase (>= 0).
      min_lr: lower bound of the rate (>= 0; one number: an optax transform has no param groups).
      max_lr: upper bound of the rate (>= 0).
      eps: changes of the rate of ``eps`` or less are skipped (>= 0).
      verbose: must be ``False``: nothing can print from inside jit; read the rate with
        :func:`optax_bertadam.get_lr`.
      smooth: decide on the running average of the last ``window_size`` values.
      window_size: length of that average (>= 1).
      reset_start: decreases at ``min_lr`` before a reset (>= 0).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose ``update`` requires ``value=``.

    >>> tx = greedy_lr(0.1, patience=0, factor=0.5)
    >>> state = tx.init(jnp.zeros(1))
    >>> for loss in [1.0, 0.5, 0.25]:
    ...     _, state = tx.update(jnp.ones(1), state, value=loss)
    >>> round(float(state.learning_rate), 6)
    0.8
    """
    _refuse_group_lists(learning_rate=learning_rate, min_lr=min_lr, max_lr=max_lr)
    return _loss_driven_transform(greedy_rule(
        learning_rate, mode=mode, factor=factor, patience=patience, threshold=threshold,
        threshold_mode=threshold_mode, cooldown=cooldown, warmup=warmup, min_lr=min_lr,
        max_lr=max_lr, eps=eps, verbose=verbose, smooth=smooth, window_size=window_size,
        reset_start=reset_start,
    ))


def greedy_rule(
    learning_rate: float | list[float],
    *,
    mode: str = "min",
    factor: float = 0.95,
    patience: int = 10,
    threshold: float = 1e-6,
    threshold_mode: str = "abs",
    cooldown: int = 0,
    warmup: int = 0,
    min_lr: float | list[float] = 1e-3,
    max_lr: float | list[float] = 1.0,
    eps: float = 1e-8,
    verbose: bool = False,
    smooth: bool = False,
    window_size: int = 50,
    reset_start: int = 500,
) -> LossDrivenRule:
    """The :class:`LossDrivenRule` of transformers' ``GreedyLR`` (see :func:`greedy_lr`).

    ``learning_rate``, ``min_lr`` and ``max_lr`` may give one number per parameter group. A
    change moves every group at once, each within its own bounds; the reset countdown runs only
    while *every* group is at its ``min_lr`` (as ``GreedyLR._reduce_lr``), and a reset restores
    every group's initial rate.

    Returns:
      The rule; ``rule.init()`` is a :class:`GreedyLRState`.
    """
    initial = _check_group_values("learning_rate", learning_rate, _check_rate)
    is_better = _is_better_rule(mode, threshold, threshold_mode)
    factor = _validation.check_range(
        "factor", factor, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
    )
    patience = _validation.check_int("patience", patience, low=0)
    cooldown = _validation.check_int("cooldown", cooldown, low=0)
    warmup = _validation.check_int("warmup", warmup, low=0)
    min_lrs = _check_group_bound("min_lr", min_lr, initial)
    max_lrs = _check_group_bound("max_lr", max_lr, initial)
    _validation.check_finite("eps", eps)
    eps = _validation.check_range("eps", eps, low=0.0)
    if verbose is not False:
        raise ValueError(
            f"verbose={verbose!r} is invalid: expected False (nothing prints from inside jit; read "
            "the rate with optax_bertadam.get_lr(state))"
        )
    if not isinstance(smooth, bool):
        raise TypeError(f"smooth={smooth!r} is invalid: expected True or False")
    window_size = _validation.check_int("window_size", window_size, low=1)
    reset_start = _validation.check_int("reset_start", reset_start, low=0)
    worst = math.inf if mode == "min" else -math.inf

    def init() -> GreedyLRState:
        zero = jnp.asarray(0, jnp.int32)
        return GreedyLRState(
            learning_rate=_as_float(initial),
            scale=jnp.ones_like(_as_float(initial)),
            best=_as_float(worst),
            num_bad_epochs=zero,
            num_good_epochs=zero,
            cooldown_counter=zero,
            warmup_counter=zero,
            reset_start=jnp.asarray(reset_start, jnp.int32),
            window=jnp.zeros((window_size if smooth else 0,), dtype=float),
            window_sum=_as_float(0.0),
            window_count=zero,
            window_next=zero,
        )

    def step(state: GreedyLRState, value: Array) -> GreedyLRState:
        current = jnp.asarray(value).astype(state.best.dtype)
        window, window_sum, window_count, window_next = (
            state.window,
            state.window_sum,
            state.window_count,
            state.window_next,
        )
        if smooth:
            # StreamingAverage: sum += v, then sum -= the value that falls out of the window.
            full = window_count == window_size
            window_sum = window_sum + current
            window_sum = jnp.where(full, window_sum - window[window_next], window_sum)
            window = window.at[window_next].set(current)
            window_next = (window_next + 1) % window_size
            window_count = jnp.minimum(window_count + 1, window_size)
            current = window_sum / window_count.astype(current.dtype)

        waiting = (state.cooldown_counter > 0) | (state.warmup_counter > 0)
        improved = is_better(current, state.best) & ~waiting
        best = jnp.where(improved, current, state.best)
        num_good = jnp.where(waiting | ~improved, 0, state.num_good_epochs + 1)
        num_bad = jnp.where(waiting | improved, 0, state.num_bad_epochs + 1)
        cooldown_counter = jnp.where(
            state.cooldown_counter > 0, state.cooldown_counter - 1, state.cooldown_counter
        )
        warmup_counter = jnp.where(
            (state.cooldown_counter == 0) & (state.warmup_counter > 0),
            state.warmup_counter - 1,
            state.warmup_counter,
        )

        lr = state.learning_rate
        increase = ~waiting & (num_good > patience)
        decrease = ~waiting & ~increase & (num_bad > patience)
        if lr.dtype == jnp.float64:
            raised = jnp.minimum(lr / factor, _as_float(max_lrs))  # transformers' own arithmetic
            lowered = jnp.maximum(lr * factor, _as_float(min_lrs))
        else:
            raised = jnp.minimum(_times_double(lr, 1.0 / factor), _as_float(max_lrs))
            lowered = jnp.maximum(_times_double(lr, factor), _as_float(min_lrs))
        new_lr = jnp.where(increase & (raised - lr > eps), raised, lr)
        new_lr = jnp.where(decrease & (lr - lowered > eps), lowered, new_lr)
        # The countdown to a reset runs only while every group is at its floor.
        at_min = decrease & jnp.all(~(new_lr > _as_float(min_lrs)))
        reset_count = jnp.where(
            increase, reset_start, jnp.where(at_min, state.reset_start - 1, state.reset_start)
        )
        reset = at_min & (reset_count <= 0)

        # A reset restores the initial state; the cooldown that follows a decrease still starts.
        new_lr = jnp.where(reset, _as_float(initial), new_lr)
        best = jnp.where(reset, _as_float(worst), best)
        num_good = jnp.where(increase | reset, 0, num_good)
        num_bad = jnp.where(decrease, 0, num_bad)
        warmup_counter = jnp.where(increase, warmup, jnp.where(reset, 0, warmup_counter))
        cooldown_counter = jnp.where(decrease, cooldown, cooldown_counter)
        reset_count = jnp.where(reset, reset_start, reset_count)
        if smooth:
            window_sum = jnp.where(reset, 0.0, window_sum).astype(window_sum.dtype)
            window_count = jnp.where(reset, 0, window_count)
            window_next = jnp.where(reset, 0, window_next)
        return GreedyLRState(
            learning_rate=new_lr,
            scale=_new_scale(new_lr, initial, state.scale),
            best=best,
            num_bad_epochs=num_bad.astype(jnp.int32),
            num_good_epochs=num_good.astype(jnp.int32),
            cooldown_counter=cooldown_counter.astype(jnp.int32),
            warmup_counter=warmup_counter.astype(jnp.int32),
            reset_start=reset_count.astype(jnp.int32),
            window=window,
            window_sum=window_sum,
            window_count=window_count.astype(jnp.int32),
            window_next=window_next.astype(jnp.int32),
        )

    return LossDrivenRule(init, step)


# transformers.SchedulerType values, in its order.
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
