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

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_bertadam import _validation
from optax_bertadam.schedules._common import as_float as _as_float
from optax_bertadam.schedules.classic import lambda_lr, sequential_lr
from optax_bertadam.schedules.transformers import reduce_lr_on_plateau

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


def _check_learning_rate(name: str, value: Any) -> float:
    _validation.check_finite(name, value)
    return _validation.check_range(name, value, low=0.0)


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


def _check_jnp_function(name: str, function: Any, argument_dtype: Any = int) -> Callable:
    """Trace ``function`` once now, so that one that does not trace fails when built."""
    if not callable(function):
        raise TypeError(f"{name}={function!r} is invalid: expected a function of the update count")
    try:
        result = jax.eval_shape(
            function, jax.ShapeDtypeStruct((), jnp.asarray(0, dtype=argument_dtype).dtype)
        )
    except Exception as error:  # any failure to trace is the caller's function's fault
        raise TypeError(
            f"{name}={function!r} is invalid: expected a function written with jax.numpy "
            f"(jnp.where for branches, not `if`); tracing it failed with {type(error).__name__}: {error}"
        ) from error
    if getattr(result, "shape", None) != ():
        raise ValueError(
            f"{name}={function!r} is invalid: expected a function returning a scalar, got shape "
            f"{getattr(result, 'shape', result)!r}"
        )
    return function


@dataclasses.dataclass(frozen=True)
class ChainableSchedule:
    """A schedule ``count -> learning_rate * multiplier(count)`` of a multiplicative scheduler.

    PyTorch's ``StepLR``, ``MultiStepLR``, ``ConstantLR``, ``LinearLR``, ``ExponentialLR``,
    ``PolynomialLR`` and ``MultiplicativeLR`` only ever multiply the current rate, so several of
    them combine by multiplying their factors: :func:`chained_scheduler` needs the
    ``multiplier``. It is called like any optax schedule.

    Attributes:
      learning_rate: the optimizer's ``lr`` (PyTorch's ``initial_lr``).
      multiplier: the rate as a multiple of ``learning_rate``, a function of the count.
      scheduler: the PyTorch class it reproduces, e.g. ``"StepLR"``.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.step_lr(0.1, step_size=2, gamma=0.5)
      >>> schedule.scheduler, float(schedule.multiplier(2)), round(float(schedule(2)), 6)
      ('StepLR', 0.5, 0.05)
    """

    learning_rate: float
    multiplier: Callable[[Array], Array]
    scheduler: str

    def __call__(self, count: Array) -> Array:
        """The rate of update ``count``.

        Returns:
          ``learning_rate * multiplier(count)``, a 0-d array.
        """
        return self.learning_rate * self.multiplier(count)


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


