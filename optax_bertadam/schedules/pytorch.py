"""Every ``torch.optim.lr_scheduler`` class as an optax schedule, with PyTorch's own numbers.

A PyTorch scheduler driven the usual way (``optimizer.step()`` then ``scheduler.step()``) runs
update ``k`` at ``scheduler.get_last_lr()`` after ``k`` calls of ``scheduler.step()``; here that
rate is ``schedule(k)``, ``k`` being optax's count of updates already applied. The first argument
of each function is the optimizer's ``lr`` for that parameter group (``CyclicLR`` and
``OneCycleLR``, which overwrite it, take their own ``base_lr`` / ``max_lr`` instead); the other
arguments have PyTorch's names and defaults.

Many PyTorch schedulers are "chainable": ``get_lr`` multiplies the *current* rate by a factor
(``StepLR``, ``ExponentialLR``, ``LinearLR``, ...) instead of evaluating a closed form. For those the
product telescopes and the closed form below agrees with PyTorch to rounding. The exception is
``CosineAnnealingLR``, whose recursion past ``T_max`` divides by numbers close to 0 and drifts
from the textbook cosine (by ~1e-11 of the rate for ``T_max=1000, eta_min=0.1*lr``):
:func:`cosine_annealing_lr` reproduces that recursion (see there).

Schedulers that move another hyperparameter (``CyclicLR`` and ``OneCycleLR`` cycle ``momentum``,
or ``betas[0]`` for Adam-family optimizers, by default) return :class:`CycleSchedules`, the rate
and the momentum schedule together, so the momentum cannot be dropped by accident::

  cycle = one_cycle_lr(1e-3, total_steps=1000)
  tx = optax.inject_hyperparams(optax.adamw)(learning_rate=cycle.learning_rate, b1=cycle.momentum)

``ReduceLROnPlateau`` depends on the loss, so it is a gradient transformation:
:func:`optax_bertadam.schedules.transformers.reduce_lr_on_plateau`. :data:`PYTORCH_SCHEDULERS`
maps every PyTorch class name to its optax factory.

Branches on the step (a milestone, the end of a phase or a cycle) are decided on the integer
count; the rest is computed in the default float dtype (float32, or float64 under
``jax.enable_x64(True)``). Arguments are checked when the schedule is built.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import functools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_bertadam import _validation
from optax_bertadam.schedules._common import as_float as _as_float
from optax_bertadam.schedules.classic import lambda_lr, sequential_lr
from optax_bertadam.schedules.loss_driven import reduce_lr_on_plateau
from optax_bertadam.transforms import BoundSchedule, ScaledSchedule

Array = Any
Schedule = Callable[[Array], Array]


# ------------------------------------------------------------------------------------ helpers


def _as_int(count: Array) -> Array:
    # Default integer dtype: int64 under x64, so that counts times periods do not overflow there.
    return jnp.asarray(count, dtype=int)


def _x64() -> bool:
    return jnp.asarray(0.0, dtype=float).dtype == jnp.float64


def _divide_like_python(numerator: Array, denominator: float) -> Array:
    # XLA turns `x / c` with a constant or broadcast c into `x * (1 / c)`, an ulp away from
    # Python's correctly rounded division. Where an ulp is amplified (the cosine next to its
    # troughs) the divisor is made an array that depends on the numerator, which XLA divides for
    # real; NaN numerators stay NaN either way.
    return numerator / jnp.where(jnp.isnan(numerator), 1.0, denominator)


def _check_gamma(value: Any) -> float:
    _validation.check_finite("gamma", value)
    return _validation.check_range("gamma", value, low=0.0)


# gamma ** n for an integer n >= 0 is the product of three table entries, one per 12-bit piece
# of n (n < 2 ** 36), each computed in double precision when the schedule is built.
_POWER_PIECE_BITS, _POWER_PIECES = 12, 3


def _power(gamma: float, exponent: Array) -> Array:
    """``gamma ** n`` for an integer ``n >= 0``, to a few ulps in float32 for any ``n``.

    ``n = a + 2**12 b + 2**24 c`` and ``gamma ** n = T0[a] T1[b] T2[c]``, each table entry
    ``gamma ** (2**(12 i) j)`` rounded once from double precision: a float32 ``exp(n log gamma)``
    would carry the rounding of ``n log gamma``, an error growing with ``n`` (an LR range test's
    ``ExponentialLR(gamma > 1)`` parted from PyTorch by 1e-6 of its peak after 1000 updates).
    """
    n = _as_int(exponent)
    size = 1 << _POWER_PIECE_BITS
    with np.errstate(over="ignore", under="ignore"):
        tables = [np.float64(gamma) ** (np.arange(size, dtype=np.float64) * float(size ** piece))
                  for piece in range(_POWER_PIECES)]
    n = jnp.clip(n, 0, min(size ** _POWER_PIECES - 1, int(jnp.iinfo(n.dtype).max)))
    result = _as_float(1.0)
    for piece, table in enumerate(tables):
        index = (n >> (_POWER_PIECE_BITS * piece)) & (size - 1)
        with np.errstate(over="ignore"):  # beyond float32: inf, as the rate itself would be
            result = result * _as_float(table)[index]
    return result


def _per_count(scalar_fn: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """``scalar_fn`` (written for one count: it loops) applied to each count of an array too,
    as optax's own schedules may be called on ``jnp.arange(n)``."""

    def fn(count: Array) -> Array:
        count = jnp.asarray(count)
        if count.ndim == 0:
            return scalar_fn(count)
        return jax.vmap(scalar_fn)(count.reshape(-1)).reshape(count.shape)

    return fn


class CycleSchedules(NamedTuple):
    """The rate and, when the scheduler cycles it, the momentum of a cyclical schedule.

    PyTorch's ``CyclicLR`` and ``OneCycleLR`` (with ``cycle_momentum=True``, the default) set
    ``momentum`` (SGD, RMSprop) or ``betas[0]`` (Adam-family) of the optimizer at every step, in
    antiphase with the rate. Pass both to the optimizer, e.g.
    ``optax.inject_hyperparams(optax.sgd)(learning_rate=s.learning_rate, momentum=s.momentum)``
    or ``optax.inject_hyperparams(optax.adamw)(learning_rate=s.learning_rate, b1=s.momentum)``.

    Attributes:
      learning_rate: ``count -> learning rate``.
      momentum: ``count -> momentum / beta1`` of the same update; ``None`` when
        ``cycle_momentum=False`` (PyTorch leaves the momentum alone then).
    """

    learning_rate: Schedule
    momentum: Schedule | None


# --------------------------------------------------------------------- multiplicative schedulers


# The factors of the multiplicative schedulers, module-level so that a schedule is a value
# (BoundSchedule) and equal arguments give equal schedules.


