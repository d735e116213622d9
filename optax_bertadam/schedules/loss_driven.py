"""Loss-driven learning rates: PyTorch's ``ReduceLROnPlateau`` and transformers' ``GreedyLR``.

Their rate follows a metric passed to ``update(..., value=loss)`` rather than the update count,
so they are gradient transformations that scale the updates, not schedules. Each is a
:class:`LossDrivenRule` (``init()``, ``step(state, value)``) written for one group (0-d rates) or
several groups under one decision (1-d rates, what :func:`optax_bertadam.from_torch` builds), and
a transform for one group (:func:`reduce_lr_on_plateau`, :func:`greedy_lr`) around it. Each rule's
defaults are its transform's: the rule takes every argument explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import _validation
from optax_bertadam.schedules._common import as_float as _as_float

Array = Any


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
    mode: str,
    factor: float,
    patience: int,
    threshold: float,
    threshold_mode: str,
    cooldown: int,
    min_lr: float | list[float],
    eps: float,
) -> LossDrivenRule:
    """The :class:`LossDrivenRule` of PyTorch's ``ReduceLROnPlateau`` (see :func:`reduce_lr_on_plateau`).

    Every argument is given: the defaults are :func:`reduce_lr_on_plateau`'s, in one place.

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
    mode: str,
    factor: float,
    patience: int,
    threshold: float,
    threshold_mode: str,
    cooldown: int,
    warmup: int,
    min_lr: float | list[float],
    max_lr: float | list[float],
    eps: float,
    verbose: bool,
    smooth: bool,
    window_size: int,
    reset_start: int,
) -> LossDrivenRule:
    """The :class:`LossDrivenRule` of transformers' ``GreedyLR`` (see :func:`greedy_lr`).

    Every argument is given: the defaults are :func:`greedy_lr`'s, in one place.

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
