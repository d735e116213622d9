"""DeepSpeed's five learning-rate schedules (``deepspeed.runtime.lr_schedules``) as optax schedules.

DeepSpeed's engine steps its scheduler once per optimizer step, *after* ``optimizer.step()``,
and only when the step was applied (an fp16 overflow skips both). Each class starts at
``last_batch_iteration = -1`` and its constructor already writes the rate of the first update
into the optimizer, so update ``k`` (``k`` updates applied so far, optax's ``count``) runs at the
rate the class computes for ``last_batch_iteration = k - 1``. Update 0 is the constructor's rate,
which for three of them is not the formula at ``-1``:

====================  ======================================  ========================================
class                 update 0                                update ``k >= 1`` (``t = k - 1``)
====================  ======================================  ========================================
``WarmupLR``          ``warmup_min_lr``                       warmup on ``t``, then ``max``
``WarmupDecayLR``     ``warmup_min_lr``                       warmup on ``t``, then linear decay
``WarmupCosineLR``    **0** (whatever the optimizer's lr)     ``lr * ratio(t)``
``OneCycle``          ``cycle_min_lr``, ``cycle_min_mom``     the cycle on ``t + 1 = k``, then decay
``LRRangeTest``       ``min_lr``                              ``min_lr * (1 + rate * k / size)``
====================  ======================================  ========================================

Argument conventions: ``WarmupLR``, ``WarmupDecayLR``, ``OneCycle`` and ``LRRangeTest`` set the
rate themselves and ignore the optimizer's ``lr`` (their factories take no learning rate);
``WarmupCosineLR`` multiplies the optimizer's ``lr`` by a ratio (its factory takes
``learning_rate``, the optimizer's ``lr`` of the group). The other arguments have DeepSpeed's
names and defaults (``WarmupLR(warmup_max_lr=None)``, the optimizer's lr, is
``warmup_max_lr=<that lr>`` here). A per-group list of a DeepSpeed argument is one schedule per
group.

Branches (end of warmup, of the cycle, the clamp of the cosine, stairs) are decided on the
integer count; the formulas are computed in the default float dtype (float32, or float64 under
``jax.enable_x64(True)``). DeepSpeed silently replaces an unknown ``warmup_type`` by ``'log'``;
here it is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax.numpy as jnp

from optax_bertadam import _validation
from optax_bertadam.schedules._common import as_float as _as_float
from optax_bertadam.schedules.pytorch import CycleSchedules

Array = Any
Schedule = Callable[[Array], Array]

WARMUP_TYPES = ("log", "linear")


def _as_int(count: Array) -> Array:
    return jnp.asarray(count, dtype=int)


def _check_rate(name: str, value: Any) -> Any:
    return _validation.check_finite(name, value)


def _warmup_gamma(t: Array, warmup_num_steps: int, warmup_type: str) -> Array:
    """DeepSpeed's ``_get_gamma`` inside warmup (``0 <= t < W``): ``log(t + 1) / log(W)`` or
    ``t / W``, with ``1 / log(W)`` rounded in double precision as DeepSpeed stores it."""
    t = _as_float(jnp.maximum(t, 0))
    if warmup_type == "log":
        return _as_float(1.0 / math.log(warmup_num_steps)) * jnp.log(t + 1.0)
    return t / _as_float(float(warmup_num_steps))


def _warmup_arguments(warmup_num_steps: Any, warmup_type: Any) -> tuple[int, str]:
    warmup_num_steps = _validation.check_int("warmup_num_steps", warmup_num_steps, low=1)
    warmup_type = _validation.check_choice("warmup_type", warmup_type, WARMUP_TYPES)
    # DeepSpeed warms up over at least two steps (log(1) would divide by zero).
    return max(2, warmup_num_steps), warmup_type


def warmup_lr(
    warmup_min_lr: float = 0.0,
    warmup_max_lr: float = 0.001,
    warmup_num_steps: int = 1000,
    warmup_type: str = "log",
) -> Schedule:
    r"""DeepSpeed's ``WarmupLR``: warm up from ``warmup_min_lr`` to ``warmup_max_lr``, then hold.

    With :math:`W = \max(2, \text{warmup\_num\_steps})` and :math:`t = k - 1`:

    .. math::
      \mathrm{lr}_k = \text{min} + (\text{max} - \text{min})\,\gamma_t, \qquad
      \gamma_t = \begin{cases} 0 & k = 0 \\ \log(t + 1) / \log W \text{ (log) or } t / W
      \text{ (linear)} & t < W \\ 1 & \text{otherwise} \end{cases}

    Reproduces ``deepspeed.runtime.lr_schedules.WarmupLR(optimizer, warmup_min_lr,
    warmup_max_lr, warmup_num_steps, warmup_type)`` stepped after each ``optimizer.step()``. The
    optimizer's ``lr`` is ignored (DeepSpeed's ``warmup_max_lr=None`` means that ``lr``: pass it).

    Args:
      warmup_min_lr: the rate of the first two updates.
      warmup_max_lr: the rate after warmup.
      warmup_num_steps: warmup length, an integer ``>= 1`` (at least 2 are used).
      warmup_type: ``'log'`` or ``'linear'``.

    Returns:
      A schedule ``count -> learning rate``.

    Example:
      >>> from optax_bertadam.schedules import warmup_lr
      >>> rate = warmup_lr(0.0, 1.0, warmup_num_steps=4, warmup_type="linear")
      >>> [float(rate(k)) for k in range(7)]
      [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    return _warmup_schedule("warmup_lr", warmup_min_lr, warmup_max_lr, warmup_num_steps,
                            warmup_type, total_num_steps=None)


def warmup_decay_lr(
    total_num_steps: int,
    warmup_min_lr: float = 0.0,
    warmup_max_lr: float = 0.001,
    warmup_num_steps: int = 1000,
    warmup_type: str = "log",
) -> Schedule:
    r"""DeepSpeed's ``WarmupDecayLR``: :func:`warmup_lr`, then a linear decay to 0 at ``total_num_steps``.

    After warmup (:math:`t = k - 1 \ge W`, :math:`T` = ``total_num_steps``):

    .. math:: \gamma_t = \max\Big(0, \frac{T - t}{\max(1, T - W)}\Big)

    Reproduces ``deepspeed.runtime.lr_schedules.WarmupDecayLR(optimizer, total_num_steps,
    warmup_min_lr, warmup_max_lr, warmup_num_steps, warmup_type)``; the optimizer's ``lr`` is
    ignored. The rate of update ``k = T + 1`` is ``warmup_min_lr`` (:math:`\gamma = 0`).

    Args:
      total_num_steps: :math:`T`, an integer.
      warmup_min_lr: the rate of the first two updates and of the end.
      warmup_max_lr: the peak rate.
      warmup_num_steps: warmup length, an integer ``>= 1`` (at least 2 are used).
      warmup_type: ``'log'`` or ``'linear'``.

    Returns:
      A schedule ``count -> learning rate``.

    Example:
      >>> from optax_bertadam.schedules import warmup_decay_lr
      >>> rate = warmup_decay_lr(6, 0.0, 1.0, warmup_num_steps=2, warmup_type="linear")
      >>> [float(rate(k)) for k in range(9)]
      [0.0, 0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    total_num_steps = _validation.check_int("total_num_steps", total_num_steps)
    return _warmup_schedule("warmup_decay_lr", warmup_min_lr, warmup_max_lr, warmup_num_steps,
                            warmup_type, total_num_steps=total_num_steps)


def _warmup_schedule(
    name: str,
    warmup_min_lr: Any,
    warmup_max_lr: Any,
    warmup_num_steps: Any,
    warmup_type: Any,
    total_num_steps: int | None,
) -> Schedule:
    warmup_min_lr = _check_rate("warmup_min_lr", warmup_min_lr)
    warmup_max_lr = _check_rate("warmup_max_lr", warmup_max_lr)
    warmup, warmup_type = _warmup_arguments(warmup_num_steps, warmup_type)
    decay_length = None if total_num_steps is None else float(max(1, total_num_steps - warmup))

    def schedule(count: Array) -> Array:
        k = _as_int(count)
        t = k - 1
        gamma = _warmup_gamma(t, warmup, warmup_type)
        if decay_length is None:
            after = _as_float(1.0)
        else:
            after = jnp.maximum(_as_float(total_num_steps - t) / _as_float(decay_length), 0.0)
        gamma = jnp.where(t < 0, 0.0, jnp.where(t < warmup, gamma, after))
        low = _as_float(warmup_min_lr)
        return low + (_as_float(warmup_max_lr) - low) * gamma

    schedule.__name__ = name
    return schedule


def warmup_cosine_lr(
    learning_rate: float,
    total_num_steps: int,
    warmup_min_ratio: float = 0.0,
    warmup_num_steps: int = 1000,
    cos_min_ratio: float = 0.0001,
    warmup_type: str = "log",
) -> Schedule:
    r"""DeepSpeed's ``WarmupCosineLR``: the optimizer's ``lr`` times a warmup-then-cosine ratio.

    With :math:`W = \max(2, \text{warmup\_num\_steps})`, :math:`T` = ``total_num_steps``,
    :math:`t = k - 1`:

    .. math::
      \mathrm{lr}_k = \mathrm{lr}\cdot\begin{cases}
        0 & k = 0 \\
        r_0 + (1 - r_0)\,\gamma_t & t < W \quad (\gamma_t \text{ as in } \texttt{warmup\_lr}) \\
        \max\big(0, c + (1 - c)\,\tfrac12(1 + \cos \pi p)\big),\;
        p = \min\big(1, \tfrac{t - W + 1}{\max(1, T - W)}\big) & \text{otherwise}
      \end{cases}

    (:math:`r_0` = ``warmup_min_ratio``, :math:`c` = ``cos_min_ratio``). Reproduces
    ``deepspeed.runtime.lr_schedules.WarmupCosineLR(optimizer, total_num_steps,
    warmup_min_ratio, warmup_num_steps, cos_min_ratio, warmup_type)`` over an optimizer whose
    group has ``lr=learning_rate``. The first update runs at rate 0 (DeepSpeed's constructor
    writes ``get_lr()`` at ``last_batch_iteration=-1``, which is 0), not at ``r_0 * lr``.

    Args:
      learning_rate: the optimizer's ``lr`` of the group (the ratio multiplies it).
      total_num_steps: :math:`T`, an integer.
      warmup_min_ratio: :math:`r_0`, the ratio at the start of warmup.
      warmup_num_steps: warmup length, an integer ``>= 1`` (at least 2 are used).
      cos_min_ratio: :math:`c`, the ratio at and after ``T``.
      warmup_type: ``'log'`` or ``'linear'``.

    Returns:
      A schedule ``count -> learning rate``.

    Example:
      >>> from optax_bertadam.schedules import warmup_cosine_lr
      >>> rate = warmup_cosine_lr(1.0, 6, warmup_num_steps=2, cos_min_ratio=0.0,
      ...                         warmup_type="linear")
      >>> [round(float(rate(k)), 6) for k in range(8)]
      [0.0, 0.0, 0.5, 0.853553, 0.5, 0.146447, 0.0, 0.0]
    """
    learning_rate = _check_rate("learning_rate", learning_rate)
    total_num_steps = _validation.check_int("total_num_steps", total_num_steps)
    warmup_min_ratio = _check_rate("warmup_min_ratio", warmup_min_ratio)
    cos_min_ratio = _check_rate("cos_min_ratio", cos_min_ratio)
    warmup, warmup_type = _warmup_arguments(warmup_num_steps, warmup_type)
    decay_length = max(1, total_num_steps - warmup)

    def schedule(count: Array) -> Array:
        k = _as_int(count)
        t = k - 1
        low = _as_float(warmup_min_ratio)
        warming = low + _warmup_gamma(t, warmup, warmup_type) * (1.0 - low)
        # The clamp of the progress at 1 is decided on integers: p = min(t - W + 1, L) / L.
        progress = _as_float(jnp.clip(t - warmup + 1, 0, decay_length)) / _as_float(decay_length)
        floor = _as_float(cos_min_ratio)
        cosine = (1.0 + jnp.cos(_as_float(math.pi) * progress)) / 2.0
        decaying = jnp.maximum(floor + (1.0 - floor) * cosine, 0.0)
        ratio = jnp.where(t < 0, 0.0, jnp.where(t < warmup, warming, decaying))
        return _as_float(learning_rate) * ratio

    return schedule


def one_cycle(
    cycle_min_lr: float,
    cycle_max_lr: float,
    decay_lr_rate: float = 0.0,
    cycle_first_step_size: int = 2000,
    cycle_second_step_size: int | None = None,
    cycle_first_stair_count: int = 0,
    cycle_second_stair_count: int | None = None,
    decay_step_size: float = 0,
    cycle_momentum: bool = True,
    cycle_min_mom: float = 0.8,
    cycle_max_mom: float = 0.9,
    decay_mom_rate: float = 0.0,
) -> CycleSchedules:
    r"""DeepSpeed's ``OneCycle``: one triangular cycle of the rate (and momentum), then a decay.

    With :math:`F, S` the two half-cycle lengths, :math:`C = F + S`, and the cycle position
    :math:`i = k \bmod C` for updates :math:`1 \le k \le C`:

    .. math::
      s_k = \begin{cases} i / F & i \le F \\ (C - i) / S & \text{otherwise} \end{cases}
      \qquad (\text{stairs: } s_k = \lfloor s_k\,n \rfloor / n \text{ with } n \text{ the
      half's stair count} > 0)

    rate :math:`\text{min\_lr} + (\text{max\_lr} - \text{min\_lr})\,s_k`, momentum
    :math:`\text{max\_mom} - (\text{max\_mom} - \text{min\_mom})\,s_k`. After the cycle
    (:math:`k > C`, :math:`d = k - C`): rate :math:`\text{min\_lr} / (1 + \text{decay\_lr\_rate}
    \cdot d / \text{decay\_step\_size})`, momentum :math:`\text{max\_mom}\,(1 +
    \text{decay\_mom\_rate} \cdot d / \text{decay\_step\_size})` (DeepSpeed *multiplies*; each
    decay is off, holding min_lr / max_mom, when its rate or ``decay_step_size`` is 0). Update 0
    runs at ``cycle_min_lr`` with momentum ``cycle_min_mom`` (DeepSpeed's constructor), although
    the formula at :math:`k = 0` gives ``cycle_max_mom``.

    Reproduces ``deepspeed.runtime.lr_schedules.OneCycle(optimizer, ...)`` stepped after each
    ``optimizer.step()``; the optimizer's ``lr`` is ignored. DeepSpeed cycles the momentum only
    when the optimizer has ``betas`` (Adam, AdamW, Lamb: not ``SGD``, whose momentum it leaves
    alone), and then sets ``betas = (momentum, 0.99)``: the optimizer's ``betas[1]`` becomes
    0.99 from the first update (:func:`optax_bertadam.from_deepspeed` does that).

    Args:
      cycle_min_lr: the rate at the start and end of the cycle.
      cycle_max_lr: the rate at the peak.
      decay_lr_rate: decay rate of the rate after the cycle (0: hold ``cycle_min_lr``).
      cycle_first_step_size: :math:`F`, an integer ``>= 1``.
      cycle_second_step_size: :math:`S`, an integer ``>= 0``; ``None``: :math:`F`.
      cycle_first_stair_count: stairs of the rising half (0: continuous).
      cycle_second_stair_count: stairs of the falling half; ``None``: the first's.
      decay_step_size: the decay's interval (0: no decay).
      cycle_momentum: also return the momentum (``betas[0]``) schedule.
      cycle_min_mom: the momentum at the peak rate.
      cycle_max_mom: the momentum at ``cycle_min_lr``.
      decay_mom_rate: growth rate of the momentum after the cycle (0: hold ``cycle_max_mom``).

    Returns:
      :class:`~optax_bertadam.schedules.CycleSchedules` (``momentum`` is ``None`` when
      ``cycle_momentum=False``).

    Example:
      >>> from optax_bertadam.schedules import one_cycle
      >>> cycle = one_cycle(0.0, 1.0, cycle_first_step_size=2, cycle_min_mom=0.8, cycle_max_mom=0.9)
      >>> [float(cycle.learning_rate(k)) for k in range(7)]
      [0.0, 0.5, 1.0, 0.5, 0.0, 0.0, 0.0]
      >>> [round(float(cycle.momentum(k)), 6) for k in range(4)]
      [0.8, 0.85, 0.8, 0.85]
    """
    cycle_min_lr = _check_rate("cycle_min_lr", cycle_min_lr)
    cycle_max_lr = _check_rate("cycle_max_lr", cycle_max_lr)
    decay_lr_rate = _check_rate("decay_lr_rate", decay_lr_rate)
    first = _validation.check_int("cycle_first_step_size", cycle_first_step_size, low=1)
    second = first if cycle_second_step_size is None else _validation.check_int(
        "cycle_second_step_size", cycle_second_step_size, low=0)
    first_stairs = _validation.check_int("cycle_first_stair_count", cycle_first_stair_count, low=0)
    second_stairs = first_stairs if cycle_second_stair_count is None else _validation.check_int(
        "cycle_second_stair_count", cycle_second_stair_count, low=0)
    decay_step_size = _validation.check_range("decay_step_size", decay_step_size, low=0.0)
    if not isinstance(cycle_momentum, bool):
        raise TypeError(f"cycle_momentum={cycle_momentum!r} is invalid: expected True or False")
    cycle_min_mom = _check_rate("cycle_min_mom", cycle_min_mom)
    cycle_max_mom = _check_rate("cycle_max_mom", cycle_max_mom)
    decay_mom_rate = _check_rate("decay_mom_rate", decay_mom_rate)
    total = first + second
    no_decay = decay_step_size == 0
    # DeepSpeed's math.isclose(rate, 0): only an exact 0 (concrete) turns a decay off.
    lr_decays = not no_decay and not (_validation.is_concrete_scalar(decay_lr_rate)
                                      and decay_lr_rate == 0)
    mom_decays = not no_decay and not (_validation.is_concrete_scalar(decay_mom_rate)
                                       and decay_mom_rate == 0)

    def scale(k: Array) -> Array:
        position = k % total
        rising = position <= first
        if first_stairs or second_stairs:
            # DeepSpeed quantises from the integer offset: floor(i * n / F) / n.
            up_stairs = (position * first_stairs) // first if first_stairs else None
            down_stairs = (total - position) * second_stairs // max(second, 1) if second_stairs else None
        up = (_as_float(up_stairs) / first_stairs if first_stairs
              else _as_float(position) / _as_float(float(first)))
        if second == 0:
            return up
        down = (_as_float(down_stairs) / second_stairs if second_stairs
                else _as_float(total - position) / _as_float(float(second)))
        return jnp.where(rising, up, down)

    def decay_interval(k: Array) -> Array:
        return _as_float(k - total) / _as_float(decay_step_size if decay_step_size else 1.0)

    def learning_rate(count: Array) -> Array:
        k = _as_int(count)
        low, high = _as_float(cycle_min_lr), _as_float(cycle_max_lr)
        cycling = low + (high - low) * scale(k)
        decayed = low / (1.0 + _as_float(decay_lr_rate) * decay_interval(k)) if lr_decays else low
        return jnp.where(k <= total, cycling, decayed)

    def momentum(count: Array) -> Array:
        k = _as_int(count)
        low, high = _as_float(cycle_min_mom), _as_float(cycle_max_mom)
        cycling = high - (high - low) * scale(k)
        decayed = high * (1.0 + _as_float(decay_mom_rate) * decay_interval(k)) if mom_decays else high
        return jnp.where(k == 0, low, jnp.where(k <= total, cycling, decayed))

    return CycleSchedules(learning_rate, momentum if cycle_momentum else None)


def lr_range_test(
    lr_range_test_min_lr: float = 1e-3,
    lr_range_test_step_size: int = 2000,
    lr_range_test_step_rate: float = 1.0,
    lr_range_test_staircase: bool = False,
) -> Schedule:
    r"""DeepSpeed's ``LRRangeTest``: a rate growing linearly (or in stairs) with the update count.

    .. math::
      \mathrm{lr}_k = \text{min\_lr}\,(1 + \text{step\_rate}\cdot x_k), \qquad
      x_k = k / \text{step\_size} \;\text{ or, with staircase, }\; \lfloor k / \text{step\_size}
      \rfloor

    Reproduces ``deepspeed.runtime.lr_schedules.LRRangeTest(optimizer, lr_range_test_min_lr,
    lr_range_test_step_size, lr_range_test_step_rate, lr_range_test_staircase)`` stepped after
    each ``optimizer.step()`` (its ``last_batch_iteration + 1`` is ``k``); the optimizer's ``lr``
    is ignored.

    Args:
      lr_range_test_min_lr: the first rate.
      lr_range_test_step_size: updates per unit of growth, an integer ``>= 1``.
      lr_range_test_step_rate: growth per ``step_size`` updates, relative to ``min_lr``.
      lr_range_test_staircase: grow in stairs of ``step_size`` updates.

    Returns:
      A schedule ``count -> learning rate``.

    Example:
      >>> from optax_bertadam.schedules import lr_range_test
      >>> rate = lr_range_test(1.0, lr_range_test_step_size=2, lr_range_test_staircase=True)
      >>> [float(rate(k)) for k in range(5)]
      [1.0, 1.0, 2.0, 2.0, 3.0]
    """
    min_lr = _check_rate("lr_range_test_min_lr", lr_range_test_min_lr)
    step_size = _validation.check_int("lr_range_test_step_size", lr_range_test_step_size, low=1)
    step_rate = _check_rate("lr_range_test_step_rate", lr_range_test_step_rate)
    if not isinstance(lr_range_test_staircase, bool):
        raise TypeError(f"lr_range_test_staircase={lr_range_test_staircase!r} is invalid: "
                        "expected True or False")

    def schedule(count: Array) -> Array:
        k = _as_int(count)
        if lr_range_test_staircase:
            interval = _as_float(k // step_size)
        else:
            interval = _as_float(k) / _as_float(float(step_size))
        return _as_float(min_lr) * (1.0 + _as_float(step_rate) * interval)

    return schedule


#: DeepSpeed's scheduler class name -> the factory reproducing it.
DEEPSPEED_SCHEDULERS: Mapping[str, Callable[..., Any]] = MappingProxyType({
    "WarmupLR": warmup_lr,
    "WarmupDecayLR": warmup_decay_lr,
    "WarmupCosineLR": warmup_cosine_lr,
    "OneCycle": one_cycle,
    "LRRangeTest": lr_range_test,
})