@_validation.explains_torch_habits
def step_lr(learning_rate: float, step_size: int, gamma: float = 0.1) -> ChainableSchedule:
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
      A :class:`ChainableSchedule` (a pure, jittable function of the update count).

    >>> schedule = step_lr(0.1, step_size=2, gamma=0.5)
    >>> [round(float(schedule(k)), 6) for k in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    """
    learning_rate = _check_learning_rate("learning_rate", learning_rate)
    step_size = _validation.check_int("step_size", step_size, low=1)
    gamma = _check_gamma(gamma)

    def multiplier(count: Array) -> Array:
        return _power(gamma, _as_int(count) // step_size)

    return ChainableSchedule(learning_rate, multiplier, "StepLR")


@_validation.explains_torch_habits
def multi_step_lr(learning_rate: float, milestones: Sequence[int], gamma: float = 0.1) -> ChainableSchedule:
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
      A :class:`ChainableSchedule`.

    >>> schedule = multi_step_lr(1.0, milestones=[2, 4, 4], gamma=0.5)
    >>> [float(schedule(k)) for k in range(6)]
    [1.0, 1.0, 0.5, 0.5, 0.125, 0.125]
    """
    learning_rate = _check_learning_rate("learning_rate", learning_rate)
    try:
        milestones = list(milestones)
    except TypeError:
        raise TypeError(f"milestones={milestones!r} is invalid: expected a list of update counts") from None
    checked = sorted(
        _validation.check_int(f"milestones[{index}]", milestone, low=0)
        for index, milestone in enumerate(milestones)
    )
    gamma = _check_gamma(gamma)
    boundaries = np.asarray(checked, dtype=np.int64)

    def multiplier(count: Array) -> Array:
        passed = jnp.searchsorted(boundaries, _as_int(count), side="right")
        return _power(gamma, passed)

    return ChainableSchedule(learning_rate, multiplier, "MultiStepLR")


@_validation.explains_torch_habits
def constant_lr(learning_rate: float, factor: float = 1.0 / 3, total_iters: int = 5) -> ChainableSchedule:
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
      A :class:`ChainableSchedule`.

    >>> schedule = constant_lr(1.0, factor=0.5, total_iters=2)
    >>> [float(schedule(k)) for k in range(4)]
    [0.5, 0.5, 1.0, 1.0]
    """
    learning_rate = _check_learning_rate("learning_rate", learning_rate)
    factor = _validation.check_range("factor", factor, low=0.0, high=1.0, low_inclusive=False)
    total_iters = _validation.check_int("total_iters", total_iters, low=1)

    def multiplier(count: Array) -> Array:
        return jnp.where(_as_int(count) < total_iters, _as_float(factor), _as_float(1.0))

    return ChainableSchedule(learning_rate, multiplier, "ConstantLR")


@_validation.explains_torch_habits
def linear_lr(
    learning_rate: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
) -> ChainableSchedule:
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
      A :class:`ChainableSchedule`.

    >>> schedule = linear_lr(1.0, start_factor=0.25, end_factor=1.0, total_iters=3)
    >>> [float(schedule(k)) for k in range(5)]
    [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    learning_rate = _check_learning_rate("learning_rate", learning_rate)
    start_factor = _validation.check_range(
        "start_factor", start_factor, low=0.0, high=1.0, low_inclusive=False
    )
    end_factor = _validation.check_range("end_factor", end_factor, low=0.0, high=1.0)
    total_iters = _validation.check_int("total_iters", total_iters, low=1)

    def multiplier(count: Array) -> Array:
        done = _as_float(jnp.minimum(_as_int(count), total_iters))
        return start_factor + (end_factor - start_factor) * done / total_iters

    return ChainableSchedule(learning_rate, multiplier, "LinearLR")


@_validation.explains_torch_habits
def exponential_lr(learning_rate: float, gamma: float) -> ChainableSchedule:
    r"""Decay by ``gamma`` every update: ``torch.optim.lr_scheduler.ExponentialLR``.

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot \gamma^{k}

    Args:
      learning_rate: the optimizer's ``lr`` (>= 0).
      gamma: the factor per update (>= 0).

    Returns:
      A :class:`ChainableSchedule`.

    >>> schedule = exponential_lr(1.0, gamma=0.5)
    >>> [float(schedule(k)) for k in range(4)]
    [1.0, 0.5, 0.25, 0.125]
    """
    learning_rate = _check_learning_rate("learning_rate", learning_rate)
    gamma = _check_gamma(gamma)

    def multiplier(count: Array) -> Array:
        return _power(gamma, _as_int(count))

    return ChainableSchedule(learning_rate, multiplier, "ExponentialLR")


@_validation.explains_torch_habits
def polynomial_lr(learning_rate: float, total_iters: int = 5, power: float = 1.0) -> ChainableSchedule:
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
      A :class:`ChainableSchedule`.

    >>> schedule = polynomial_lr(1.0, total_iters=4, power=2.0)
    >>> [float(schedule(k)) for k in range(6)]
    [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    learning_rate = _check_learning_rate("learning_rate", learning_rate)
    total_iters = _validation.check_int("total_iters", total_iters, low=1)
    _validation.check_finite("power", power)
    power = _validation.check_range("power", power, low=0.0)

    def multiplier(count: Array) -> Array:
        remaining = _as_float(total_iters - jnp.minimum(_as_int(count), total_iters)) / total_iters
        return remaining**power

    return ChainableSchedule(learning_rate, multiplier, "PolynomialLR")


@_validation.explains_torch_habits
def multiplicative_lr(
    learning_rate: float, lr_lambda: Callable[[Array], Array], num_steps: int = 0
) -> ChainableSchedule:
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
      A :class:`ChainableSchedule`.

    >>> schedule = multiplicative_lr(1.0, lambda k: jnp.where(k < 3, 0.5, 1.0), num_steps=10)
    >>> [float(schedule(k)) for k in range(5)]
    [1.0, 0.5, 0.25, 0.25, 0.25]
    """
    learning_rate = _check_learning_rate("learning_rate", learning_rate)
    lr_lambda = _check_jnp_function("lr_lambda", lr_lambda)
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

    return ChainableSchedule(learning_rate, _per_count(multiplier), "MultiplicativeLR")


@_validation.explains_torch_habits
def chained_scheduler(schedulers: Sequence[ChainableSchedule]) -> ChainableSchedule:
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
    PyTorch mixes their value with one step of the other members' factors, which no schedule of
    the count alone reproduces.

    Args:
      schedulers: one or more :class:`ChainableSchedule`.

    Returns:
      A :class:`ChainableSchedule`.

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
        if not isinstance(member, ChainableSchedule):
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

    def multiplier(count: Array) -> Array:
        product = multipliers[0](count)
        for other in multipliers[1:]:
            product = product * other(count)
        return product

    return ChainableSchedule(learning_rate, multiplier, "ChainedScheduler")


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
    learning_rate = _check_learning_rate("learning_rate", learning_rate)
    t_max = _validation.check_int("T_max", T_max, low=1)
    eta_min = _check_learning_rate("eta_min", eta_min)
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
    learning_rate = _check_learning_rate("learning_rate", learning_rate)
    t_0 = _validation.check_int("T_0", T_0, low=1)
    t_mult = _validation.check_int("T_mult", T_mult, low=1)
    eta_min = _check_learning_rate("eta_min", eta_min)
    starts, lengths = [0], [t_0]
    while t_mult > 1 and starts[-1] + lengths[-1] < 2**62:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * t_mult)
    starts_table = np.asarray(starts, dtype=np.int64)
    lengths_table = np.asarray(lengths, dtype=np.int64)

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
            t_i = jnp.asarray(np.minimum(lengths_table, largest), count.dtype)[cycle]
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
    base_lr = _check_learning_rate("base_lr", base_lr)
    max_lr = _check_learning_rate("max_lr", max_lr)
    up = _validation.check_int("step_size_up", step_size_up, low=1)
    down = up if step_size_down is None else _validation.check_int("step_size_down", step_size_down, low=0)
    gamma = _check_gamma(gamma)
    if scale_fn is None:
        mode = _validation.check_choice("mode", mode, _CYCLIC_MODES)
        scale_mode = "iterations" if mode == "exp_range" else "cycle"
    else:
        scale_fn = _check_jnp_function("scale_fn", scale_fn)
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
    max_lr = _check_learning_rate("max_lr", max_lr)
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