def _step_lr_factor(count: Array, step_size: int, gamma: float) -> Array:
    return _power(gamma, _as_int(count) // step_size)


def _multi_step_lr_factor(count: Array, milestones: tuple[int, ...], gamma: float) -> Array:
    passed = jnp.searchsorted(np.asarray(milestones, dtype=np.int64), _as_int(count), side="right")
    return _power(gamma, passed)


def _constant_lr_factor(count: Array, factor: float, total_iters: int) -> Array:
    return jnp.where(_as_int(count) < total_iters, _as_float(factor), _as_float(1.0))


def _linear_lr_factor(count: Array, start_factor: float, end_factor: float, total_iters: int) -> Array:
    done = _as_float(jnp.minimum(_as_int(count), total_iters))
    return start_factor + (end_factor - start_factor) * done / total_iters


def _exponential_lr_factor(count: Array, gamma: float) -> Array:
    return _power(gamma, _as_int(count))


def _polynomial_lr_factor(count: Array, total_iters: int, power: float) -> Array:
    remaining = _as_float(total_iters - jnp.minimum(_as_int(count), total_iters)) / total_iters
    return remaining**power


@_validation.explains_torch_habits
def step_lr(learning_rate: float, step_size: int, gamma: float = 0.1) -> ScaledSchedule:
    r"""Decay by ``gamma`` every ``step_size`` updates: ``torch.optim.lr_scheduler.StepLR``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot \gamma^{\lfloor k / s \rfloor}

    Reproduces ``StepLR(optimizer, step_size, gamma)`` for an optimizer built with
    ``lr=learning_rate``.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      step_size: ``s``, the period of the decay (>= 1).
      gamma: the factor of each decay (>= 0).

    Returns:
      A :class:`~optax_bertadam.ScaledSchedule` (a pure, jittable function of the update count).

    >>> schedule = step_lr(0.1, step_size=2, gamma=0.5)
    >>> [round(float(schedule(k)), 6) for k in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    step_size = _validation.check_int("step_size", step_size, low=1)
    gamma = _check_gamma(gamma)

    return ScaledSchedule(learning_rate, BoundSchedule(_step_lr_factor, (step_size, gamma)), "StepLR")


@_validation.explains_torch_habits
def multi_step_lr(learning_rate: float, milestones: Sequence[int], gamma: float = 0.1) -> ScaledSchedule:
    r"""Decay by ``gamma`` at each milestone: ``torch.optim.lr_scheduler.MultiStepLR``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot \gamma^{\#\{i \,:\, m_i \le k\}}

    Reproduces ``MultiStepLR(optimizer, milestones, gamma)``. As there, a milestone listed twice
    decays twice, and milestones need not be sorted.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      milestones: update counts (integers >= 0) at which the rate is multiplied by ``gamma``.
      gamma: the factor of each decay (>= 0).

    Returns:
      A :class:`~optax_bertadam.ScaledSchedule`.

    >>> schedule = multi_step_lr(1.0, milestones=[2, 4, 4], gamma=0.5)
    >>> [float(schedule(k)) for k in range(6)]
    [1.0, 1.0, 0.5, 0.5, 0.125, 0.125]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    try:
        milestones = list(milestones)
    except TypeError:
        raise TypeError(f"milestones={milestones!r} is invalid: expected a list of update counts") from None
    checked = sorted(
        _validation.check_int(f"milestones[{index}]", milestone, low=0)
        for index, milestone in enumerate(milestones)
    )
    gamma = _check_gamma(gamma)
    return ScaledSchedule(
        learning_rate, BoundSchedule(_multi_step_lr_factor, (tuple(checked), gamma)), "MultiStepLR"
    )


@_validation.explains_torch_habits
def constant_lr(learning_rate: float, factor: float = 1.0 / 3, total_iters: int = 5) -> ScaledSchedule:
    r"""``factor * lr`` for the first ``total_iters`` updates: ``torch.optim.lr_scheduler.ConstantLR``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot \begin{cases} f & k < T \\ 1 & k \ge T \end{cases}

    Reproduces ``ConstantLR(optimizer, factor, total_iters)``.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      factor: ``f``, in ``(0, 1]`` (PyTorch allows 0 but then divides by it at ``total_iters``).
      total_iters: ``T`` (>= 1; with 0 PyTorch's step-by-step and closed forms disagree: its
        rate stays at ``f * lr`` forever, or restarts at ``lr`` inside ``SequentialLR``).

    Returns:
      A :class:`~optax_bertadam.ScaledSchedule`.

    >>> schedule = constant_lr(1.0, factor=0.5, total_iters=2)
    >>> [float(schedule(k)) for k in range(4)]
    [0.5, 0.5, 1.0, 1.0]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    factor = _validation.check_range("factor", factor, low=0.0, high=1.0, low_inclusive=False)
    total_iters = _validation.check_int("total_iters", total_iters, low=1)

    return ScaledSchedule(
        learning_rate, BoundSchedule(_constant_lr_factor, (factor, total_iters)), "ConstantLR"
    )


@_validation.explains_torch_habits
def linear_lr(
    learning_rate: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
) -> ScaledSchedule:
    r"""Linear ramp of the multiplier from ``start_factor`` to ``end_factor``: ``LinearLR``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot \left(s + (e - s) \frac{\min(k, T)}{T}\right)

    Reproduces ``torch.optim.lr_scheduler.LinearLR(optimizer, start_factor, end_factor,
    total_iters)``, whose step-by-step factors telescope to this.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      start_factor: ``s``, in ``(0, 1]`` as PyTorch requires.
      end_factor: ``e``, in ``[0, 1]`` as PyTorch requires.
      total_iters: ``T`` (>= 1; PyTorch's closed form divides by it).

    Returns:
      A :class:`~optax_bertadam.ScaledSchedule`.

    >>> schedule = linear_lr(1.0, start_factor=0.25, end_factor=1.0, total_iters=3)
    >>> [float(schedule(k)) for k in range(5)]
    [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    start_factor = _validation.check_range(
        "start_factor", start_factor, low=0.0, high=1.0, low_inclusive=False
    )
    end_factor = _validation.check_range("end_factor", end_factor, low=0.0, high=1.0)
    total_iters = _validation.check_int("total_iters", total_iters, low=1)

    return ScaledSchedule(
        learning_rate,
        BoundSchedule(_linear_lr_factor, (start_factor, end_factor, total_iters)),
        "LinearLR",
    )


@_validation.explains_torch_habits
def exponential_lr(learning_rate: float, gamma: float) -> ScaledSchedule:
    r"""Decay by ``gamma`` every update: ``torch.optim.lr_scheduler.ExponentialLR``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot \gamma^{k}

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      gamma: the factor per update (>= 0).

    Returns:
      A :class:`~optax_bertadam.ScaledSchedule`.

    >>> schedule = exponential_lr(1.0, gamma=0.5)
    >>> [float(schedule(k)) for k in range(4)]
    [1.0, 0.5, 0.25, 0.125]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    gamma = _check_gamma(gamma)

    return ScaledSchedule(learning_rate, BoundSchedule(_exponential_lr_factor, (gamma,)), "ExponentialLR")


@_validation.explains_torch_habits
def polynomial_lr(learning_rate: float, total_iters: int = 5, power: float = 1.0) -> ScaledSchedule:
    r"""Polynomial decay to 0 at ``total_iters``: ``torch.optim.lr_scheduler.PolynomialLR``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot \left(1 - \frac{\min(k, T)}{T}\right)^{p}

    Reproduces ``PolynomialLR(optimizer, total_iters, power)``, whose step-by-step factors
    telescope to this; the rate stays at 0 from ``T`` on (at ``lr`` for ``p = 0``).

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      total_iters: ``T`` (>= 1; PyTorch's closed form divides by it).
      power: ``p`` (>= 0; a negative power makes PyTorch divide by 0 at ``T``).

    Returns:
      A :class:`~optax_bertadam.ScaledSchedule`.

    >>> schedule = polynomial_lr(1.0, total_iters=4, power=2.0)
    >>> [float(schedule(k)) for k in range(6)]
    [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    total_iters = _validation.check_int("total_iters", total_iters, low=1)
    _validation.check_finite("power", power)
    power = _validation.check_range("power", power, low=0.0)

    return ScaledSchedule(
        learning_rate, BoundSchedule(_polynomial_lr_factor, (total_iters, power)), "PolynomialLR"
    )


@_validation.explains_torch_habits
def multiplicative_lr(
    learning_rate: float, lr_lambda: Callable[[Array], Array], num_steps: int = 0
) -> ScaledSchedule:
    r"""The rate times ``lr_lambda(k)`` at every update ``k >= 1``: ``MultiplicativeLR``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot \prod_{j=1}^{k} \lambda(j)

    Reproduces ``torch.optim.lr_scheduler.MultiplicativeLR(optimizer, lr_lambda)``. The product
    has no closed form for a general ``lr_lambda``: the running products for counts
    ``0 .. num_steps`` are computed in double precision when the schedule is built (in PyTorch's
    order, so float64 agrees to the last bit); a later count multiplies the remaining factors in
    a loop, in the default float dtype, at one ``lr_lambda`` call per update past ``num_steps``:
    in float64 it is exact, in float32 each factor's rounding adds up (``lr_lambda = 0.999``:
    4.9e-6 of the peak after 900 updates). Pass the length of training as ``num_steps``.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      lr_lambda: the factor as a function of the integer update count, written with
        ``jax.numpy`` (``jnp.where`` for branches) so that it traces; it must return a scalar.
      num_steps: counts up to which the products are tabulated when built (>= 0).

    Returns:
      A :class:`~optax_bertadam.ScaledSchedule`.

    >>> schedule = multiplicative_lr(1.0, lambda k: jnp.where(k < 3, 0.5, 1.0), num_steps=10)
    >>> [float(schedule(k)) for k in range(5)]
    [1.0, 0.5, 0.25, 0.25, 0.25]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    lr_lambda = _validation.check_jnp_function("lr_lambda", lr_lambda)
    num_steps = _validation.check_int("num_steps", num_steps, low=0)
    with jax.enable_x64(True):
        factors = np.asarray(jax.vmap(lr_lambda)(jnp.arange(1, num_steps + 1)), dtype=np.float64)
    table = np.cumprod(np.concatenate([[1.0], factors]))

    def multiplier(count: Array) -> Array:
        count = _as_int(count)
        tabulated = _as_float(table)[jnp.clip(count, 0, num_steps)]

        def times_next_factor(carry):
            step, product = carry
            return step + 1, product * _as_float(lr_lambda(step + 1))

        # Zero iterations while count is within the table.
        _, product = jax.lax.while_loop(
            lambda carry: carry[0] < count,
            times_next_factor,
            (jnp.asarray(num_steps, count.dtype), tabulated),
        )
        return product

    return ScaledSchedule(learning_rate, _per_count(multiplier), "MultiplicativeLR")


# The multiplicative schedulers: each step multiplies the current rate, so that their factors
# compose by multiplication inside a ChainedScheduler.
_MULTIPLICATIVE = ("StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR",
                   "MultiplicativeLR", "ChainedScheduler")


def _product_of(count: Array, multipliers: tuple[Callable[[Array], Array], ...]) -> Array:
    product = multipliers[0](count)
    for other in multipliers[1:]:
        product = product * other(count)
    return product


@_validation.explains_torch_habits
def chained_scheduler(schedulers: Sequence[ScaledSchedule]) -> ScaledSchedule:
    r"""Several multiplicative schedulers at once: ``torch.optim.lr_scheduler.ChainedScheduler``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot \prod_i \mathrm{multiplier}_i(k)

    ``ChainedScheduler([s_1, s_2, ...])`` calls every member's ``step()`` in turn; each member
    multiplies the rate the previous one left, so their factors multiply. Members are the
    schedules of :func:`step_lr`, :func:`multi_step_lr`, :func:`constant_lr`, :func:`linear_lr`,
    :func:`exponential_lr`, :func:`polynomial_lr`, :func:`multiplicative_lr` (or another
    :func:`chained_scheduler`), built with the same ``learning_rate`` (one optimizer).
    Schedulers that set the rate rather than multiply it (``LambdaLR``, ``CosineAnnealingLR``,
    ``CyclicLR``, ``OneCycleLR``, ``CosineAnnealingWarmRestarts``) are refused: inside a chain
    PyTorch mixes their value with one step of the other members' factors, which no closed form
    of the count reproduces; :func:`replay_torch_schedulers` reproduces such chains step by step.

    Args:
      schedulers: one or more :class:`~optax_bertadam.ScaledSchedule`.

    Returns:
      A :class:`~optax_bertadam.ScaledSchedule`.

    >>> warmup = constant_lr(1.0, factor=0.5, total_iters=2)
    >>> decay = exponential_lr(1.0, gamma=0.5)
    >>> schedule = chained_scheduler([warmup, decay])
    >>> [float(schedule(k)) for k in range(4)]
    [0.5, 0.25, 0.25, 0.125]
    """
    schedulers = list(schedulers)
    if not schedulers:
        raise ValueError("schedulers=[] is invalid: expected at least one scheduler")
    for index, member in enumerate(schedulers):
        if not isinstance(member, ScaledSchedule) or member.scheduler not in _MULTIPLICATIVE:
            name = getattr(member, "scheduler", type(member).__name__)
            raise TypeError(
                f"schedulers[{index}]={member!r} is invalid: ChainedScheduler reproduces "
                "multiplicative schedulers only (step_lr, multi_step_lr, constant_lr, linear_lr, "
                f"exponential_lr, polynomial_lr, multiplicative_lr, chained_scheduler), got {name}"
            )
    learning_rate = schedulers[0].learning_rate
    for index, member in enumerate(schedulers):
        if member.learning_rate != learning_rate:
            raise ValueError(
                f"schedulers[{index}] has learning_rate={member.learning_rate!r}, but "
                f"schedulers[0] has {learning_rate!r}: the members of a ChainedScheduler drive one "
                "optimizer, build them with the same learning_rate"
            )
    multipliers = tuple(member.multiplier for member in schedulers)
    return ScaledSchedule(learning_rate, BoundSchedule(_product_of, (multipliers,)), "ChainedScheduler")


# --------------------------------------------------------------------------- cosine schedulers


def _cosine_first_steps(learning_rate: float, t_max: int, eta_min: float) -> int:
    """How many steps after each restart of the recursion are replayed one by one.

    Past a trough PyTorch stores ``eta_min + x`` with a tiny ``x`` and recovers ``x`` as
    ``lr - eta_min`` at the next step, losing ``eps * eta_min / x`` of it; ``x`` grows like
    ``(pi m / T)^2`` over the ``m`` steps after the restart, so the losses after step ``m0`` add
    up to about ``eps * eta_min * 4 T^2 / (pi^2 (lr - eta_min) m0)``. Replaying ``m0`` steps
    keeps that below 1e-14 of the rate.
    """
    amplitude = abs(learning_rate - eta_min)
    if eta_min == 0.0 or amplitude == 0.0:
        return 0
    estimate = 2.3e-16 * abs(eta_min) * 4 * t_max**2 / (math.pi**2 * amplitude * 1e-14)
    return min(2 * t_max - 1, math.ceil(estimate))


@_validation.explains_torch_habits
def cosine_annealing_lr(learning_rate: float, T_max: int, eta_min: float = 0.0) -> Schedule:  # noqa: N803
    r"""Cosine from ``lr`` to ``eta_min`` over ``T_max`` updates and back: ``CosineAnnealingLR``.

    .. math::
      \mathrm{lr}_k = \eta_{min} + (\mathrm{lr} - \eta_{min}) \,
        \frac{1 + \cos(\pi k / T_{max})}{2}

    Reproduces ``torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max, eta_min)`` for any
    number of updates, past ``T_max`` included (the rate keeps oscillating with period
    ``2 T_max``). PyTorch computes each rate from the previous one,
    ``eta_min + (lr_{k-1} - eta_min) (1 + cos(pi k/T)) / (1 + cos(pi (k-1)/T))``, restarting the
    climb after each trough at ``lr_{k-1} + (lr - eta_min)(1 - cos(pi/T))/2``; past the first
    trough the divisions by numbers close to 0 make it drift from the formula above by up to
    ~1e-11 of the rate. In float64 this schedule follows PyTorch's recursion: it evaluates
    ``cos(pi * k / T)`` as Python does (correctly rounded division), replays the first steps
    after each trough one by one and continues in closed form from there, which agrees with
    PyTorch to ~1e-14 of the rate at any count (on CPU, whose float64 cosine is the C library's).
    In float32 it is the formula above, reduced modulo ``2 T_max`` on the integer count.

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      T_max: half the period, in updates (>= 1).
      eta_min: the rate at the troughs (>= 0).

    Returns:
      A pure, jittable function of the update count.

    >>> schedule = cosine_annealing_lr(1.0, T_max=2)
    >>> [round(float(schedule(k)), 6) for k in range(5)]
    [1.0, 0.5, 0.0, 0.5, 1.0]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    t_max = _validation.check_int("T_max", T_max, low=1)
    eta_min = _validation.check_learning_rate("eta_min", eta_min)
    first_steps = _cosine_first_steps(learning_rate, t_max, eta_min)
    # The rate one step past each trough, in PyTorch's order of operations.
    restart_lr = eta_min + (learning_rate - eta_min) * (1 - math.cos(math.pi / t_max)) / 2

    def cos_like_python(step: Array) -> Array:
        return jnp.cos(_divide_like_python(math.pi * _as_float(step), float(t_max)))

    def float64_schedule(count: Array) -> Array:
        descent = eta_min + (learning_rate - eta_min) * (1.0 + cos_like_python(count)) / 2
        restart = t_max + 1 + 2 * t_max * ((count - t_max - 1) // (2 * t_max))
        since = count - restart

        def replay(i, lr):
            step = restart + i
            ratio = (1.0 + cos_like_python(step)) / (1.0 + cos_like_python(step - 1))
            return jnp.where(i <= since, ratio * (lr - eta_min) + eta_min, lr)

        replayed = jax.lax.fori_loop(1, first_steps + 1, replay, _as_float(restart_lr))
        pivot = restart + jnp.minimum(since, first_steps)
        continued = eta_min + (replayed - eta_min) * (
            (1.0 + cos_like_python(count)) / (1.0 + cos_like_python(pivot))
        )
        ascent = jnp.where(since > first_steps, continued, replayed)
        return jnp.where(count <= t_max, descent, ascent)

    def schedule(count: Array) -> Array:
        count = _as_int(count)
        if _x64():
            return _per_count(float64_schedule)(count)
        phase = _as_float(count % (2 * t_max)) / t_max
        return eta_min + (learning_rate - eta_min) * (1.0 + jnp.cos(math.pi * phase)) / 2

    return schedule


@_validation.explains_torch_habits
def cosine_annealing_warm_restarts(
    learning_rate: float,
    T_0: int,  # noqa: N803
    T_mult: int = 1,  # noqa: N803
    eta_min: float = 0.0,
) -> Schedule:
    r"""Cosine annealing restarted every ``T_i`` updates (SGDR): ``CosineAnnealingWarmRestarts``.

    .. math::
      \mathrm{lr}_k = \eta_{min} + (\mathrm{lr} - \eta_{min}) \,
        \frac{1 + \cos(\pi T_{cur} / T_i)}{2}

    with ``T_cur`` the updates since the last restart and ``T_i = T_0 T_mult^i`` the length of
    the current cycle. Reproduces ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
    optimizer, T_0, T_mult, eta_min)`` stepped without an epoch argument. The restarts are
    computed as integers when built (up to count 2**62).

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      T_0: length of the first cycle (>= 1).
      T_mult: growth factor of the cycle length after each restart (integer >= 1).
      eta_min: the lowest rate (>= 0).

    Returns:
      A pure, jittable function of the update count.

    >>> schedule = cosine_annealing_warm_restarts(1.0, T_0=2, T_mult=2)
    >>> [round(float(schedule(k)), 6) for k in range(7)]
    [1.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    t_0 = _validation.check_int("T_0", T_0, low=1)
    t_mult = _validation.check_int("T_mult", T_mult, low=1)
    eta_min = _validation.check_learning_rate("eta_min", eta_min)
    starts, lengths = [0], [t_0]
    while t_mult > 1 and starts[-1] + lengths[-1] < 2**62:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * t_mult)
    # Every start is below 2**62, so it fits int64; the last cycle's length (up to 2**62 * T_mult)
    # may not, and it only divides: it is a float, as in PyTorch's T_cur / T_i, capped at 2**200
    # (beyond, T_cur / T_i of any count an integer type holds is below 2**-136: cos is 1).
    starts_table = np.asarray(starts, dtype=np.int64)
    lengths_table = np.asarray([float(min(length, 2**200)) for length in lengths], dtype=np.float64)

    def schedule(count: Array) -> Array:
        count = _as_int(count)
        if t_mult == 1:
            t_cur, t_i = count % t_0, jnp.asarray(t_0)
        else:
            # Restarts beyond the range of the count's integer type are never reached.
            largest = np.iinfo(count.dtype).max
            starts = jnp.asarray(np.minimum(starts_table, largest), count.dtype)
            cycle = jnp.searchsorted(starts, count, side="right") - 1
            t_cur = count - starts[cycle]
            t_i = _as_float(lengths_table)[cycle]
        angle = math.pi * _as_float(t_cur) / _as_float(t_i)
        return eta_min + (learning_rate - eta_min) * (1.0 + jnp.cos(angle)) / 2

    return schedule


# ------------------------------------------------------------------------ cyclical schedulers


_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


@_validation.explains_torch_habits
def cyclic_lr(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[Array], Array] | None = None,
    scale_mode: str = "cycle",
    cycle_momentum: bool = True,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
) -> CycleSchedules:
    r"""Triangular cycles between ``base_lr`` and ``max_lr`` (CLR): ``torch.optim.lr_scheduler.CyclicLR``.

    With ``N = up + down``, cycle ``c = 1 + floor(k / N)`` and ``x = k / N + 1 - c``:

    .. math::
      h = \begin{cases} x / r & x \le r \\ (x - 1)/(r - 1) & x > r \end{cases}, \quad
      r = \mathrm{up} / N, \qquad
      \mathrm{lr}_k = \mathrm{base} + (\mathrm{max} - \mathrm{base})\, h\, \sigma, \qquad
      \mathrm{m}_k = m_{max} - (m_{max} - m_{base})\, h\, \sigma

    where ``sigma = scale_fn(c)`` (``scale_mode='cycle'``) or ``scale_fn(k)`` (``'iterations'``):
    1 for ``'triangular'``, ``1 / 2**(c-1)`` for ``'triangular2'``, ``gamma**k`` for
    ``'exp_range'``. Reproduces ``CyclicLR(optimizer, base_lr, max_lr, ...)``, which overwrites
    the optimizer's ``lr`` with ``base_lr`` (and its momentum with ``max_momentum``).

    Args:
      base_lr: the lower rate (>= 0).
      max_lr: the upper rate (>= 0).
      step_size_up: updates of the rising half of a cycle (integer >= 1).
      step_size_down: updates of the falling half (integer >= 0); ``None`` for ``step_size_up``.
      mode: ``'triangular'``, ``'triangular2'`` or ``'exp_range'``; ignored with ``scale_fn``.
      gamma: the base of ``'exp_range'`` (>= 0).
      scale_fn: a custom ``sigma`` written with ``jax.numpy``, of the integer cycle or count.
      scale_mode: ``'cycle'`` or ``'iterations'``: what ``scale_fn`` receives.
      cycle_momentum: also return the momentum schedule (PyTorch's default).
      base_momentum: momentum at the peak rate.
      max_momentum: momentum at ``base_lr``.

    Returns:
      :class:`CycleSchedules` (``momentum`` is ``None`` when ``cycle_momentum=False``).

    >>> cycle = cyclic_lr(0.1, 1.0, step_size_up=2)
    >>> [round(float(cycle.learning_rate(k)), 6) for k in range(5)]
    [0.1, 0.55, 1.0, 0.55, 0.1]
    >>> [round(float(cycle.momentum(k)), 6) for k in range(3)]
    [0.9, 0.85, 0.8]
    """
    base_lr = _validation.check_learning_rate("base_lr", base_lr)
    max_lr = _validation.check_learning_rate("max_lr", max_lr)
    up = _validation.check_int("step_size_up", step_size_up, low=1)
    down = up if step_size_down is None else _validation.check_int("step_size_down", step_size_down, low=0)
    gamma = _check_gamma(gamma)
    if scale_fn is None:
        mode = _validation.check_choice("mode", mode, _CYCLIC_MODES)
        scale_mode = "iterations" if mode == "exp_range" else "cycle"
    else:
        scale_fn = _validation.check_jnp_function("scale_fn", scale_fn)
        scale_mode = _validation.check_choice("scale_mode", scale_mode, ("cycle", "iterations"))
    if not isinstance(cycle_momentum, bool):
        raise TypeError(f"cycle_momentum={cycle_momentum!r} is invalid: expected True or False")
    base_momentum = _validation.check_finite("base_momentum", base_momentum)
    max_momentum = _validation.check_finite("max_momentum", max_momentum)
    total = up + down
    step_ratio = up / total

    def scale(cycle: Array, count: Array) -> Array:
        argument = cycle if scale_mode == "cycle" else count
        if scale_fn is not None:
            return _as_float(scale_fn(argument))
        if mode == "triangular":
            return _as_float(1.0)
        if mode == "triangular2":
            return jnp.ldexp(_as_float(1.0), (1 - argument).astype(jnp.int32))
        return _power(gamma, argument)

    def height(count: Array) -> tuple[Array, Array]:
        """The position in the cycle ``h`` times ``sigma``, as PyTorch computes them."""
        count = _as_int(count)
        cycle = 1 + count // total
        if _x64():
            # PyTorch's own rounding: x = 1 + k / N - c, compared with r.
            x = (1.0 + _divide_like_python(_as_float(count), float(total))) - _as_float(cycle)
            rising = _divide_like_python(x, step_ratio)
            falling = _divide_like_python(x - 1, step_ratio - 1) if down else rising
            h = jnp.where(x <= step_ratio, rising, falling)
        else:
            # The position within the cycle as an integer: float32 keeps it exact.
            position = count - (cycle - 1) * total
            h = jnp.where(
                position <= up, _as_float(position) / up, _as_float(total - position) / max(down, 1)
            )
        return h, scale(cycle, count)

    def learning_rate(count: Array) -> Array:
        h, sigma = height(count)
        return base_lr + (max_lr - base_lr) * h * sigma

    def momentum(count: Array) -> Array:
        h, sigma = height(count)
        return max_momentum - (max_momentum - base_momentum) * h * sigma

    return CycleSchedules(learning_rate, momentum if cycle_momentum else None)


@_validation.explains_torch_habits
def one_cycle_lr(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> CycleSchedules:
    r"""The 1cycle policy (super-convergence): ``torch.optim.lr_scheduler.OneCycleLR``.

    The rate goes from ``initial = max_lr / div_factor`` up to ``max_lr`` over the first
    ``pct_start * total_steps`` updates, then down to ``initial / final_div_factor`` at
    ``total_steps - 1`` (with ``three_phase``: back to ``initial`` first, then down). Each phase
    anneals from ``a`` to ``b`` as

    .. math::
      \mathrm{cos}: \; b + \frac{a - b}{2} (1 + \cos(\pi p)), \qquad
      \mathrm{linear}: \; (b - a) p + a, \qquad p = \frac{k - s}{e - s}

    with PyTorch's phase ends ``e = pct_start * total_steps - 1`` (``2 pct_start total_steps -
    2`` for the second of three) and ``total_steps - 1``. The momentum moves the other way
    between ``max_momentum`` and ``base_momentum``. Reproduces ``OneCycleLR(optimizer, max_lr,
    ...)``, which overwrites the optimizer's ``lr`` (and ``momentum`` or ``betas[0]``). PyTorch
    raises once stepped more than ``total_steps`` times; past count ``total_steps`` this schedule
    holds its value at ``total_steps``.

    Args:
      max_lr: the peak rate (>= 0).
      total_steps: the number of updates (integer >= 1); or give ``epochs`` and
        ``steps_per_epoch`` instead.
      epochs: number of epochs (integer >= 1), with ``steps_per_epoch``.
      steps_per_epoch: updates per epoch (integer >= 1), with ``epochs``.
      pct_start: fraction of the updates spent rising, in ``[0, 1]``.
      anneal_strategy: ``'cos'`` or ``'linear'``.
      cycle_momentum: also return the momentum schedule (PyTorch's default).
      base_momentum: momentum at the peak rate.
      max_momentum: momentum at the start and end.
      div_factor: ``max_lr / initial rate`` (> 0).
      final_div_factor: ``initial rate / final rate`` (> 0).
      three_phase: rise, fall back to the initial rate, then anneal to the final rate.

    Returns:
      :class:`CycleSchedules` (``momentum`` is ``None`` when ``cycle_momentum=False``).

    >>> cycle = one_cycle_lr(1.0, total_steps=5, pct_start=0.4, anneal_strategy="linear",
    ...                      div_factor=10.0, final_div_factor=1.0)
    >>> [round(float(cycle.learning_rate(k)), 6) for k in range(5)]
    [0.1, 1.0, 0.7, 0.4, 0.1]
    >>> [round(float(cycle.momentum(k)), 6) for k in range(3)]
    [0.95, 0.85, 0.883333]
    """
    max_lr = _validation.check_learning_rate("max_lr", max_lr)
    if total_steps is not None:
        total_steps = _validation.check_int("total_steps", total_steps, low=1)
    elif epochs is not None and steps_per_epoch is not None:
        total_steps = _validation.check_int("epochs", epochs, low=1) * _validation.check_int(
            "steps_per_epoch", steps_per_epoch, low=1
        )
    else:
        raise ValueError("total_steps=None is invalid: give total_steps, or epochs and steps_per_epoch")
    pct_start = _validation.check_range("pct_start", pct_start, low=0.0, high=1.0)
    anneal_strategy = _validation.check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
    for name, flag in (("cycle_momentum", cycle_momentum), ("three_phase", three_phase)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}={flag!r} is invalid: expected True or False")
    base_momentum = _validation.check_finite("base_momentum", base_momentum)
    max_momentum = _validation.check_finite("max_momentum", max_momentum)
    _validation.check_finite("div_factor", div_factor)
    div_factor = _validation.check_range("div_factor", div_factor, low=0.0, low_inclusive=False)
    _validation.check_finite("final_div_factor", final_div_factor)
    final_div_factor = _validation.check_range(
        "final_div_factor", final_div_factor, low=0.0, low_inclusive=False
    )

    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    rise_end = float(pct_start * total_steps) - 1
    # (end step, start lr, end lr, start momentum, end momentum), PyTorch's phases.
    if three_phase:
        phases = [
            (rise_end, initial_lr, max_lr, max_momentum, base_momentum),
            (float(2 * pct_start * total_steps) - 2, max_lr, initial_lr, base_momentum, max_momentum),
            (total_steps - 1, initial_lr, min_lr, max_momentum, max_momentum),
        ]
    else:
        phases = [
            (rise_end, initial_lr, max_lr, max_momentum, base_momentum),
            (total_steps - 1, max_lr, min_lr, base_momentum, max_momentum),
        ]
    # PyTorch picks the first phase whose end is >= the step (the last one otherwise) and starts
    # it at the previous end; a phase that some step 0 .. total_steps falls in must have length.
    starts = [0.0] + [phase[0] for phase in phases[:-1]]
    last_counts = [math.floor(phase[0]) for phase in phases[:-1]] + [total_steps]
    first_count = 0
    for index, (phase, start, last) in enumerate(zip(phases, starts, last_counts, strict=True)):
        if first_count <= last and phase[0] == start:
            raise ValueError(
                f"pct_start={pct_start!r} is invalid with total_steps={total_steps}: phase {index} of "
                "OneCycleLR would have no length (PyTorch divides by zero there); choose pct_start so "
                "that pct_start * total_steps is not 1"
            )
        first_count = max(first_count, last + 1)

    def anneal(start: Array, end: Array, pct: Array) -> Array:
        if anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (jnp.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def evaluate(count: Array, values: int) -> Array:
        count = jnp.minimum(_as_int(count), total_steps)
        step = _as_float(count)
        result = _as_float(0.0)
        # From the last phase back, so that the first phase that applies wins.
        for index in reversed(range(len(phases))):
            end, start = phases[index][0], starts[index]
            pct = (step - start) / (end - start)
            value = anneal(phases[index][values], phases[index][values + 1], pct)
            result = value if index == len(phases) - 1 else jnp.where(count <= math.floor(end), value, result)
        return result

    def learning_rate(count: Array) -> Array:
        return evaluate(count, 1)

    def momentum(count: Array) -> Array:
        return evaluate(count, 3)

    return CycleSchedules(learning_rate, momentum if cycle_momentum else None)


# ------------------------------------------------------------------------------------ SWALR


def swa_lr(
    learning_rate: float, swa_lr: float, anneal_epochs: int = 10, anneal_strategy: str = "cos"
) -> Schedule:
    r"""Anneal to the constant ``swa_lr`` over ``anneal_epochs`` steps: ``swa_utils.SWALR``.

    With ``t_k = min(1, k / max(1, A))`` (``k = max(1, k)`` when ``A = 0``) and
    ``alpha = (1 - cos(pi t)) / 2`` (``'cos'``) or ``alpha = t`` (``'linear'``):

    .. math::
      \mathrm{lr}_k = \mathrm{swa\_lr} \cdot \alpha(t_k) + \mathrm{lr} \cdot (1 - \alpha(t_k))

    Reproduces ``torch.optim.swa_utils.SWALR(optimizer, swa_lr, anneal_epochs, anneal_strategy)``
    stepped once per update from when it takes over: ``k`` counts its ``step()`` calls (its
    ``_step_count - 1``) and ``learning_rate`` is the group's ``lr`` when it took over (the
    optimizer's ``lr`` if built on a fresh optimizer; in the usual SWA loop, the rate the other
    scheduler left at the SWA start). PyTorch recovers ``lr`` from the current rate at every step
    (``(lr_k - alpha swa_lr) / (1 - alpha)``); the closed form above agrees with that recursion
    to ~1e-14 of the larger rate.

    Args:
      learning_rate: the rate when SWALR takes over (>= 0).
      swa_lr: the rate annealed to, held after ``anneal_epochs`` steps (>= 0).
      anneal_epochs: ``A``, the length of the annealing (integer >= 0).
      anneal_strategy: ``'cos'`` or ``'linear'``.

    Returns:
      A pure, jittable function of the count of SWALR steps.

    >>> schedule = swa_lr(1.0, swa_lr=0.5, anneal_epochs=2, anneal_strategy="linear")
    >>> [float(schedule(k)) for k in range(4)]
    [1.0, 0.75, 0.5, 0.5]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    target = _validation.check_learning_rate("swa_lr", swa_lr)
    anneal_epochs = _validation.check_int("anneal_epochs", anneal_epochs, low=0)
    anneal_strategy = _validation.check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))

    def schedule(count: Array) -> Array:
        step = _as_int(count)
        if anneal_epochs == 0:
            step = jnp.maximum(step, 1)
        t = jnp.clip(_as_float(step) / max(1, anneal_epochs), 0.0, 1.0)
        alpha = (1 - jnp.cos(math.pi * t)) / 2 if anneal_strategy == "cos" else t
        return target * alpha + learning_rate * (1 - alpha)

    return schedule


# ------------------------------------------------------------ PyTorch's stepping, replayed

# Each class's constructor options (PyTorch's names), required ones first with no default.
_REQUIRED = object()
_REPLAY_OPTIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "LambdaLR": {"lr_lambda": _REQUIRED},
    "MultiplicativeLR": {"lr_lambda": _REQUIRED},
    "StepLR": {"step_size": _REQUIRED, "gamma": 0.1},
    "MultiStepLR": {"milestones": _REQUIRED, "gamma": 0.1},
    "ConstantLR": {"factor": 1.0 / 3, "total_iters": 5},
    "LinearLR": {"start_factor": 1.0 / 3, "end_factor": 1.0, "total_iters": 5},
    "ExponentialLR": {"gamma": _REQUIRED},
    "PolynomialLR": {"total_iters": 5, "power": 1.0},
    "CosineAnnealingLR": {"T_max": _REQUIRED, "eta_min": 0.0},
    "CosineAnnealingWarmRestarts": {"T_0": _REQUIRED, "T_mult": 1, "eta_min": 0.0},
    "CyclicLR": {"base_lr": _REQUIRED, "max_lr": _REQUIRED, "step_size_up": 2000,
                 "step_size_down": None, "mode": "triangular", "gamma": 1.0,
                 "cycle_momentum": True, "base_momentum": 0.8, "max_momentum": 0.9},
    "OneCycleLR": {"max_lr": _REQUIRED, "total_steps": _REQUIRED, "pct_start": 0.3,
                   "anneal_strategy": "cos", "cycle_momentum": True, "base_momentum": 0.85,
                   "max_momentum": 0.95, "div_factor": 25.0, "final_div_factor": 1e4,
                   "three_phase": False},
    "SWALR": {"swa_lr": _REQUIRED, "anneal_epochs": 10, "anneal_strategy": "cos"},
    "SequentialLR": {},
    "ChainedScheduler": {},
})
_COMPOSITES = ("SequentialLR", "ChainedScheduler")


@dataclasses.dataclass(frozen=True)
class TorchScheduler:
    """A PyTorch scheduler as values, for :func:`replay_torch_schedulers`: one parameter group's.

    Attributes:
      kind: the class name: a ``torch.optim.lr_scheduler`` class (``ReduceLROnPlateau``
        excepted) or ``"SWALR"`` (``torch.optim.swa_utils``).
      options: its constructor arguments with PyTorch's names and defaults, as this group's
        values (``max_lr=0.1``, not a list); ``lr_lambda`` a function of the integer count
        written with ``jax.numpy``; ``learning_rate`` (optional) the scheduler's ``base_lrs``
        entry when it differs from the group's ``initial_lr`` at its construction. A mapping is
        stored as sorted ``(name, value)`` pairs.
      members: the ``schedulers`` of a ``SequentialLR`` / ``ChainedScheduler``, in order.
      milestones: a ``SequentialLR``'s milestones.

    Example:
      >>> warmup = TorchScheduler("LinearLR", {"start_factor": 0.5, "total_iters": 2})
      >>> chain = TorchScheduler("ChainedScheduler", members=(
      ...     warmup, TorchScheduler("CosineAnnealingLR", {"T_max": 4, "eta_min": 0.1})))
      >>> chain.kind, [member.kind for member in chain.members]
      ('ChainedScheduler', ['LinearLR', 'CosineAnnealingLR'])
    """

    kind: str
    options: Any = ()
    members: tuple[TorchScheduler, ...] = ()
    milestones: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        options = dict(self.options.items() if isinstance(self.options, Mapping) else self.options)
        if isinstance(options.get("milestones"), (list, tuple)):
            options["milestones"] = tuple(options["milestones"])
        object.__setattr__(self, "options", tuple(sorted(options.items())))
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def option(self, name: str) -> Any:
        """The option ``name``, or PyTorch's default for it.

        Returns:
          The value (``None`` for an absent ``learning_rate``).
        """
        given = dict(self.options)
        if name in given:
            return given[name]
        return _REPLAY_OPTIONS.get(self.kind, {}).get(name)


def _check_torch_scheduler(scheduler: Any, where: str) -> None:
    if not isinstance(scheduler, TorchScheduler):
        raise TypeError(f"{where}={scheduler!r} is invalid: expected a TorchScheduler")
    known = _REPLAY_OPTIONS.get(scheduler.kind)
    if known is None:
        raise ValueError(
            f"{where}.kind={scheduler.kind!r} is invalid: expected one of {', '.join(_REPLAY_OPTIONS)}"
        )
    given = dict(scheduler.options)
    for name in given:
        if name not in known and name != "learning_rate":
            raise ValueError(
                f"{where}.options[{name!r}] is invalid for {scheduler.kind}: expected one of "
                f"{', '.join(['learning_rate', *known])}"
            )
    for name, default in known.items():
        if default is _REQUIRED and name not in given:
            raise ValueError(f"{where}.options has no {name!r}: {scheduler.kind} requires it")
    if "lr_lambda" in known:
        _validation.check_jnp_function(f"{where}.options['lr_lambda']", given["lr_lambda"])
    if scheduler.kind not in _COMPOSITES:
        if scheduler.members or scheduler.milestones:
            raise ValueError(f"{where} is a {scheduler.kind}: it has no members or milestones")
        return
    if not scheduler.members:
        raise ValueError(f"{where}.members=() is invalid: expected at least one scheduler")
    if scheduler.kind == "ChainedScheduler" and scheduler.milestones:
        raise ValueError(f"{where} is a ChainedScheduler: it has no milestones")
    if scheduler.kind == "SequentialLR":
        if len(scheduler.milestones) != len(scheduler.members) - 1:
            raise ValueError(
                f"{where}.milestones={scheduler.milestones!r} is invalid: expected "
                f"{len(scheduler.members) - 1}, one fewer than the members"
            )
        for index, milestone in enumerate(scheduler.milestones):
            _validation.check_int(f"{where}.milestones[{index}]", milestone)
        for index, member in enumerate(scheduler.members):
            if index and member.kind in _COMPOSITES:
                # At its milestone SequentialLR calls member._update_lr(0), which a composite
                # does not have (PyTorch raises NotImplementedError from get_lr).
                raise ValueError(
                    f"{where}.members[{index}] is a {member.kind} after the first position of a "
                    "SequentialLR, which PyTorch cannot restart at its milestone (it raises "
                    "NotImplementedError there); it may only come first"
                )
    for index, member in enumerate(scheduler.members):
        _check_torch_scheduler(member, f"{where}.members[{index}]")


class _HostFunction:
    """A jnp function of the integer count evaluated in float64 on the host, in chunks."""

    _CHUNK = 4096

    def __init__(self, function: Callable[[Array], Array]):
        self._function = function
        self._chunks: dict[int, np.ndarray] = {}

    def __call__(self, k: int) -> float:
        chunk, offset = divmod(k, self._CHUNK)
        if chunk not in self._chunks:
            with jax.enable_x64(True):
                counts = jnp.arange(chunk * self._CHUNK, (chunk + 1) * self._CHUNK)
                self._chunks[chunk] = np.asarray(jax.vmap(self._function)(counts), np.float64)
        return float(self._chunks[chunk][offset])


class _Group:
    """One parameter group as the schedulers see it: ``lr``, the momentum and the keys they set."""

    def __init__(self, lr: float):
        self.lr = lr
        self.momentum: float | None = None
        self.keys: dict[str, float] = {}


class _Leaf:
    """One PyTorch scheduler object, stepped as its class steps (``LRScheduler`` and overrides)."""

    # Classes with _get_closed_form_lr, used by _update_lr(0) at a SequentialLR milestone.
    _CLOSED_FORM = ("StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR",
                    "PolynomialLR", "CosineAnnealingLR")

    def __init__(self, spec: TorchScheduler):
        self.kind = spec.kind
        self.o = {name: spec.option(name) for name in (*_REPLAY_OPTIONS[spec.kind], "learning_rate")}
        self.base = 0.0
        self.last_epoch = -1
        self.step_count = 0
        has_lambda = "lr_lambda" in _REPLAY_OPTIONS[self.kind]
        self.lam = _HostFunction(self.o["lr_lambda"]) if has_lambda else None
        if self.kind == "MultiStepLR":
            self.milestones = collections.Counter(self.o["milestones"])
        if self.kind == "CyclicLR":
            up = float(self.o["step_size_up"])
            down = float(self.o["step_size_down"]) if self.o["step_size_down"] is not None else up
            self.total_size = up + down
            self.step_ratio = up / self.total_size
        if self.kind == "OneCycleLR":
            total, pct = self.o["total_steps"], self.o["pct_start"]
            # (end step, start lr key, end lr key, start momentum key, end momentum key)
            rise = (float(pct * total) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum")
            if self.o["three_phase"]:
                self.phases = [
                    rise,
                    (float(2 * pct * total) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                    (total - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
                ]
            else:
                self.phases = [rise, (total - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        self.held = False  # OneCycleLR stepped past total_steps (PyTorch raises)

    def has_momentum(self) -> bool:
        return self.kind in ("CyclicLR", "OneCycleLR") and bool(self.o["cycle_momentum"])

    def construct(self, g: _Group) -> None:
        o = self.o
        if self.kind == "CyclicLR":
            g.lr = o["base_lr"]
            if o["cycle_momentum"]:
                g.momentum = o["max_momentum"]
                g.keys.update(max_momentum=o["max_momentum"], base_momentum=o["base_momentum"])
        if self.kind == "OneCycleLR":
            initial = o["max_lr"] / o["div_factor"]
            g.keys.update(initial_lr=initial, max_lr=o["max_lr"], min_lr=initial / o["final_div_factor"])
            if o["cycle_momentum"]:
                g.momentum = o["max_momentum"]
                g.keys.update(max_momentum=o["max_momentum"], base_momentum=o["base_momentum"])
        if self.kind == "SWALR":
            g.keys["swa_lr"] = o["swa_lr"]
        g.keys.setdefault("initial_lr", g.lr)
        self.base = g.keys["initial_lr"] if o["learning_rate"] is None else o["learning_rate"]
        if self.kind == "CosineAnnealingWarmRestarts":
            self.t_i, self.t_cur = o["T_0"], -1
        self.last_epoch = -1
        self.initial_step(g)
        if self.kind == "CyclicLR":
            # torch's CyclicLR replaces base_lrs only after LRScheduler.__init__, whose construction
            # step ran on the group's initial_lr: its own base_lr when it is the first scheduler, an
            # earlier scheduler's initial_lr when it is built after one (count 0 then keeps it).
            self.base = o["base_lr"]

    def initial_step(self, g: _Group) -> None:
        self.step_count = 0
        self.step(g, initial=True)

    def step(self, g: _Group, initial: bool = False) -> None:
        if self.kind == "CosineAnnealingWarmRestarts":  # its own step(), no _step_count
            if self.last_epoch < 0:
                epoch = 0
                self.t_i, self.t_cur = self.o["T_0"], 0
            else:
                epoch = self.last_epoch + 1
                self.t_cur += 1
                if self.t_cur >= self.t_i:
                    self.t_cur %= self.t_i
                    self.t_i *= self.o["T_mult"]
            self.last_epoch = epoch
            g.lr = self.get_lr(g, initial)
            return
        self.step_count += 1
        self.last_epoch += 1
        g.lr = self.get_lr(g, initial)

    def update_lr0(self, g: _Group) -> None:
        self.last_epoch = 0
        g.lr = self.closed_form() if self.kind in self._CLOSED_FORM else self.get_lr(g, False)

    def undo(self) -> None:
        self.last_epoch -= 1

    def closed_form(self) -> float:
        o, e, base = self.o, self.last_epoch, self.base
        if self.kind == "StepLR":
            return base * o["gamma"] ** (e // o["step_size"])
        if self.kind == "MultiStepLR":
            return base * o["gamma"] ** bisect.bisect_right(sorted(self.milestones.elements()), e)
        if self.kind == "ConstantLR":
            return base * (o["factor"] + (e >= o["total_iters"]) * (1 - o["factor"]))
        if self.kind == "LinearLR":
            s, f, t = o["start_factor"], o["end_factor"], o["total_iters"]
            return base * (s + (f - s) * min(t, e) / t)
        if self.kind == "ExponentialLR":
            return base * o["gamma"] ** e
        if self.kind == "PolynomialLR":
            t = o["total_iters"]
            return base * (1.0 - min(t, e) / t) ** o["power"]
        eta = o["eta_min"]  # CosineAnnealingLR
        return eta + (base - eta) * (1 + math.cos(math.pi * e / o["T_max"])) / 2

    def get_lr(self, g: _Group, initial: bool) -> float:  # noqa: C901 (one branch per class)
        o, e, lr, base, kind = self.o, self.last_epoch, g.lr, self.base, self.kind
        if kind == "LambdaLR":
            return base * self.lam(e)
        if kind == "MultiplicativeLR":
            return lr if initial else lr * self.lam(e)
        if kind == "StepLR":
            return lr if e == 0 or e % o["step_size"] != 0 else lr * o["gamma"]
        if kind == "MultiStepLR":
            return lr * o["gamma"] ** self.milestones[e] if e in self.milestones else lr
        if kind == "ConstantLR":
            if e == 0:
                return lr * o["factor"]
            return lr if e != o["total_iters"] else lr * (1.0 / o["factor"])
        if kind == "LinearLR":
            s, f, t = o["start_factor"], o["end_factor"], o["total_iters"]
            if e == 0:
                return lr * s
            if initial or e > t:
                return lr
            return lr * (1.0 + (f - s) / (t * s + (e - 1) * (f - s)))
        if kind == "ExponentialLR":
            return lr if initial else lr * o["gamma"]
        if kind == "PolynomialLR":
            t = o["total_iters"]
            if initial or e > t:
                return lr
            return lr * ((1.0 - e / t) / (1.0 - (e - 1) / t)) ** o["power"]
        if kind == "CosineAnnealingLR":
            t, eta = o["T_max"], o["eta_min"]
            if initial:
                return lr
            if self.step_count == 1 and e > 0:
                return eta + (base - eta) * (1 + math.cos(e * math.pi / t)) / 2
            if (e - 1 - t) % (2 * t) == 0:
                return lr + (base - eta) * (1 - math.cos(math.pi / t)) / 2
            return (1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t)) * (lr - eta) + eta
        if kind == "CosineAnnealingWarmRestarts":
            eta = o["eta_min"]
            return eta + (base - eta) * (1 + math.cos(math.pi * self.t_cur / self.t_i)) / 2
        if kind == "CyclicLR":
            return self._cyclic(g)
        if kind == "OneCycleLR":
            return self._one_cycle(g)
        # SWALR
        step = self.step_count - 1
        if o["anneal_epochs"] == 0:
            step = max(1, step)
        anneal = _swa_alpha_cos if o["anneal_strategy"] == "cos" else _swa_alpha_linear
        prev_alpha = anneal(max(0, min(1, (step - 1) / max(1, o["anneal_epochs"]))))
        swa = g.keys["swa_lr"]
        prev = swa if prev_alpha == 1 else (lr - prev_alpha * swa) / (1 - prev_alpha)
        alpha = anneal(max(0, min(1, step / max(1, o["anneal_epochs"]))))
        return swa * alpha + prev * (1 - alpha)

    def _cyclic(self, g: _Group) -> float:
        o, e = self.o, self.last_epoch
        cycle = math.floor(1 + e / self.total_size)
        x = 1.0 + e / self.total_size - cycle
        factor = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        if o["mode"] == "triangular":
            scale = 1.0
        elif o["mode"] == "triangular2":
            # torch's 1 / 2.0**(c - 1), exact as a power of two; past 1024 cycles torch's float
            # power overflows (OverflowError at that step), and this one goes to 0 as the closed
            # form does, instead of failing the whole tabulation when from_torch builds it.
            scale = 0.5 ** (cycle - 1)
        else:
            scale = o["gamma"] ** e
        if o["cycle_momentum"]:
            g.momentum = o["max_momentum"] - (o["max_momentum"] - o["base_momentum"]) * factor * scale
        return self.base + (o["max_lr"] - self.base) * factor * scale

    def _one_cycle(self, g: _Group) -> float:
        o, step = self.o, self.last_epoch
        if step > o["total_steps"] or self.held:
            # PyTorch raises here; the rate (and momentum) hold their last values, as in one_cycle_lr.
            self.held = True
            return g.lr
        if o["anneal_strategy"] == "cos":
            def anneal(start, end, pct):
                return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        else:
            def anneal(start, end, pct):
                return (end - start) * pct + start
        start = 0.0
        for index, (end, lr_a, lr_b, m_a, m_b) in enumerate(self.phases):
            if step <= end or index == len(self.phases) - 1:
                pct = (step - start) / (end - start)
                if o["cycle_momentum"]:
                    g.momentum = anneal(g.keys[m_a], g.keys[m_b], pct)
                return anneal(g.keys[lr_a], g.keys[lr_b], pct)
            start = end
        raise AssertionError("unreachable")


def _swa_alpha_cos(t: float) -> float:
    return (1 - math.cos(math.pi * t)) / 2


def _swa_alpha_linear(t: float) -> float:
    return t


class _Chain:
    """``ChainedScheduler``: every member's ``step()`` in turn; no state, no construction step."""

    def __init__(self, members: list[Any]):
        self.members = members

    def construct(self, g: _Group) -> None:
        pass

    def step(self, g: _Group, initial: bool = False) -> None:
        for member in self.members:  # the chain's initial mode does not reach its members
            member.step(g)

    def initial_step(self, g: _Group) -> None:
        self.step(g)

    def undo(self) -> None:
        for member in self.members:
            member.undo()


class _Sequence:
    """``SequentialLR``: its construction undoes its members' steps (one level of recursion of
    ``last_epoch -= 1`` per leaf) and steps the first; at a milestone ``_update_lr(0)``."""

    def __init__(self, members: list[Any], milestones: tuple[int, ...]):
        self.members, self.milestones = members, list(milestones)
        self.last_epoch = 0

    def construct(self, g: _Group) -> None:
        self.last_epoch = 0
        g.lr = g.keys["initial_lr"]
        for member in self.members:
            member.undo()
        self.members[bisect.bisect_right(self.milestones, 0)].initial_step(g)

    def step(self, g: _Group, initial: bool = False) -> None:
        self.last_epoch += 1
        index = bisect.bisect_right(self.milestones, self.last_epoch)
        member = self.members[index]
        if index > 0 and self.milestones[index - 1] == self.last_epoch:
            member.update_lr0(g)
        else:
            member.step(g)

    def initial_step(self, g: _Group) -> None:
        self.step(g)

    def undo(self) -> None:
        for member in self.members:
            member.undo()


def _build(spec: TorchScheduler, g: _Group, leaves: list[_Leaf]) -> Any:
    """The objects of ``spec``, constructed in order (members before their composite)."""
    if spec.kind in _COMPOSITES:
        members = [_build(member, g, leaves) for member in spec.members]
        node = _Chain(members) if spec.kind == "ChainedScheduler" else _Sequence(members, spec.milestones)
    else:
        node = _Leaf(spec)
        leaves.append(node)
    node.construct(g)
    return node


class _Replay:
    """The rates (and momenta) of counts ``0 .. n``, extended on demand; thread-safe."""

    def __init__(self, learning_rate: float, spec: TorchScheduler):
        self._lock = threading.Lock()
        self._group = _Group(learning_rate)
        leaves: list[_Leaf] = []
        self._root = _build(spec, self._group, leaves)
        self.cycles_momentum = any(leaf.has_momentum() for leaf in leaves)
        self._rates = [self._group.lr]
        self._momenta = [self._group.momentum]

    def upto(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            while len(self._rates) <= count:
                self._root.step(self._group)
                self._rates.append(self._group.lr)
                self._momenta.append(self._group.momentum)
            return (np.asarray(self._rates[: count + 1], np.float64),
                    np.asarray([np.nan if m is None else m for m in self._momenta[: count + 1]], np.float64))


def _replayed(replay: _Replay, num_steps: int, which: int) -> Schedule:
    table = replay.upto(num_steps)[which]

    def on_host(counts: np.ndarray, as_bits: bool) -> np.ndarray:
        counts = np.asarray(counts)
        values = replay.upto(int(max(num_steps, counts.max(initial=0))))[which][np.clip(counts, 0, None)]
        if as_bits:
            return np.atleast_1d(values.astype(np.float64)).view(np.uint32).reshape(*values.shape, 2)
        return values.astype(np.float32)

    def beyond(count: Array) -> Array:
        # The callback's thread does not share a jax.enable_x64 context, and there a float64
        # result would be converted to float32: under x64 the doubles travel as their bits.
        if jnp.asarray(0.0, dtype=float).dtype == jnp.float64:
            shape = jax.ShapeDtypeStruct((*count.shape, 2), jnp.uint32)
            bits = jax.pure_callback(functools.partial(on_host, as_bits=True), shape, count,
                                     vmap_method="expand_dims")
            return jax.lax.bitcast_convert_type(bits, jnp.float64)
        shape = jax.ShapeDtypeStruct(count.shape, jnp.float32)
        return jax.pure_callback(functools.partial(on_host, as_bits=False), shape, count,
                                 vmap_method="expand_dims")

    def scalar(count: Array) -> Array:
        count = _as_int(count)
        return jax.lax.cond(
            count <= num_steps,
            lambda c: _as_float(table)[jnp.clip(c, 0, num_steps)],
            beyond,
            count,
        )

    return _per_count(scalar)


def replay_torch_schedulers(
    learning_rate: float, scheduler: TorchScheduler, num_steps: int = 10_000
) -> CycleSchedules:
    r"""Any composition of PyTorch schedulers, stepped exactly as PyTorch steps it.

    .. math::
      (\mathrm{lr}_k, \mathrm{m}_k) = \text{group } \texttt{lr} \text{ (and momentum) after }
      k \text{ calls of } \texttt{scheduler.step()}

    Reproduces what PyTorch computes where no closed form does: ``CosineAnnealingLR`` (its
    recursive form, which multiplies whatever rate the other members left) or ``SWALR`` inside a
    ``ChainedScheduler``; ``SequentialLR`` / ``ChainedScheduler`` nested in one another
    (PyTorch's ``SequentialLR`` undoes one construction step of every leaf but then steps its
    first member, so a nested sequence or chain runs one step ahead, and its leaves see counts
    their own schedules never do); a ``MultiplicativeLR`` after the first position of a
    ``SequentialLR`` (it multiplies the previous member's last rate by ``lr_lambda(0)``); and the
    momentum of ``CyclicLR`` / ``OneCycleLR`` members of a ``SequentialLR`` (each sets it while
    active; the others leave it). The objects are constructed in the order PyTorch needs them
    (members in order, before their composite), then stepped in Python double precision with
    PyTorch's own operations, when built, for counts ``0 .. num_steps``: float64 agrees to the
    last bit. A later count continues the replay on the host (``jax.pure_callback``, extending
    the table once, so a long run costs one step each); pass the length of training as
    ``num_steps`` to keep the schedule on the device. ``OneCycleLR`` stepped past its
    ``total_steps`` (PyTorch raises) holds its last rate and momentum, as :func:`one_cycle_lr`.

    Args:
      learning_rate: the group's ``lr`` before any of the schedulers was built (the
        ``initial_lr`` the first one records, to which ``SequentialLR`` resets the rate).
      scheduler: the :class:`TorchScheduler` tree, one group's values. A ``ChainedScheduler``
        or ``SequentialLR`` after the first position of a ``SequentialLR`` is refused (PyTorch
        raises at its milestone).
      num_steps: counts tabulated when built (integer >= 0).

    Returns:
      :class:`CycleSchedules`; ``momentum`` is ``None`` unless a member cycles it.

    >>> chain = TorchScheduler("ChainedScheduler", members=(
    ...     TorchScheduler("LinearLR", {"start_factor": 0.5, "total_iters": 2}),
    ...     TorchScheduler("CosineAnnealingLR", {"T_max": 4, "eta_min": 0.1})))
    >>> replay = replay_torch_schedulers(1.0, chain, num_steps=8)
    >>> [round(float(replay.learning_rate(k)), 6) for k in range(6)]
    [0.5, 0.65481, 0.55286, 0.232639, 0.1, 0.231802]
    """
    learning_rate = _validation.check_learning_rate("learning_rate", learning_rate)
    _validation.check_static("learning_rate", learning_rate)
    _check_torch_scheduler(scheduler, "scheduler")
    num_steps = _validation.check_int("num_steps", num_steps, low=0)
    replay = _Replay(learning_rate, scheduler)
    rates = _replayed(replay, num_steps, 0)
    return CycleSchedules(rates, _replayed(replay, num_steps, 1) if replay.cycles_momentum else None)


# ------------------------------------------------------------------------------ the registry


# Every torch.optim.lr_scheduler class, by name, and its optax counterpart. LambdaLR and
# SequentialLR are those of schedules.classic; ReduceLROnPlateau is a loss-driven transform.
PYTORCH_SCHEDULERS: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {
        "LambdaLR": lambda_lr,
        "MultiplicativeLR": multiplicative_lr,
        "StepLR": step_lr,
        "MultiStepLR": multi_step_lr,
        "ConstantLR": constant_lr,
        "LinearLR": linear_lr,
        "ExponentialLR": exponential_lr,
        "SequentialLR": sequential_lr,
        "PolynomialLR": polynomial_lr,
        "CosineAnnealingLR": cosine_annealing_lr,
        "ChainedScheduler": chained_scheduler,
        "ReduceLROnPlateau": reduce_lr_on_plateau,
        "CyclicLR": cyclic_lr,
        "CosineAnnealingWarmRestarts": cosine_annealing_warm_restarts,
        "OneCycleLR": one_cycle_lr,
    }
)
